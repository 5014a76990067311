"""Renderer speed: visibility (numba, torch) and all buffers, ms per image.

    python benchmarks/bench_render.py [--reps 7] [--threads N]

Uses the builtin face model (``--mesh auto``) when it loads, else a latitude/longitude sphere of
496 vertices / 988 triangles (about the builtin topology's size); ``--mesh sphere`` forces the sphere. Prints the best and the
median wall-clock time over ``--reps`` runs after a warm-up (numba compiles on first use; cached).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from facerig.render import camera as cam
from facerig.render.buffers import render_buffers, screen_vertices
from facerig.render.primitives import SphereFaceModel
from facerig.render.raster import numba_available, visibility
from facerig.render.shading import directional_light_sh
from facerig.types import FaceParams


def load_model(which: str = "auto") -> tuple[torch.nn.Module, str]:
    if which in ("auto", "builtin"):
        try:
            from facerig.morphable import load_face_model

            model = load_face_model("builtin")
            return model, f"builtin ({model.n_vertices} vertices, {model.faces.shape[0]} triangles)"
        except Exception as e:  # noqa: BLE001 - any failure falls back to the sphere
            if which == "builtin":
                raise
            print(f"(builtin model unavailable: {type(e).__name__}: {e})")
    model = SphereFaceModel()
    return model, f"sphere ({model.n_vertices} vertices, {model.faces.shape[0]} triangles)"


def make_params(model: torch.nn.Module, b: int) -> FaceParams:
    names = tuple(getattr(model, "expression_names", ())) or tuple(f"e{i}" for i in range(model.n_expression))
    extent = float(model.mean[:, :2].abs().max())
    return FaceParams(
        model=model.name,
        identity=torch.zeros(b, model.n_identity),
        expression=torch.zeros(b, model.n_expression),
        expression_names=names,
        rotation=torch.tensor([[0.1, 0.3, 0.0]]).repeat(b, 1),
        camera=torch.tensor([[0.85 / extent, 0.0, 0.0]]).repeat(b, 1),
        light=directional_light_sh(30, 20, 1.0, 0.3)[None].repeat(b, 1, 1),
    )


def timeit(fn, reps: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1000, statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--mesh", choices=["auto", "builtin", "sphere"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch/numba threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        if numba_available():
            import numba

            numba.set_num_threads(args.threads)
    model, desc = load_model(args.mesh)
    print(
        f"mesh: {desc}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"numba: {'yes' if numba_available() else 'no'}"
    )
    print(f"{'what':<34}{'size':>6}{'batch':>7}{'best ms/img':>13}{'median ms/img':>15}")
    backends = (["numba"] if numba_available() else []) + ["torch"]
    for size in (256, 512):
        for b in (1, 8):
            params = make_params(model, b)
            with torch.no_grad():
                verts = model(params.identity, params.expression, params.jaw_pose)
                world = cam.pose_vertices(verts, params.rotation)
                screen, _ = screen_vertices(world, params, size)
            faces = model.faces
            for be in backends:
                reps = args.reps if be == "numba" else max(2, args.reps // 2)
                best, med = timeit(
                    lambda be=be, s=screen, n=size, fc=faces: visibility(s, fc, n, n, be), reps
                )
                print(f"{'visibility ' + be:<34}{size:>6}{b:>7}{best / b:>13.2f}{med / b:>15.2f}")
            with torch.no_grad():
                best, med = timeit(lambda p=params, n=size: render_buffers(model, p, n), args.reps)
            print(f"{'all buffers (auto, no grad)':<34}{size:>6}{b:>7}{best / b:>13.2f}{med / b:>15.2f}")
            if b == 1:
                p = params.replace(
                    light=params.light.clone().requires_grad_(), camera=params.camera.clone().requires_grad_()
                )

                def fwd_bwd(p=p, n=size):
                    rb = render_buffers(model, p, n)
                    (rb.render.sum() + rb.normal.sum() + rb.depth.sum()).backward()

                best, med = timeit(fwd_bwd, max(3, args.reps // 2))
                print(f"{'all buffers + backward':<34}{size:>6}{b:>7}{best / b:>13.2f}{med / b:>15.2f}")


if __name__ == "__main__":
    main()
