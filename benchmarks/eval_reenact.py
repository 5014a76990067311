"""Self-reenactment measurements of the warp engine (numbers only; no frames are written).

    python benchmarks/eval_reenact.py [--clips 3] [--frames 60] [--docs docs/edit-accuracy.md]

For each clip under $FACERIG_SHARED/data/videos (a few, at most ``--frames`` frames each): the first
frame is the source, the clip itself drives it (fit_video without photometric fit, relative
alignment, smoothing sigma 1, the warp engine renders every frame from the source). Per clip:

* landmark error: MediaPipe 478 landmarks detected on the output frame vs on the driving frame,
  median over landmarks, % of the driving frame's inter-ocular distance (outer eye corners);
* identity: dlib face-recognition distance of every 5th output frame to the source frame;
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

DEFAULT_CLIPS = ("mead/M030_front_happy_level3_001.mp4", "mead/W009_front_surprised_level3_001.mp4",
                 "liveportrait/d0.mp4", "liveportrait/d6.mp4", "misc/390.mp4")


def detect_all(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    from facerig.detect import FaceDetector

    det = FaceDetector()
    out: list[np.ndarray | None] = []
    for i, f in enumerate(frames):
        faces = det.detect(f, frame_index=i)
        out.append(faces[0].points[:, :2].astype(np.float64) if faces else None)
    return out


def eval_clip(path: Path, n_frames: int, model: Any) -> dict[str, Any]:
    import torch

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.eval.identity import dlib_embed
    from facerig.eval.video import landmark_jitter
    from facerig.fit.api import FitConfig, fit_video
    from facerig.io.video import read_video
    from facerig.rig.sequence import align_sequence, smooth_sequence

    torch.set_grad_enabled(False)
    frames, info = read_video(str(path), max_frames=n_frames)
    frames = [np.ascontiguousarray(f) for f in frames]
    src = frames[0]
    sp = _fit_one(src, model, "largest", "source frame")
    fr = fit_video(frames, model, FitConfig(photometric=False))
    seq = align_sequence(sp, fr.params, model, relative=True)
    if seq.batch_size > 1:
        seq = smooth_sequence(seq, 1.0)
    eng = get_engine("warp")
    t = time.perf_counter()
    outs = list(eng.reenact(src, sp, seq, model))
    render_s = time.perf_counter() - t
    lm_d = detect_all(frames)
    lm_o = detect_all(outs)
    errs = []
    for a, b in zip(lm_o, lm_d, strict=True):
        if a is None or b is None:
            continue
        iod = float(np.linalg.norm(b[33] - b[263]))
        errs.append(float(np.median(np.linalg.norm(a - b, axis=1)) / max(iod, 1e-6) * 100))
    j_d = landmark_jitter(landmarks=lm_d)["value"]
    j_o = landmark_jitter(landmarks=lm_o)["value"]
    sub = outs[::5]
    emb = dlib_embed([src] + sub)
    d = [float(np.linalg.norm(emb.embeddings[0] - e)) for e, ok in zip(emb.embeddings[1:], emb.found[1:], strict=True)
         if ok and emb.found[0]]
    return {"clip": f"{path.parent.name}/{path.name}", "frames": len(frames), "size": list(src.shape[:2]),
            "landmark_error_iod_pct": float(np.mean(errs)) if errs else float("nan"),
            "landmark_error_iod_pct_p90": float(np.percentile(errs, 90)) if errs else float("nan"),
            "frames_without_face_output": int(sum(x is None for x in lm_o)),
            "id_distance": float(np.mean(d)) if d else float("nan"), "id_distance_max": float(max(d)) if d else float("nan"),
            "jitter_output": j_o, "jitter_driving": j_d, "jitter_ratio": j_o / j_d if j_d else float("nan"),
            "render_fps": len(outs) / render_s}


def write_docs(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    def f(x: float, d: int = 2) -> str:
        return "n/a" if x is None or not np.isfinite(x) else f"{x:.{d}f}"

    L = ["", "## Reenactment (self-reenactment, `python benchmarks/eval_reenact.py`)", "",
         f"Measured {meta['date']}: the first frame of each clip is the source, the clip drives it (at most "
         f"{meta['frames']} frames). Landmark error: MediaPipe landmarks on the output vs on the driving frame, "
         "median over landmarks, % IOD, mean over frames. Identity: dlib distance of every 5th output frame to "
         "the source. Jitter: mean landmark acceleration / IOD (target: output < driving + 10 %). Render fps: "
         "engine only, 512-ish frames, shared 2-core CPU.", "",
         "| clip | frames | landmark error (% IOD) | p90 | ID dist. (mean / max) | jitter out | jitter driving | ratio | render fps |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['clip']} ({r['size'][1]}x{r['size'][0]}) | {r['frames']} | {f(r['landmark_error_iod_pct'])} | "
                 f"{f(r['landmark_error_iod_pct_p90'])} | {f(r['id_distance'])} / {f(r['id_distance_max'])} | "
                 f"{f(1000 * r['jitter_output'])}e-3 | {f(1000 * r['jitter_driving'])}e-3 | {f(r['jitter_ratio'])} | "
                 f"{f(r['render_fps'], 1)} |")
    if rows:
        def m(k: str) -> float:
            v = [r[k] for r in rows if np.isfinite(r[k])]
            return float(np.mean(v)) if v else float("nan")
        L.append(f"| **overall** | {sum(r['frames'] for r in rows)} | {f(m('landmark_error_iod_pct'))} | "
                 f"{f(m('landmark_error_iod_pct_p90'))} | {f(m('id_distance'))} / - | {f(1000 * m('jitter_output'))}e-3 | "
                 f"{f(1000 * m('jitter_driving'))}e-3 | {f(m('jitter_ratio'))} | {f(m('render_fps'), 1)} |")
    old = path.read_text() if path.exists() else "# Edit accuracy of the warp engine (issue #3)\n"
    marker = "\n## Reenactment"
    if marker in old:
        old = old[:old.index(marker)]
    path.write_text(old.rstrip("\n") + "\n" + "\n".join(L) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--out", default="/tmp/eval_reenact.json")
    ap.add_argument("--docs", default=None)
    args = ap.parse_args()
    from facerig.io.assets import shared_path
    from facerig.morphable import load_face_model

    root = shared_path("data", "videos")
    if root is None:
        raise SystemExit("no shared videos ($FACERIG_SHARED/data/videos)")
    model = load_face_model("builtin")
    rows = []
    for rel in DEFAULT_CLIPS:
        if len(rows) >= args.clips:
            break
        p = Path(root) / rel
        if not p.exists():
            continue
        try:
            r = eval_clip(p, args.frames, model)
        except Exception as e:  # noqa: BLE001 - a clip without a face: skip it
            print(f"skip {rel}: {type(e).__name__}: {e}", flush=True)
            continue
        print(json.dumps(r), flush=True)
        rows.append(r)
    meta = {"date": time.strftime("%Y-%m-%d"), "frames": args.frames}
    Path(args.out).write_text(json.dumps({"meta": meta, "clips": rows}, indent=1))
    if args.docs:
        write_docs(Path(args.docs), rows, meta)


if __name__ == "__main__":
    main()
