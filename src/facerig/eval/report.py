"""Reports of ``facerig evaluate`` / ``facerig benchmark``: ``report.json`` for machines,
``report.md`` and a self-contained ``report.html`` (inline CSS, plots and optional thumbnails as
base64 data URIs, no external URL) for people, plus the plots as PNG files in ``plots/``.

Every report names the estimator of every metric. Thumbnails (worst / best cases) are off by
default: they show the evaluated faces, which must not be published for third-party photos.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerig.eval.protocols import METRIC_INFO, get_protocol

__all__ = ["build_report", "write_reports", "render_markdown", "render_html", "REPORT_SCHEMA", "PRIMARY_METRIC"]

REPORT_SCHEMA = "facerig.eval.report/1"

#: protocol -> (metric used to rank best / worst samples, "lower" or "higher" is better)
PRIMARY_METRIC = {"edit": ("id_distance", "lower"), "text": ("aed", "lower"), "reenact": ("id_distance", "lower"),
                  "personalize": ("exp_rmse", "lower"), "evaluate": ("id_distance", "lower")}

_SAMPLE_KEYS = ("id", "engine", "edit_type", "case", "status", "failures", "metrics", "strength", "achieved",
                "reference", "source", "output", "target")


def _short_path(p: Any, base: Path | None) -> Any:
    """Paths in reports: relative to the report folder when inside it, else the last two parts
    (no absolute paths of the machine that ran it)."""
    if not p:
        return p
    q = Path(p)
    if base is not None:
        try:
            return q.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return "/".join(q.parts[-2:])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("facerig", "torch", "numpy", "dlib", "mediapipe"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", getattr(m, "DLIB_VERSION", "?")))
        except ImportError:
            out[mod] = "absent"
    return out


def build_report(protocol: str, summary: dict[str, Any], records: Sequence[dict[str, Any]], config: Any, *,
                 run_info: dict[str, Any] | None = None, estimators: dict[str, str] | None = None,
                 fit_estimator: str | None = None) -> dict[str, Any]:
    """The report as a JSON-able dict (schema ``facerig.eval.report/1``)."""
    from dataclasses import asdict

    from facerig.eval.runner import _clean, estimators_used

    est = dict(estimators or estimators_used(config))
    if fit_estimator:
        est["refit"] = est["refit"].replace(est["refit"].split(";")[0], fit_estimator)
    if protocol in ("evaluate", "external"):
        proto = None
        columns: tuple[str, ...] = ("n", "num_failed", "id_distance", "same_person_rate", "reid", "csim_dlib", "ssim", "psnr",
                   "ssim_bg", "psnr_bg", "l1", "lpips", "apd_deg", "aed", "ald", "au_accuracy", "clip_score",
                   "landmark_jitter", "warping_error", "identity_drift", "fid", "kid")
    else:
        proto = get_protocol(protocol)
        columns = proto.columns
    rows = summary.get("rows", [])
    # drop columns nothing computed (keep n / failures), and say why the weight-based ones are missing
    present = [c for c in columns if c in ("n", "num_failed") or any(r.get(c) is not None for r in rows)]
    not_computed = []
    for c in columns:
        if c in present:
            continue
        info = METRIC_INFO.get(c, (c, "", ""))
        why = est.get(info[2], "") if info[2] in ("lpips", "inception", "clip", "i3d") else \
            "not applicable to these samples (or nothing could be computed)"
        not_computed.append({"metric": c, "label": info[0], "reason": why})
    metrics = {c: {"label": METRIC_INFO.get(c, (c, "", ""))[0], "better": METRIC_INFO.get(c, (c, "", ""))[1] or None,
                   "estimator": est.get(METRIC_INFO.get(c, ("", "", ""))[2]) or None} for c in present}
    run = dict(run_info or {})
    data = run.get("data")
    if data:
        run["data"] = [_short_path(d, None) for d in data] if isinstance(data, list) else _short_path(data, None)
    if isinstance(run.get("personalization"), dict):  # no absolute paths of the machine that ran it
        run["personalization"] = {k: ({f: (_short_path(x, None) if f in ("personal_json", "album") else x)
                                       for f, x in h.items()} if isinstance(h, dict) else h)
                                  for k, h in run["personalization"].items()}
    unsupported = run.get("unsupported_engines") or []
    base = Path(run.pop("out")) if run.get("out") else None
    samples = [{k: (_short_path(r[k], base) if k in ("source", "output", "target") else r.get(k))
                for k in _SAMPLE_KEYS if k in r} for r in records]
    rep = {
        "schema": REPORT_SCHEMA,
        "protocol": {"name": protocol, "title": proto.title if proto else "Evaluation of given outputs",
                     "description": proto.description if proto else "(source, target/driver, output) triples",
                     "reference": proto.reference if proto else "", "notes": list(proto.notes) if proto else [],
                     "cases": [{"name": c.name, "edit_type": c.edit_type, "spec": c.spec} for c in proto.cases]
                     if proto else []},
        "columns": present,
        "metrics": metrics,
        "estimators": est,
        "table": rows,
        "cases": summary.get("cases", []),
        "fvd": summary.get("fvd"),
        "failures": summary.get("failures", {}),
        "num_samples": summary.get("num_samples", len(records)),
        "num_failed": summary.get("num_failed", 0),
        "num_sources": summary.get("num_sources"),
        "not_computed": not_computed,
        "unsupported_engines": [{"engine": e, "reason": (run.get("unsupported_reasons") or {}).get(e) or (
                                 f"the {e} engine does not support the {protocol} protocol "
                                 "(no personalisation: training-free)" if protocol == "personalize" else
                                 f"the {e} engine does not support the {protocol} protocol")} for e in unsupported],
        "config": asdict(config) if hasattr(config, "__dataclass_fields__") else dict(config or {}),
        "run": run,
        "versions": _versions(),
        "samples": samples,
        "plots": [],
    }
    return _clean(rep)


# ------------------------------------------------------------------------------------------
# formatting


def _fmt(v: Any, key: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or key in ("n", "num_failed"):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "–"
    if key.startswith("psnr") or key.endswith("_deg") or key in ("fid", "clip_score", "fvd"):
        return f"{f:.2f}"
    if key == "kid":
        return f"{f:.4f}"
    return f"{f:.3f}"


def _head(key: str, rep: dict[str, Any]) -> str:
    m = rep["metrics"].get(key, {})
    arrow = {"lower": " ↓", "higher": " ↑"}.get(m.get("better") or "", "")
    return f"{m.get('label', key)}{arrow}"


def _cell(row: dict[str, Any], key: str) -> str:
    s = _fmt(row.get(key), key)
    if row.get(f"{key}_std") is not None and key not in ("n", "num_failed", "reid", "same_person_rate"):
        s += f" ± {_fmt(row[f'{key}_std'], key)}"
    return s


def _table_rows(rep: dict[str, Any], rows: Sequence[dict[str, Any]], lead: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in rep["columns"] if any(r.get(c) is not None for r in rows) or c in ("n", "num_failed")]
    head = [*lead, *[_head(c, rep) for c in cols]]
    body = [[str(r.get(k, "")) for k in lead] + [_cell(r, c) for c in cols] for r in rows]
    return head, body


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(out)


def _used_estimators(rep: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, list[str]] = {}
    for c in rep["columns"]:
        eid = METRIC_INFO.get(c, ("", "", ""))[2]
        if eid:
            seen.setdefault(eid, []).append(rep["metrics"][c]["label"])
    if any(k.startswith(("ssim_bg", "psnr_bg")) for k in rep["columns"]):
        seen.setdefault("mask", ["face / background masks"])
    out = [(", ".join(labels), rep["estimators"].get(eid, "?")) for eid, labels in seen.items()]
    if rep["estimators"].get("size"):
        out.append(("image size", rep["estimators"]["size"]))
    return out


def _personalization_lines(rep: dict[str, Any]) -> list[str]:
    """One line per engine of the personalize protocol: how it was personalised."""
    out = []
    for eng, h in sorted(((rep.get("run") or {}).get("personalization") or {}).items()):
        if not isinstance(h, dict):
            continue
        bits = [f"{eng}: {h.get('mode', '?')}"]
        if h.get("personal_json"):
            bits.append(f"personal.json {_short_path(h['personal_json'], None)}")
        if h.get("num_photos") is not None:
            bits.append(f"album of {h['num_photos']} photos")
        if h.get("persons") is not None:
            bits.append("held-out photos of " + (", ".join(h["persons"]) or "nobody"))
        out.append("; ".join(bits))
    return out


def render_markdown(rep: dict[str, Any], plots: Sequence[str] = ()) -> str:
    p = rep["protocol"]
    L = [f"# facerig benchmark: {p['title']}", ""]
    L.append(f"Protocol `{p['name']}` — {p['description']}.")
    if p.get("reference"):
        L.append(f"Columns after {p['reference']}.")
    run = rep.get("run", {})
    eng = ", ".join(run.get("engines") or sorted({r.get('engine', '?') for r in rep['table']}))
    L += ["", f"Engines: {eng}. Samples: {rep['num_samples']} ({rep['num_failed']} with failures), "
              f"source photos/clips: {rep.get('num_sources') or '–'}. Mean ± std over samples; "
              "re-ID / same-person rate are fractions.", ""]
    for u in rep.get("unsupported_engines") or []:
        L += [f"**Not run:** {u['reason']}.", ""]
    for line in _personalization_lines(rep):
        L += [f"**Personalisation:** {line}.", ""]
    head, body = _table_rows(rep, rep["table"], ("engine", "edit_type"))
    L += ["## Results", "", _md_table(head, body), ""]
    if rep.get("fvd"):
        L += ["FVD: " + "; ".join(f"{r['engine']}/{r['edit_type']}: {_fmt(r['fvd'], 'fvd')} (n={r['n']})"
                                  for r in rep["fvd"]), ""]
    L += ["## Estimators", ""]
    L += [f"- **{labels}**: {est}" for labels, est in _used_estimators(rep)]
    for nc in rep.get("not_computed") or []:
        L.append(f"- **{nc['label']}**: {nc['reason']}")
    L.append("")
    if rep.get("cases"):
        head, body = _table_rows(rep, rep["cases"], ("engine", "case"))
        cols = [c for c in ("strength", "achieved") if any(r.get(c) is not None for r in rep["cases"])]
        if cols:
            head = [*head[:2], *cols, *head[2:]]
            body = [[*b[:2], *[_fmt(r.get(c)) for c in cols], *b[2:]] for b, r in zip(body, rep["cases"], strict=True)]
        L += ["## Per edit case", ""]
        if cols:
            L += ["strength = requested change from the source's fitted parameters in the units of the matching "
                  "error (pose: geodesic degrees; expression: mean |Δ coefficient|; light: mean |Δ SH|); "
                  "achieved = the same distance between the source's fit and the output's re-fit.", ""]
        L += [_md_table(head, body), ""]
    L += ["## Failures", ""]
    if rep.get("failures"):
        L.append("Samples with a failure are counted in the `failed` column and excluded from the means of "
                 "the metrics they prevent; they are never dropped.")
        L += ["", _md_table(["reason", "samples"], [[k, str(v)] for k, v in rep["failures"].items()]), ""]
    else:
        L += ["None.", ""]
    if plots:
        L += ["## Plots", ""] + [f"![{Path(pl).stem}]({pl})" for pl in plots] + [""]
    if p.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in p["notes"]] + [""]
    v = rep.get("versions", {})
    L += ["---", "", "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) + ".", ""]
    return "\n".join(L)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}tr:nth-child(even){background:#fafafa}
.note{color:#555;font-size:.9em}.fail{color:#a00}img.plot{max-width:100%;border:1px solid #eee}
.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{font-size:.75em;text-align:center;width:260px}
.thumb img{width:125px;height:125px;object-fit:cover}code{background:#f5f5f5;padding:0 3px}
"""


def _html_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def render_html(rep: dict[str, Any], plot_pngs: Sequence[tuple[str, bytes]] = (),
                thumbs: Sequence[dict[str, Any]] = ()) -> str:
    p = rep["protocol"]
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>facerig benchmark: "
             f"{e(p['title'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>facerig benchmark: {e(p['title'])}</h1>",
             f"<p>Protocol <code>{e(p['name'])}</code> — {e(p['description'])}."
             + (f" Columns after {e(p['reference'])}." if p.get("reference") else "") + "</p>"]
    run = rep.get("run", {})
    eng = ", ".join(run.get("engines") or sorted({r.get('engine', '?') for r in rep['table']}))
    parts.append(f"<p>Engines: {e(eng)}. Samples: {rep['num_samples']} ({rep['num_failed']} with failures), "
                 f"sources: {e(str(rep.get('num_sources') or '–'))}. Mean ± std over samples.</p>")
    for u in rep.get("unsupported_engines") or []:
        parts.append(f"<p class=\"fail\"><b>Not run:</b> {e(u['reason'])}.</p>")
    for line in _personalization_lines(rep):
        parts.append(f"<p><b>Personalisation:</b> {e(line)}.</p>")
    head, body = _table_rows(rep, rep["table"], ("engine", "edit_type"))
    parts += ["<h2>Results</h2>", _html_table(head, body)]
    parts.append("<h2>Estimators</h2><ul>" + "".join(f"<li><b>{e(lbl)}</b>: {e(est)}</li>"
                                                     for lbl, est in _used_estimators(rep))
                 + "".join(f"<li><b>{e(nc['label'])}</b>: {e(nc['reason'])}</li>"
                           for nc in rep.get("not_computed") or []) + "</ul>")
    if rep.get("cases"):
        head, body = _table_rows(rep, rep["cases"], ("engine", "case"))
        parts += ["<h2>Per edit case</h2>", _html_table(head, body)]
    parts.append("<h2>Failures</h2>")
    if rep.get("failures"):
        parts.append("<p class=\"note\">Counted in <i>failed</i>; excluded from the means they prevent, never dropped.</p>"
                     + _html_table(["reason", "samples"], [[k, str(v)] for k, v in rep["failures"].items()]))
    else:
        parts.append("<p>None.</p>")
    if plot_pngs:
        parts.append("<h2>Plots</h2>")
        for name, png in plot_pngs:
            parts.append(f"<p><img class=\"plot\" alt=\"{e(name)}\" src=\"{_data_uri(png, 'image/png')}\"></p>")
    if thumbs:
        parts.append("<h2>Worst and best cases</h2>")
        for group in ("worst", "best"):
            items = [t for t in thumbs if t["group"] == group]
            if not items:
                continue
            parts.append(f"<h3>{group}</h3><div class=\"thumbs\">")
            for t in items:
                parts.append(f"<div class=\"thumb\"><img alt=\"source\" src=\"{t['source']}\"><img alt=\"output\" "
                             f"src=\"{t['output']}\"><br>{e(t['id'])}<br>{e(t['label'])}</div>")
            parts.append("</div>")
    if p.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in p["notes"]) + "</ul>")
    v = rep.get("versions", {})
    parts.append("<hr><p class=\"note\">Versions: " + e(", ".join(f"{k} {x}" for k, x in v.items()))
                 + ". Machine-readable results: report.json.</p></body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------
# plots and thumbnails


def make_plots(rep: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(file name, PNG bytes): error vs edit strength, identity-distance histogram."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = []
    samples = [s for s in rep.get("samples", []) if s.get("status") is not None]
    engines = sorted({s.get("engine", "?") for s in samples})
    colors = {eng: plt.cm.tab10(i % 10) for i, eng in enumerate(engines)}
    pairs = {"pose": ("apd_deg", "requested pose change (geodesic deg)", "APD (deg)"),
             "expression": ("aed", "requested expression change (mean |Δ coeff|)", "AED"),
             "text": ("aed", "requested expression change (mean |Δ coeff|)", "AED"),
             "light": ("ald", "requested light change (mean |Δ SH|)", "ALD")}
    types = [t for t in pairs if any(s.get("edit_type") == t and (s.get("strength") or {}).get("value") is not None
                                     and (s.get("metrics") or {}).get(pairs[t][0]) is not None for s in samples)]
    if types:
        fig, axes = plt.subplots(1, len(types), figsize=(4.2 * len(types), 3.4), squeeze=False)
        for ax, t in zip(axes[0], types, strict=True):
            key, xl, yl = pairs[t]
            for eng in engines:
                pts = [(s["strength"]["value"], s["metrics"][key]) for s in samples
                       if s.get("engine") == eng and s.get("edit_type") == t and (s.get("strength") or {}).get("value")
                       is not None and (s.get("metrics") or {}).get(key) is not None]
                if pts:
                    x, y = np.asarray(pts).T
                    ax.scatter(x, y, s=14, alpha=0.7, color=colors[eng], label=eng)
                    if len(x) >= 3 and np.ptp(x) > 0:
                        c = np.polyfit(x, y, 1)
                        xs = np.linspace(x.min(), x.max(), 10)
                        ax.plot(xs, np.polyval(c, xs), color=colors[eng], lw=1)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.set_title(f"{t}: error vs edit strength", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        out.append(("error_vs_strength.png", _png(fig)))
        plt.close(fig)
    ids = [(s.get("edit_type", "?"), s["metrics"]["id_distance"]) for s in samples
           if (s.get("metrics") or {}).get("id_distance") is not None]
    if ids:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        ets = sorted({t for t, _ in ids})
        vals = [[v for t, v in ids if t == et] for et in ets]
        hi = max(0.7, max(v for _, v in ids) * 1.05)
        # the ignore below: matplotlib's stub types bins as a Sequence[float]; an array works (and is documented)
        ax.hist(vals, bins=np.linspace(0, hi, 25), stacked=True, label=ets, alpha=0.85)  # type: ignore[arg-type]
        ax.axvline(0.6, color="k", ls="--", lw=1, label="same-person threshold 0.6")
        ax.set_xlabel("ID distance to the source (dlib L2)", fontsize=8)
        ax.set_ylabel("samples", fontsize=8)
        ax.set_title("identity distance", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(("id_distance_hist.png", _png(fig)))
        plt.close(fig)
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def _thumb_uri(path: str | None, side: int = 160) -> str:
    import cv2

    from facerig.io.image import load_image

    if not path:
        return ""
    if Path(path).suffix.lower() in (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"):
        from facerig.io.video import read_video

        img = read_video(path, max_frames=1)[0][0]
    else:
        img = load_image(path)
    h, w = img.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return _data_uri(buf.tobytes(), "image/jpeg")


def make_thumbnails(rep: dict[str, Any], records: Sequence[dict[str, Any]], k: int = 4) -> list[dict[str, Any]]:
    """Worst (failures first) and best samples by the protocol's primary metric, as data URIs."""
    key, better = PRIMARY_METRIC.get(rep["protocol"]["name"], ("id_distance", "lower"))
    ranked = [s for s in records if (s.get("metrics") or {}).get(key) is not None]
    ranked.sort(key=lambda s: s["metrics"][key], reverse=better == "higher")
    best, worst = ranked[:k], ranked[::-1][:k]
    failed = [s for s in records if s.get("status") != "ok" and s.get("output") and Path(s["output"]).is_file()][:k]
    out = []
    for group, items in (("worst", failed + [w for w in worst if w not in failed]), ("best", best)):
        for s in items[:k]:
            label = f"{key} = {_fmt(s['metrics'].get(key), key)}" if s.get("metrics", {}).get(key) is not None else \
                "; ".join(s.get("failures") or [])
            out.append({"group": group, "id": s["id"], "label": label, "source": _thumb_uri(s.get("source")),
                        "output": _thumb_uri(s.get("output"))})
    return out


def write_reports(rep: dict[str, Any], records: Sequence[dict[str, Any]], out: str | Path, *, thumbnails: bool = False,
                  formats: Sequence[str] = ("json", "md", "html")) -> dict[str, Path]:
    """Write report.json / report.md / report.html and plots/*.png into ``out``."""
    od = Path(out)
    od.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    plots = make_plots(rep)
    if plots:
        (od / "plots").mkdir(exist_ok=True)
        for name, png in plots:
            (od / "plots" / name).write_bytes(png)
    rep["plots"] = [f"plots/{n}" for n, _ in plots]
    rep["thumbnails"] = bool(thumbnails)
    if "json" in formats:
        written["json"] = od / "report.json"
        written["json"].write_text(json.dumps(rep, indent=1, allow_nan=False) + "\n")
    if "md" in formats:
        written["md"] = od / "report.md"
        written["md"].write_text(render_markdown(rep, rep["plots"]))
    if "html" in formats:
        th = make_thumbnails(rep, records) if thumbnails else []
        written["html"] = od / "report.html"
        written["html"].write_text(render_html(rep, plots, th))
    return written
