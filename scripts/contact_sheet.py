"""Contact sheet of a face model's expression shapes rendered with facerig's own renderer.

Usage: .venv/bin/python scripts/contact_sheet.py [--model builtin] [--out docs/images/builtin_expressions_rendered.png]
Each tile: the shape at 1.0 (identity 0), three-quarter view, one directional light; region colours as albedo.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--out", default="docs/images/builtin_expressions_rendered.png")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--yaw", type=float, default=20.0)
    args = ap.parse_args()

    from facerig.io.image import save_image
    from facerig.morphable import load_face_model
    from facerig.render.buffers import render_buffers
    from facerig.render.shading import directional_light_sh
    from facerig.rotations import ypr_to_axis_angle
    from facerig.types import FaceParams
    from facerig.viz import grid, label

    model = load_face_model(args.model)
    names = ["neutral", *model.expression_names]
    n = len(names)
    exp = torch.zeros(n, model.n_expression)
    for i in range(1, n):
        exp[i, i - 1] = 1.0
    light = directional_light_sh(-30.0, 30.0, intensity=1.0, ambient=0.45)
    span = float((model.mean[:, 1].max() - model.mean[:, 1].min()).item())
    params = FaceParams(
        model=model.name,
        identity=torch.zeros(n, model.n_identity),
        expression=exp,
        expression_names=model.expression_names,
        rotation=ypr_to_axis_angle(torch.tensor([[args.yaw, 5.0, 0.0]]).expand(n, -1)),
        camera=torch.tensor([[1.6 / span, 0.0, 0.0]]).expand(n, -1).clone(),
        light=light[None].expand(n, -1, -1).clone(),
    )
    with torch.no_grad():
        buf = render_buffers(model, params, size=args.size)
    tiles = []
    for i, name in enumerate(names):
        img = buf.render[i].clamp(0, 1) * buf.mask[i] + (1 - buf.mask[i])
        tiles.append(label((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8), name))
    sheet = grid(tiles, cols=10, height=args.size)
    save_image(args.out, sheet)
    print(f"wrote {args.out} ({n} shapes)")


if __name__ == "__main__":
    main()
