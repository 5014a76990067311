"""How far each expression preset moves the face in the OUTPUT picture (detected landmarks).

    python benchmarks/eval_presets.py [--limit 8] [--presets smile,raise_brows] [--intensity 1.0]
                                      [--text "a person who is raising brow"] [--sheet /tmp/mouth/presets.png]

Photos as in ``benchmarks/eval_edits.py`` (package photos, then the shared portraits round-robin).
For every photo the warp engine renders each preset; MediaPipe landmarks are detected on the
source and on the output (the face nearest the source face) and their motion is expressed in % of
the source's inter-ocular distance (IOD, outer eye corners 33/263), relative to the eyes' own motion
(so a re-detection jitter of the whole face does not count):

* ``brow``: mean lift of the 20 brow landmarks (+ up);
* ``inner``: lift of the inner brow ends (107/336, 55/285) minus the outer ones (46/276, 70/300)
  (+ oblique, as in sadness);
* ``gap``: change of the inner brow ends' horizontal distance (- drawn together, as in a frown);
* ``corner_up`` / ``corner_out``: lip corners (61/291) up (+) and outwards (+);
* ``open``: inner-lip opening 13-14 change; ``cheek``: cheek landmarks (205/425, 50/280) lift.

Numbers only, unless ``--sheet`` names a PNG (outside the repository: real people) to which a
contact sheet (source + every preset, cropped to the face) is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

PRESETS = ("smile", "angry", "sad", "surprised", "raise_brows", "frown_brows", "open_mouth", "pucker", "fear",
           "disgust")
BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
EYES = (33, 133, 263, 362, 159, 145, 386, 374)
COLUMNS = ("brow", "inner", "gap", "corner_up", "corner_out", "open", "cheek")


def motions(src: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Landmark motions (% IOD) between two (468+, 2) detections of one face."""
    iod = float(np.linalg.norm(src[33] - src[263]))
    shift = (out[list(EYES)] - src[list(EYES)]).mean(0)
    d = (out - src - shift) / iod * 100.0
    centre_x = float(src[[33, 263], 0].mean())

    def lift(idx: tuple[int, ...]) -> float:
        return float(-d[list(idx), 1].mean())

    out_x = np.sign(src[[61, 291], 0] - centre_x)
    return {
        "brow": lift(BROWS),
        "inner": lift((107, 336, 55, 285)) - lift((46, 276, 70, 300)),
        "gap": float((abs(out[336, 0] - out[107, 0]) - abs(src[336, 0] - src[107, 0])) / iod * 100.0),
        "corner_up": lift((61, 291)),
        "corner_out": float((d[[61, 291], 0] * out_x).mean()),
        "open": float((np.linalg.norm(out[14] - out[13]) - np.linalg.norm(src[14] - src[13])) / iod * 100.0),
        "cheek": lift((205, 425, 50, 280)),
    }


def detect_near(image: np.ndarray, centre: np.ndarray) -> np.ndarray | None:
    from facerig.fit.api import _default_detector

    faces = _default_detector().detect(image)
    if not faces:
        return None
    pts = [np.asarray(f.points)[:, :2] for f in faces]
    return min(pts, key=lambda p: float(np.linalg.norm(p.mean(0) - centre)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--intensity", type=float, default=1.0)
    ap.add_argument("--text", action="append", default=[], help="also render these texts (facerig.rig.text)")
    ap.add_argument("--sheet", default=None, help="contact sheet PNG (keep it outside the repository)")
    ap.add_argument("--tile", type=int, default=160)
    ap.add_argument("--out", default="/tmp/eval_presets.json")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from eval_edits import load, photo_list

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.fit.api import project_landmarks_to_frame
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    model = load_face_model("builtin")
    eng = get_engine("warp")
    edits: list[tuple[str, Any]] = [(p, {"preset": p, "intensity": args.intensity})
                                    for p in args.presets.split(",") if p]
    for t in args.text:
        from facerig.rig.text import text_to_preset

        name, inten = text_to_preset(t)[:2]
        edits.append((f"text:{t}", {"preset": name, "intensity": inten}))
    rows: dict[str, list[dict[str, float]]] = {lab: [] for lab, _ in edits}
    tiles: list[np.ndarray] = []
    n = 0
    for name, src in photo_list(4 * args.limit):
        if n >= args.limit:
            break
        img = load(src, args.max_side)
        try:
            params = _fit_one(img, model, "largest", name)
        except Exception as e:  # noqa: BLE001 - no usable face: next photo
            print(f"skip {name}: {type(e).__name__}", flush=True)
            continue
        pts = np.asarray(project_landmarks_to_frame(model, params)[0])[:, :2]
        det_s = detect_near(img, pts.mean(0))
        if det_s is None:
            continue
        n += 1
        state = eng.prepare(img, params, model)
        c, s = (pts.min(0) + pts.max(0)) / 2, float((pts.max(0) - pts.min(0)).max()) * 0.75
        x0, y0 = int(max(0, c[0] - s)), int(max(0, c[1] - s))
        x1, y1 = int(min(img.shape[1], c[0] + s)), int(min(img.shape[0], c[1] + s))
        row = [(img[y0:y1, x0:x1], name.split("/")[-1][:16])]
        line = [name.split("/")[-1][:18]]
        for lab, kw in edits:
            out = eng.render_frame(state, EditSpec(**kw).apply(params, model))
            det_o = detect_near(out, pts.mean(0))
            if det_o is not None:
                m = motions(det_s, det_o)
                rows[lab].append(m)
                line.append(f"{lab[:12]}: brow {m['brow']:+.1f} corner {m['corner_up']:+.1f}/{m['corner_out']:+.1f} "
                            f"open {m['open']:+.1f}")
            row.append((out[y0:y1, x0:x1], lab[:20]))
        print(" | ".join(line), flush=True)
        tiles += [np.ascontiguousarray(t) for t, _ in row] if args.sheet is None else _labelled(row)
    print(f"\n{n} photos, intensity {args.intensity}; landmark motion in % IOD (mean over photos)")
    print(f"{'edit':36s}" + "".join(f"{c:>11s}" for c in COLUMNS))
    summary = {}
    for lab, ms in rows.items():
        if not ms:
            continue
        mean = {c: float(np.mean([m[c] for m in ms])) for c in COLUMNS}
        summary[lab] = {**mean, "n": len(ms), "brow_min": float(min(m["brow"] for m in ms))}
        print(f"{lab[:36]:36s}" + "".join(f"{mean[c]:+11.1f}" for c in COLUMNS))
    Path(args.out).write_text(json.dumps(summary, indent=1))
    if args.sheet:
        from facerig.io.image import save_image
        from facerig.viz import grid

        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        save_image(args.sheet, grid(tiles, cols=len(edits) + 1, height=args.tile))
        print(f"wrote {args.sheet} - real people: keep it out of the repository")


def _labelled(row: list[tuple[np.ndarray, str]]) -> list[np.ndarray]:
    from facerig.viz import label

    return [label(np.ascontiguousarray(t), lab) for t, lab in row]


if __name__ == "__main__":
    main()
