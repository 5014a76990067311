"""Detection speed: ms per image for MediaPipe face-mesh detection (478 points) on the astronaut photo
resized to 256/512/1024/2048 px, after warm-up; plus the crop helpers.

Usage: python benchmarks/bench_detect.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
from skimage import data

from facerig.detect import FaceDetector, ffhq_crop, paste_back, warp_to_crop


def _time_ms(fn, repeats: int) -> tuple[float, float]:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    img = data.astronaut()
    t0 = time.perf_counter()
    det = FaceDetector()
    det.detect(img)  # builds the graph, loads the models
    print(f"first call (import + graph + models): {(time.perf_counter() - t0) * 1000:.0f} ms")
    print(f"{'size':>6} {'median ms':>10} {'min ms':>8}  faces")
    for side in (256, 512, 1024, 2048):
        im = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < 512 else cv2.INTER_CUBIC)
        for _ in range(3):
            det.detect(im)  # warm-up
        med, lo = _time_ms(lambda im=im: det.detect(im), args.repeats)
        print(f"{side:>6} {med:>10.1f} {lo:>8.1f}  {len(det.detect(im))}")

    frames = [img] * 30
    det.detect_video(frames[:3])
    med, _ = _time_ms(lambda: det.detect_video(frames), 3)
    print(f"video (tracking), 512 px: {med / len(frames):.1f} ms/frame")

    face = det.detect_one(img)
    for size in (256, 512):
        c = ffhq_crop(face, size)
        crop = warp_to_crop(img, c)
        med_w, _ = _time_ms(lambda c=c: warp_to_crop(img, c), args.repeats)
        med_p, _ = _time_ms(lambda c=c, crop=crop: paste_back(img, crop, c), args.repeats)
        print(f"ffhq crop {size}: warp_to_crop {med_w:.2f} ms, paste_back {med_p:.2f} ms")
    det.close()


if __name__ == "__main__":
    main()
