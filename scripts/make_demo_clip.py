"""Render a short driving clip from a bundled public-domain portrait with facerig itself (no
third-party video needed): the face smiles, opens its mouth, blinks and turns a little.

Usage: .venv/bin/python scripts/make_demo_clip.py OUT.mp4 [--demo astronaut] [--frames 36] [--fps 12]
"""

from __future__ import annotations

import argparse
import math


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--demo", default="astronaut")
    ap.add_argument("--frames", type=int, default=36)
    ap.add_argument("--fps", type=float, default=12.0)
    args = ap.parse_args()

    import facerig
    from facerig.cli import _silence_native_stderr
    from facerig.fit.api import fit_image
    from facerig.io.image import load_image
    from facerig.io.samples import sample_path
    from facerig.io.video import write_video

    _silence_native_stderr()  # MediaPipe's native start-up banners
    image = load_image(sample_path(args.demo))
    params = fit_image(image).params
    frames = []
    for i in range(args.frames):
        t = i / max(1, args.frames - 1)
        wave = math.sin(math.pi * t)
        expression = {"jawOpen": 0.45 * max(0.0, math.sin(2 * math.pi * t)),
                      "mouthSmile_L": 0.6 * wave, "mouthSmile_R": 0.6 * wave,
                      "eyeBlink_L": 1.0 if 0.45 < t < 0.52 else 0.0, "eyeBlink_R": 1.0 if 0.45 < t < 0.52 else 0.0}
        spec = {"expression": expression, "yaw": 12.0 * math.sin(2 * math.pi * t), "pitch": 4.0 * wave}
        frames.append(facerig.edit(image, spec, params=params, buffers=False).image)
    write_video(args.out, frames, fps=args.fps)
    print(f"wrote {args.out} ({len(frames)} frames at {args.fps:g} fps)")


if __name__ == "__main__":
    main()
