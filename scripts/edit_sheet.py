"""Issue-3 eye check: a contact sheet of the warp engine's edits on real portraits.

    .venv/bin/python scripts/edit_sheet.py [--photos 6] [--engine warp] [--out /tmp/facerig_edit_sheet.png]

One row per photo (the package photos first, then $FACERIG_SHARED/data/portraits, as
benchmarks/eval_edits.py picks them): the source, every expression preset, yaw -20/+20 and four light
presets, each a crop around the face. The sheet shows real people: it is written OUTSIDE the
repository by default and must not be committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PRESETS = ("smile", "angry", "sad", "surprised", "close_eyes", "raise_brows", "frown_brows", "open_mouth", "pucker")
EDITS = [(p, {"preset": p}) for p in PRESETS] + [("yaw -20", {"yaw": -20}), ("yaw +20", {"yaw": 20})] + [
    (f"light {x}", {"light": x}) for x in ("left", "right", "top", "soft")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--engine", default="warp")
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--out", default="/tmp/facerig_edit_sheet.png")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import torch
    from eval_edits import load, photo_list

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.fit.api import project_landmarks_to_frame
    from facerig.io.image import save_image
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec
    from facerig.viz import grid, label

    torch.set_grad_enabled(False)
    model = load_face_model("builtin")
    eng = get_engine(args.engine)
    tiles, rows = [], 0
    for name, src in photo_list(4 * args.photos):
        if rows >= args.photos:
            break
        img = load(src, 768)
        try:
            params = _fit_one(img, model, "largest", name)
        except Exception as e:  # noqa: BLE001 - no usable face: next photo
            print(f"skip {name}: {type(e).__name__}")
            continue
        state = eng.prepare(img, params, model)
        pts = np.asarray(project_landmarks_to_frame(model, params)[0])[:, :2]
        c, s = (pts.min(0) + pts.max(0)) / 2, float((pts.max(0) - pts.min(0)).max())
        x0, y0 = int(max(0, c[0] - s)), int(max(0, c[1] - s))
        x1, y1 = int(min(img.shape[1], c[0] + s)), int(min(img.shape[0], c[1] + s))
        row = [label(np.ascontiguousarray(img[y0:y1, x0:x1]), name.split("/")[-1][:18])]
        for lab, kw in EDITS:
            if "yaw" in kw:
                kw = {**kw, "pose_anchor": eng.pose_anchor}
            out = eng.render_frame(state, EditSpec(**kw).apply(params, model))
            row.append(label(np.ascontiguousarray(out[y0:y1, x0:x1]), lab))
        tiles += row
        rows += 1
        print(name, flush=True)
    sheet = grid(tiles, cols=len(EDITS) + 1, height=args.tile)
    save_image(args.out, sheet)
    print(f"wrote {args.out} ({rows} photos x {len(EDITS) + 1} tiles) - real people: keep it out of the repository")


if __name__ == "__main__":
    main()
