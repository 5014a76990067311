"""Speed of the warp engine: ms per 512x512 edit and reenactment fps (after detection/fitting).

    python benchmarks/bench_warp.py [--frames 60]

Prints figures only (no timed asserts). Single process; the machine's cores as configured.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    import torch
    from skimage import data

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    img = data.astronaut()
    model = load_face_model("builtin")
    t = time.perf_counter()
    params = _fit_one(img, model, "largest", "astronaut")
    print(f"fit (detect + landmark + photometric): {1000 * (time.perf_counter() - t):.0f} ms")
    eng = get_engine("warp")
    t = time.perf_counter()
    state = eng.prepare(img, params, model)
    print(f"prepare (per source, incl. segmentation): {1000 * (time.perf_counter() - t):.0f} ms; "
          f"work grid {state.work_hw[1]}x{state.work_hw[0]}")
    for name, spec in [("identity", EditSpec()), ("smile", EditSpec(preset="smile")),
                       ("open_mouth", EditSpec(preset="open_mouth")), ("yaw 15", EditSpec(yaw=15)),
                       ("light left", EditSpec(light="left"))]:
        target = spec.apply(params, model)
        eng.render_frame(state, target)  # warm-up
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            eng.edit(img, params, target, model)
            ts.append(time.perf_counter() - t)
        ts2 = []
        for _ in range(5):
            t = time.perf_counter()
            eng.render_frame(state, target)
            ts2.append(time.perf_counter() - t)
        print(f"edit 512x512 {name:>11}: {1000 * np.median(ts):6.1f} ms (prepare+render), "
              f"{1000 * np.median(ts2):6.1f} ms render only")
    # reenactment: a synthetic driving sequence (jaw + yaw oscillation)
    n = args.frames
    seq = []
    for i in range(n):
        ph = 2 * np.pi * i / 30
        seq.append(EditSpec(expression={"jawOpen": 0.3 + 0.3 * np.sin(ph)}, yaw=10 * np.sin(ph / 2)).apply(params, model))
    t = time.perf_counter()
    k = 0
    for _ in eng.reenact(img, params, seq, model):
        k += 1
    dt = time.perf_counter() - t
    print(f"reenact 512x512: {k} frames in {dt:.2f} s = {k / dt:.1f} fps (incl. one prepare)")
    print("stages of the last frame (cumulative ms):", {a: round(1000 * b, 1) for a, b in eng.last_timings.items()})


if __name__ == "__main__":
    main()
