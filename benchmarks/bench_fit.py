"""Fitting speed on this CPU, after detection: ms per image for the geometry fit (single image and
batched video frames) and for the photometric fit. Prints figures; asserts nothing.

Targets (issue 2): fitting at most 50 ms per image after detection; batched video frames less.
Usage: .venv/bin/python benchmarks/bench_fit.py [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _time(fn, repeat: int = 5) -> float:
    fn()
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return float(np.median(best)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from facerig.detect.mediapipe import FaceDetector
    from facerig.fit.api import FitConfig, fit_landmark_sets
    from facerig.fit.photometric import fit_photometric
    from facerig.io.image import load_image
    from facerig.io.samples import sample_path
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    det = FaceDetector()
    imgs = [load_image(sample_path(n)) for n in ("astronaut", "grace_hopper")]
    lms = [det.detect_one(im) for im in imgs]
    cfg = FitConfig()
    fit_landmark_sets(model, lms[:1], cfg)  # warm-up (float64 copy, caches)
    t1 = _time(lambda: fit_landmark_sets(model, lms[:1], cfg))
    batch = (lms * 16)[:32]
    tb = _time(lambda: fit_landmark_sets(model, batch, cfg), repeat=3) / len(batch)
    ident = fit_landmark_sets(model, lms[:1], cfg).identity[:1]
    tv = _time(lambda: fit_landmark_sets(model, batch, cfg, fixed_identity=ident), repeat=3) / len(batch)
    params = fit_landmark_sets(model, lms[:1], cfg)
    fit_photometric(model, params, imgs[:1])
    tp = _time(lambda: fit_photometric(model, params, imgs[:1]))
    print(f"torch threads: {torch.get_num_threads()}")
    print(f"geometry fit, one image:            {t1:7.1f} ms")
    print(f"geometry fit, batch of 32 images:   {tb:7.1f} ms per image")
    print(f"video frames (identity shared, as fit_video), batch of 32: {tv:7.1f} ms per frame")
    print(f"photometric fit (SH + albedo), 224: {tp:7.1f} ms")
    print(f"total per image after detection:    {t1 + tp:7.1f} ms (target <= 50 ms)")


if __name__ == "__main__":
    main()
