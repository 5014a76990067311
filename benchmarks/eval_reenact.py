"""Reenactment measurements of the warp engine (numbers only; no frames are written).

    python benchmarks/eval_reenact.py [--clips 3] [--frames 60] [--modes relative,absolute,first]
                                      [--docs docs/edit-accuracy.md] [--from-json OUT.json]

For each clip under $FACERIG_SHARED/data/videos (a few, at most ``--frames`` frames each) the clip
drives three sources: its own first frame (**self**-reenactment), a shared portrait and the first
frame of ANOTHER clip (**cross**-identity), in each motion mode (``relative``: deltas against the
automatically chosen most neutral driving frame, the mouth opening = the driver's plus the source's
excess over the driver's reach, its 95th percentile: the default; ``absolute``; ``neutral-delta``: relative without that mouth rule;
``first``: plain deltas against the driver's FIRST frame, the behaviour before issue 10, as a
baseline). fit_video without
photometric fit, smoothing sigma 1, the warp engine renders every frame from the source and gets
the driving frames and params. Per pair and mode:

* mouth r: Pearson correlation, over frames, of the inner-lip opening (MediaPipe landmarks 13-14)
  / inter-ocular distance (outer eye corners 33-263) detected on the output vs on the driver
  (target >= 0.8); range ratio: output opening range / driver's (range = 95th - 5th percentile
  over frames, robust to a stray detection; target ~1);
* landmark error (self only): median landmark distance output vs driving frame, % IOD;
* identity: dlib face-recognition distance of every 5th output frame to the source;
* jitter: mean landmark acceleration / IOD (facerig.eval.video.landmark_jitter) of the output and
  of the driving clip (target: output jitter < driving jitter + 10 %);
* render speed (engine only, after fitting).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CLIPS = ("mead/M030_front_happy_level3_001.mp4", "liveportrait/d0.mp4",  # M030 starts mid-sentence
                 "mead/W009_front_surprised_level3_001.mp4", "liveportrait/d6.mp4", "misc/390.mp4")
#: cross-identity sources (portraits under $FACERIG_SHARED/data/portraits), used in turn
PORTRAITS = ("pexels-unsplash/pexels-andrea-piacquadio-733872.jpg", "human/person-vlado.jpg",
             "pexels-unsplash/pexels-daniel-xavier-1239291.jpg", "human/person-celeste.jpg")
MODES = {"relative": {"motion": "relative"}, "absolute": {"motion": "absolute"},
         "neutral-delta": {"motion": "relative", "follow_mouth": False},
         "first": {"motion": "relative", "ref_frame": 0, "follow_mouth": False}}


def detect_all(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    from facerig.detect import FaceDetector

    det = FaceDetector()
    out: list[np.ndarray | None] = []
    for i, f in enumerate(frames):
        faces = det.detect(f, frame_index=i)
        out.append(faces[0].points[:, :2].astype(np.float64) if faces else None)
    return out


def mouth_opening(lms: list[np.ndarray | None]) -> np.ndarray:
    """Inner-lip opening / IOD per frame (NaN where no face was detected)."""
    out = np.full(len(lms), np.nan)
    for i, p in enumerate(lms):
        if p is not None:
            out[i] = np.linalg.norm(p[13] - p[14]) / max(float(np.linalg.norm(p[33] - p[263])), 1e-6)
    return out


def mouth_follow(out_open: np.ndarray, drv_open: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(out_open) & np.isfinite(drv_open)
    a, b = out_open[ok], drv_open[ok]

    def rng(x: np.ndarray) -> float:
        return float(np.percentile(x, 95) - np.percentile(x, 5)) if len(x) else float("nan")

    r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 1e-9 and b.std() > 1e-9 else float("nan")
    return {"mouth_r": r, "mouth_range_out": rng(a), "mouth_range_driver": rng(b),
            "range_ratio": rng(a) / rng(b) if len(b) and rng(b) > 1e-9 else float("nan")}


def read_frames(path: Path, n_frames: int) -> list[np.ndarray]:
    from facerig.io.video import read_video

    frames, _ = read_video(str(path), max_frames=n_frames)
    return [np.ascontiguousarray(f) for f in frames]


def eval_driver(path: Path, n_frames: int, model: Any, sources: list[tuple[str, str, np.ndarray]],
                modes: list[str]) -> list[dict[str, Any]]:
    import torch

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.eval.identity import dlib_embed
    from facerig.eval.video import landmark_jitter
    from facerig.fit.api import FitConfig, fit_video
    from facerig.rig.sequence import align_sequence, smooth_sequence

    torch.set_grad_enabled(False)
    frames = read_frames(path, n_frames)
    fr = fit_video(frames, model, FitConfig(photometric=False))
    lm_d = detect_all(frames)
    drv_open = mouth_opening(lm_d)
    j_d = landmark_jitter(landmarks=lm_d)["value"]
    clip = f"{path.parent.name}/{path.name}"
    rows = []
    eng = get_engine("warp")
    for kind, name, src in sources:
        try:
            sp = _fit_one(src, model, "largest", "source")
        except Exception as e:  # noqa: BLE001 - a source without a usable face: skip it
            print(f"skip source {name}: {type(e).__name__}: {e}", flush=True)
            continue
        emb0 = None
        for mode in modes:
            seq = align_sequence(sp, fr.params, model, anchor=getattr(eng, "pose_anchor", "face"), **MODES[mode])
            if seq.batch_size > 1:
                seq = smooth_sequence(seq, 1.0)
            t = time.perf_counter()
            outs = list(eng.reenact(src, sp, seq, model, driving_frames=frames, driving_params=fr.params))
            render_s = time.perf_counter() - t
            lm_o = detect_all(outs)
            row: dict[str, Any] = {"clip": clip, "pair": kind, "source": name, "mode": mode,
                                   "ref_frame": seq.meta["aligned"]["ref_frame"],
                                   "mouth_follow": seq.meta["aligned"]["mouth_follow"],
                                   "frames": len(frames), "size": list(src.shape[:2])}
            row.update(mouth_follow(mouth_opening(lm_o), drv_open))
            errs = []
            if kind == "self":
                for a, b in zip(lm_o, lm_d, strict=True):
                    if a is None or b is None:
                        continue
                    iod = float(np.linalg.norm(b[33] - b[263]))
                    errs.append(float(np.median(np.linalg.norm(a - b, axis=1)) / max(iod, 1e-6) * 100))
            row["landmark_error_iod_pct"] = float(np.mean(errs)) if errs else float("nan")
            j_o = landmark_jitter(landmarks=lm_o)["value"]
            if emb0 is None:
                emb0 = dlib_embed([src])
            emb = dlib_embed(outs[::5])
            d = [float(np.linalg.norm(emb0.embeddings[0] - e)) for e, ok in zip(emb.embeddings, emb.found, strict=True)
                 if ok and emb0.found[0]]
            row.update({"frames_without_face_output": int(sum(x is None for x in lm_o)),
                        "id_distance": float(np.mean(d)) if d else float("nan"),
                        "jitter_output": j_o, "jitter_driving": j_d,
                        "jitter_ratio": j_o / j_d if j_d else float("nan"), "render_fps": len(outs) / render_s})
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _f(x: Any, d: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per mode x pair kind: mean mouth r, share of pairs with r >= 0.8, mean range ratio, identity, jitter."""
    L = ["| mode | pairs | mouth r (mean / min) | pairs r >= 0.8 | range ratio (mean / min) | landmark err. self (% IOD) "
         "| ID dist. | jitter ratio |", "|---|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for kind in ("self", "cross", "all"):
            rs = [r for r in rows if r["mode"] == mode and (kind == "all" or r["pair"] == kind)]
            if not rs:
                continue

            def col(k: str, rs: list[dict[str, Any]] = rs) -> np.ndarray:
                v = np.array([r[k] for r in rs], dtype=float)
                return v[np.isfinite(v)]

            r_ = col("mouth_r")
            rr = col("range_ratio")
            le = col("landmark_error_iod_pct")
            L.append(f"| {mode} | {kind} ({len(rs)}) | {_f(r_.mean() if len(r_) else np.nan)} / "
                     f"{_f(r_.min() if len(r_) else np.nan)} | {int((r_ >= 0.8).sum())}/{len(rs)} | "
                     f"{_f(rr.mean() if len(rr) else np.nan)} / {_f(rr.min() if len(rr) else np.nan)} | "
                     f"{_f(le.mean() if len(le) else np.nan)} | {_f(col('id_distance').mean())} | "
                     f"{_f(col('jitter_ratio').mean())} |")
    return L


def table(rows: list[dict[str, Any]]) -> list[str]:
    L = ["| driver | pair | source | mode (ref) | mouth r | range out / driver (ratio) | landmark err. (% IOD) "
         "| ID dist. | jitter ratio | render fps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = f" ({r['ref_frame']})" if r["ref_frame"] is not None else ""
        L.append(f"| {r['clip']} | {r['pair']} | {r['source']} | {r['mode']}{ref} | {_f(r['mouth_r'])} | "
                 f"{_f(r['mouth_range_out'], 3)} / {_f(r['mouth_range_driver'], 3)} ({_f(r['range_ratio'])}) | "
                 f"{_f(r['landmark_error_iod_pct'])} | {_f(r['id_distance'])} | {_f(r['jitter_ratio'])} | "
                 f"{_f(r['render_fps'], 1)} |")
    return L


def write_docs(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    L = ["", "## Reenactment (`python benchmarks/eval_reenact.py`)", "",
         f"Measured {meta['date']} with `{meta['command']}`: each driving clip (at most {meta['frames']} frames) "
         "drives its own first frame (self) and, cross-identity, a shared portrait and the first frame of "
         "another clip, in each motion mode: `relative` (default: deltas against the most neutral driving "
         "frame, the number in brackets; the mouth opening is the driver's own plus what the source opens "
         "beyond the driver's reach, its 95th percentile), `absolute` (the driver's expression and head rotation), `neutral-delta` (relative without "
         "that mouth rule), `first` (plain deltas against the driver's FIRST frame: the behaviour before "
         "issue 10, for comparison). Mouth r: Pearson correlation over "
         "frames of the inner-lip opening / IOD detected (MediaPipe) on the output vs on the driver (target "
         ">= 0.8); range ratio: output opening range / driver's (95th - 5th percentile). Landmark error "
         "(self only): MediaPipe landmarks on the output vs the driving frame, median, % IOD. Identity: dlib "
         "distance of every 5th output frame to the source. Jitter ratio: output / driving mean landmark "
         "acceleration. Render fps: engine only, shared 2-core CPU.", ""]
    L += summary(rows) + ["", "Per pair:", ""] + table(rows)
    old = path.read_text() if path.exists() else "# Edit accuracy of the warp engine (issue #3)\n"
    marker = "\n## Reenactment"
    tail = ""
    if marker in old:
        head, rest = old[:old.index(marker)], old[old.index(marker) + 1:]
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
        old = head
    path.write_text(old.rstrip("\n") + "\n" + "\n".join(L) + "\n" + tail)


def main() -> None:
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--modes", default="relative,absolute,neutral-delta,first", help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--no-cross", action="store_true", help="self-reenactment only")
    ap.add_argument("--out", default="/tmp/eval_reenact.json")
    ap.add_argument("--docs", default=None)
    ap.add_argument("--from-json", default=None, help="no measuring: print / write --docs from an earlier --out")
    args = ap.parse_args()
    if args.from_json:
        d = json.loads(Path(args.from_json).read_text())
        print("\n".join(summary(d["rows"])))
        if args.docs:
            write_docs(Path(args.docs), d["rows"], d["meta"])
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"--modes: unknown {bad}; expected {', '.join(MODES)}")
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model

    root = shared_path("data", "videos")
    if root is None:
        raise SystemExit("no shared videos ($FACERIG_SHARED/data/videos)")
    pdir = shared_path("data", "portraits")
    portraits = [Path(pdir) / p for p in PORTRAITS if pdir is not None and (Path(pdir) / p).exists()]
    model = load_face_model("builtin")
    clips = [Path(root) / rel for rel in DEFAULT_CLIPS if (Path(root) / rel).exists()][: args.clips]
    rows: list[dict[str, Any]] = []
    for k, p in enumerate(clips):
        srcs: list[tuple[str, str, np.ndarray]] = [("self", "first frame", read_frames(p, 1)[0])]
        if not args.no_cross:
            if portraits:
                q = portraits[k % len(portraits)]
                srcs.append(("cross", f"{q.parent.name}/{q.name}", load_image(q)))
            if len(clips) > 1:
                o = clips[(k + 1) % len(clips)]
                srcs.append(("cross", f"{o.parent.name}/{o.name} frame 0", read_frames(o, 1)[0]))
        try:
            rows += eval_driver(p, args.frames, model, srcs, modes)
        except Exception as e:  # noqa: BLE001 - a clip without a face: skip it
            print(f"skip {p.name}: {type(e).__name__}: {e}", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "frames": args.frames,
            "command": "python benchmarks/eval_reenact.py " + " ".join(sys.argv[1:])}
    print("\n".join(summary(rows)))
    print("\n".join(table(rows)))
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.docs:
        write_docs(Path(args.docs), rows, meta)


if __name__ == "__main__":
    main()
