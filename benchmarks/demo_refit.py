"""Issue-5 demo: re-fitting accuracy of edits made by a trained DiffusionRig model, next to the warp
engine on the same frames, plus (optional) sample grids. Images go to ``--images`` (outside the
repository: they show real people); the numbers go to ``--out`` (JSON) and, as a Markdown table,
to stdout.

    python benchmarks/demo_refit.py --weights RUN2/final/pipeline --frames F1.png [F2.png ...] \
        [--steps 20] [--out /tmp/dr_demo/refit.json] [--images /tmp/dr_demo/edits] \
        [--grid-shards SHARDS --grid-n 8]

Per frame and edit (re-estimator: facerig's own fit, MediaPipe landmarks + photometric, on the
edited frame; the same protocol as benchmarks/eval_edits.py):

* ``none`` (target = the source's own params: a reconstruction through the engine);
* expression presets ``smile``, ``open_mouth``: AED over the coefficients the preset sets
  (|requested - re-fitted|, ARKit units 0..1), and over all coefficients;
* ``yaw-10``, ``yaw+10``: |re-fitted yaw - requested absolute yaw| (deg) and the re-fitted change
  relative to the source's fit;
* ``light left``: RMSE of the 27 SH coefficients after dividing each light by its mean frontal
  shading (albedo/light scale ambiguity);
* for every edit also the pose error (mean |d yaw|,|d pitch|,|d roll| vs the request, deg), the AED
  over all coefficients and the normalised light RMSE, so unintended changes show up as well.

``unedited`` columns: the same error of the unedited source's fit against the request (what an
engine that returns its input unchanged would score).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

EDITS = [("none", {}), ("smile", {"preset": "smile"}), ("open_mouth", {"preset": "open_mouth"}),
         ("yaw-10", {"yaw": -10}), ("yaw+10", {"yaw": 10}), ("light left", {"light": "left"})]


def errors(target: Any, est: Any, src: Any, label: str, spec: dict[str, Any], names: list[str]) -> dict[str, Any]:
    from eval_edits import norm_light, ypr

    from facerig.rig.presets import preset_recipe

    req = target.expression[0].double().numpy()
    got = est.expression[0].double().numpy()
    srcx = src.expression[0].double().numpy()
    t, e, s = ypr(target), ypr(est), ypr(src)
    row: dict[str, Any] = {
        "pose_err_deg": float(np.abs(t - e).mean()),
        "aed_all": float(np.abs(req - got).mean()),
        "light_rmse": float(np.sqrt(((norm_light(target.light) - norm_light(est.light)) ** 2).mean())),
        "pose_err_deg_unedited": float(np.abs(t - s).mean()),
        "aed_all_unedited": float(np.abs(req - srcx).mean()),
        "light_rmse_unedited": float(np.sqrt(((norm_light(target.light) - norm_light(src.light)) ** 2).mean())),
    }
    if "preset" in spec:
        idx = [names.index(n) for n in preset_recipe(spec["preset"]) if n in names]
        row["aed_preset"] = float(np.abs(req[idx] - got[idx]).mean())
        row["aed_preset_unedited"] = float(np.abs(req[idx] - srcx[idx]).mean())
    if "yaw" in spec:
        row["yaw_err_deg"] = float(abs(e[0] - t[0]))
        row["yaw_err_deg_unedited"] = float(abs(s[0] - t[0]))
        row["yaw_requested"] = float(t[0] - s[0])
    return row


def evaluate(frames: list[Path], engines: dict[str, Any], model: Any, images: Path | None) -> list[dict[str, Any]]:
    from facerig.edit import _fit_one
    from facerig.io.image import load_image, save_image
    from facerig.rig import EditSpec

    names = list(model.expression_names)
    rows = []
    for f in frames:
        img = load_image(f)
        src = _fit_one(img, model, "largest", f.name)
        # the source's own re-fit is the reference for "unedited" (same estimator on the same frame)
        for ename, eng in engines.items():
            t0 = time.perf_counter()
            state = eng.prepare(img, src, model)
            outs = []
            for label, spec in EDITS:
                target = EditSpec(**spec).apply(src, model) if spec else src
                t1 = time.perf_counter()
                out = eng.render_frame(state, target)
                dt = time.perf_counter() - t1
                outs.append(out)
                row = {"frame": f.name, "engine": ename, "edit": label, "render_s": dt}
                try:
                    est = _fit_one(out, model, "largest", f"{f.name} {ename} {label}")
                    row.update(errors(target, est, src, label, spec, names))
                except Exception as ex:  # noqa: BLE001 - counted as a failed re-fit
                    row["refit_failed"] = type(ex).__name__
                rows.append(row)
            if images is not None:
                images.mkdir(parents=True, exist_ok=True)
                strip = np.concatenate([img] + outs, 1)
                save_image(images / f"{f.stem}_{ename}.png", strip)
            print(f"{f.name} {ename}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = ["pose_err_deg", "aed_all", "light_rmse", "aed_preset", "yaw_err_deg", "render_s"]
    keys += [k + "_unedited" for k in keys[:5]]
    for r in rows:
        out.setdefault(r["engine"], {}).setdefault(r["edit"], []).append(r)
    s: dict[str, Any] = {}
    for eng, d in out.items():
        s[eng] = {}
        for edit, rs in d.items():
            m = {}
            for k in keys:
                v = [r[k] for r in rs if k in r and r[k] is not None and np.isfinite(r[k])]
                m[k] = float(np.mean(v)) if v else math.nan
            m["n"] = len(rs)
            m["refit_failed"] = sum("refit_failed" in r for r in rs)
            s[eng][edit] = m
    return s


def table(s: dict[str, Any]) -> str:
    def f(x: float, d: int = 2) -> str:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"

    L = ["| engine | edit | target error (unedited) | pose err. deg (unedited) | AED all (unedited) | "
         "light RMSE (unedited) | re-fit failed / n |", "|---|---|---|---|---|---|---|"]
    for eng, d in s.items():
        for edit, m in d.items():
            if edit in ("smile", "open_mouth"):
                tgt = f"AED preset {f(m['aed_preset'], 3)} ({f(m['aed_preset_unedited'], 3)})"
            elif edit.startswith("yaw"):
                tgt = f"yaw {f(m['yaw_err_deg'], 1)} deg ({f(m['yaw_err_deg_unedited'], 1)})"
            elif edit.startswith("light"):
                tgt = f"SH RMSE {f(m['light_rmse'], 3)} ({f(m['light_rmse_unedited'], 3)})"
            else:
                tgt = "-"
            L.append(f"| {eng} | {edit} | {tgt} | {f(m['pose_err_deg'], 1)} ({f(m['pose_err_deg_unedited'], 1)}) | "
                     f"{f(m['aed_all'], 3)} ({f(m['aed_all_unedited'], 3)}) | {f(m['light_rmse'], 3)} "
                     f"({f(m['light_rmse_unedited'], 3)}) | {m['refit_failed']} / {m['n']} |")
    return "\n".join(L)


def sample_grid(weights: str, shards: str, n: int, path: Path, steps: int, seed: int = 0) -> None:
    """Rows: aligned image | its rendered buffer (shading) | DDIM sample from noise with the
    image's buffers and global code (a 'reconstruction' through the model)."""
    import torch

    from facerig.engines.diffusionrig.engine import find_pipeline_dir
    from facerig.engines.diffusionrig.pipeline import DiffusionRigPipeline
    from facerig.io.image import save_image
    from facerig.train.data import ShardDataset

    pipe = DiffusionRigPipeline.from_pretrained(find_pipeline_dir(weights))
    ds = ShardDataset(shards, size=pipe.image_size)
    sel = np.linspace(0, len(ds) - 1, n).round().astype(int)
    items = [ds[int(i)] for i in sel]
    img = torch.stack([it["image"] for it in items])
    cond = torch.stack([it["cond"] for it in items])
    with torch.no_grad():
        code = pipe.encode((img + 1) / 2)
        out = pipe(cond, global_code=code, noise=pipe.fixed_noise(seed, n), num_inference_steps=steps,
                   output_type="pt")
    rend = cond[:, 0:3].clamp(0, 1)
    rows = torch.cat([(img + 1) / 2, rend, out.clamp(0, 1)], 3)  # (n, 3, S, 3S)
    grid = torch.cat(list(rows), 1).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(path, (grid * 255).round().astype(np.uint8))


def plot_losses(runs: list[str], path: Path) -> dict[str, Any]:
    """Loss curves of the trainer's ``metrics.csv`` (``step,name,value``) of each run, stage 2
    continuing the step axis after stage 1; a small PNG."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=90)
    offset, stats = 0, {}
    for k, run in enumerate(runs):
        rows = [r for r in csv.DictReader(open(Path(run) / "metrics.csv")) if r["name"] == "loss"]
        st = np.array([int(r["step"]) for r in rows]) + offset
        v = np.array([float(r["value"]) for r in rows])
        label = f"stage {k + 1}" if len(runs) > 1 else "loss"
        ax.plot(st, v, lw=0.8, alpha=0.45, color=f"C{k}")
        w = min(10, len(v))
        if w > 1:
            sm = np.convolve(v, np.ones(w) / w, mode="valid")
            ax.plot(st[w - 1:], sm, lw=1.6, color=f"C{k}", label=f"{label} ({w}-point mean)")
        stats[run] = {"first": float(v[0]), "last": float(v[-1]), "last10_mean": float(v[-10:].mean()),
                      "min": float(v.min()), "steps": int(st[-1] - offset)}
        offset = int(st[-1])
    ax.set_xlabel("step (stage 2 continues after stage 1)")
    ax.set_ylabel("P2-weighted eps-MSE")
    ax.set_title("DiffusionRig CPU demo: training loss (logged every 10 steps)", fontsize=9)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--frames", nargs="+", type=Path, default=[])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("/tmp/dr_demo/refit.json"))
    ap.add_argument("--images", type=Path, default=Path("/tmp/dr_demo/edits"))
    ap.add_argument("--no-warp", action="store_true")
    ap.add_argument("--grid-shards", nargs="*", default=[])
    ap.add_argument("--grid-n", type=int, default=8)
    ap.add_argument("--plot-runs", nargs="*", default=[], help="run folders with metrics.csv (stage 1, stage 2)")
    ap.add_argument("--plot-out", type=Path, default=Path("docs/images/diffusionrig_demo_loss.png"))
    a = ap.parse_args()
    if a.plot_runs:
        print(json.dumps(plot_losses(a.plot_runs, a.plot_out), indent=1))
        return

    from facerig.engines import get_engine
    from facerig.morphable import load_face_model

    for sh in a.grid_shards:
        t0 = time.perf_counter()
        p = a.images / f"samples_{Path(sh).name}.png"
        sample_grid(a.weights, sh, a.grid_n, p, a.steps)
        print(f"grid {p}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if not a.frames:
        return
    model = load_face_model("builtin")
    engines = {"diffusionrig": get_engine("diffusionrig", weights=a.weights, steps=a.steps, seed=0)}
    if not a.no_warp:
        engines["warp"] = get_engine("warp")
    t0 = time.perf_counter()
    rows = evaluate(a.frames, engines, model, a.images)
    s = summarise(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"weights": a.weights, "frames": [str(f) for f in a.frames], "steps": a.steps,
                                 "seconds": time.perf_counter() - t0, "summary": s, "rows": rows}, indent=1))
    print(table(s))


if __name__ == "__main__":
    main()
