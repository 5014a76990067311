"""Speed of the dual-mapper generators' differentiable render: forward and forward+backward per call.

Prints, for the warp generator (:class:`facerig.engines.dualmapper.adapters.warp.WarpRigGenerator`)
at each ``--sizes`` side, the set-up time and the median of ``--repeat`` forward and forward+backward
(gradients w.r.t. w and psi) calls at batch ``--batch``; with ``--diffusionrig``, the same for the
DiffusionRig generator on a TINY random model (32 px, ``--steps`` DDIM steps, checkpointing on/off)
as a lower bound of the pipeline's own cost. Uses the public-domain astronaut photo (skimage) unless
``--photo`` is given. Threads: torch's default unless ``--threads``.

    python benchmarks/bench_dualmapper_warp.py [--sizes 128 256] [--batch 1] [--repeat 10] [--diffusionrig]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (numba compile, allocator)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _timings(gen, batch: int, repeat: int) -> tuple[float, float]:
    w0, psi0 = gen.initial()
    w = w0.expand(batch, -1, -1).clone()
    psi = psi0.expand(batch, -1).clone()
    psi[:, gen.psi_names.index("jawOpen")] = 0.4

    def fwd():
        with torch.no_grad():
            gen.render(w, psi)

    def fwd_bwd():
        wg, pg = w.clone().requires_grad_(), psi.clone().requires_grad_()
        gen.render(wg, pg).mean().backward()

    return _median_ms(fwd, repeat), _median_ms(fwd_bwd, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photo", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--diffusionrig", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()

    from facerig.edit import _fit_one
    from facerig.engines.dualmapper.adapters import build_generator
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model

    if a.photo:
        image = load_image(a.photo)
    else:
        from skimage import data

        image = data.astronaut()
    model = load_face_model("builtin")
    params = _fit_one(image, model, "largest", a.photo or "astronaut")
    if a.threads:  # after the imports and the fit (they may set their own)
        torch.set_num_threads(a.threads)
    print(f"torch threads {torch.get_num_threads()}, batch {a.batch}, median of {a.repeat}")
    for s in a.sizes:
        t = time.perf_counter()
        gen = build_generator("warp", image, params, model, size=s)
        setup = 1000 * (time.perf_counter() - t)
        f, fb = _timings(gen, a.batch, a.repeat)
        w0, psi0 = gen.initial()
        with torch.no_grad():
            err = float((gen.render(w0, psi0) - gen.source_image()).abs().mean())
        print(f"warp {s:4d} px: setup {setup:7.1f} ms  forward {f:7.1f} ms  forward+backward {fb:7.1f} ms  "
              f"|render(w0, psi0) - source| mean {err:.2e}")
    if a.diffusionrig:
        from facerig.engines.diffusionrig import (
            TINY_UNET_CONFIG,
            DiffusionRigPipeline,
            DiffusionRigUNet,
            GlobalEncoder,
        )

        unet = DiffusionRigUNet(**{**TINY_UNET_CONFIG, "face_model": model.fingerprint()})
        pipe = DiffusionRigPipeline(unet, GlobalEncoder())
        for ckpt in (True, False):
            gen = build_generator("diffusionrig", image, params, model, pipeline=pipe, steps=a.steps, checkpoint=ckpt)
            f, fb = _timings(gen, a.batch, a.repeat)
            print(f"diffusionrig TINY 32 px, {a.steps} steps, checkpoint={ckpt}: forward {f:7.1f} ms  "
                  f"forward+backward {fb:7.1f} ms")


if __name__ == "__main__":
    main()
