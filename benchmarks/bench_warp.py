"""Speed of the warp engine (after detection/fitting): edits of the package photo and reenactment of
face-filling 1024 px and 512 px portraits driven by a 512 px clip, with the old settings
(``face_res=0``: the work grid bounded by ``work_size`` only) measured in the same run as the
baseline.

    python benchmarks/bench_warp.py [--frames 40] [--portrait PATH] [--clip PATH] [--skip-edits]

The portrait is a shared photo (``$FACERIG_SHARED/data/portraits/deepface/img3.jpg``) cropped to
its face (the face is ~2/3 of the side) and resized to 1024 px and 512 px; the driving clip a shared
512 px talking-head clip (``videos/liveportrait/d0.mp4``) fitted once. Without the shared folder:
the package photo (skimage's astronaut) cropped the same way and a synthetic driving sequence
(jaw + yaw oscillation). Old and new settings render alternate frames, so both see the same machine
load; fps = 1 / median frame time (render only). Prints figures only (no timed asserts); single
process, the machine's cores as configured (the load average is printed: the figures are only
comparable on an idle machine).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def face_filling(img: np.ndarray, model: Any, side: int, name: str) -> tuple[np.ndarray, Any]:
    """``img`` cropped to a square around its face (1.5 x the landmarks' extent), resized to
    ``side`` px and fitted."""
    import cv2

    from facerig.edit import _fit_one

    p = _fit_one(img, model, "largest", name)
    lm = np.asarray(p.meta["landmarks_px"])[:, :2]
    lo, hi = lm.min(0), lm.max(0)
    c, s = (lo + hi) / 2, min(1.5 * float(np.max(hi - lo)), *img.shape[:2])
    x0 = int(np.clip(c[0] - s / 2, 0, img.shape[1] - s))
    y0 = int(np.clip(c[1] - 0.55 * s, 0, img.shape[0] - s))
    crop = img[y0:y0 + int(s), x0:x0 + int(s)]
    crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if s > side else cv2.INTER_CUBIC)
    return crop, _fit_one(crop, model, "largest", f"{name} {side}px")


def bench_edits(model: Any) -> None:
    from skimage import data

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.rig import EditSpec

    img = data.astronaut()
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
        ts, ts2 = [], []
        for _ in range(3):
            t = time.perf_counter()
            eng.edit(img, params, target, model)
            ts.append(time.perf_counter() - t)
            t = time.perf_counter()
            eng.render_frame(state, target)
            ts2.append(time.perf_counter() - t)
        print(f"edit astronaut 512x512 {name:>11}: {1000 * np.median(ts):6.1f} ms (prepare+render), "
              f"{1000 * np.median(ts2):6.1f} ms render only")


_DRIVING: dict[str, tuple[Any, float]] = {}


def driving_sequence(model: Any, source: Any, clip: Path | None, frames: int) -> tuple[Any, float, str]:
    """The target params for ``source`` driven by ``clip`` (fitted once, relative motion), the
    driving fit's seconds, and a description."""
    from facerig.fit.api import FitConfig, fit_video
    from facerig.rig import EditSpec
    from facerig.rig.sequence import align_sequence, smooth_sequence

    if clip is None:
        seq = [EditSpec(expression={"jawOpen": 0.3 + 0.3 * np.sin(2 * np.pi * i / 30)},
                        yaw=10 * np.sin(np.pi * i / 30)).apply(source, model) for i in range(frames)]
        return seq, 0.0, f"synthetic sequence ({frames} frames: jaw + yaw)"
    if str(clip) not in _DRIVING:
        t = time.perf_counter()
        fr = fit_video(str(clip), model, FitConfig(photometric=False), max_frames=frames)
        _DRIVING[str(clip)] = (fr.params, time.perf_counter() - t)
    drv, dt = _DRIVING[str(clip)]
    seq = smooth_sequence(align_sequence(source, drv, model, relative=True, anchor="head"), 1.0)
    return seq, dt, f"{clip.name} ({seq.batch_size} frames, fitted in {dt:.1f} s)"


def bench_reenact(model: Any, portrait: np.ndarray, name: str, clip: Path | None, frames: int,
                  options: dict[str, Any]) -> None:
    from facerig.engines import get_engine

    for side in (1024, 512):
        t_fit = time.perf_counter()
        img, params = face_filling(portrait, model, side, name)
        t_fit = time.perf_counter() - t_fit
        seq, t_drv, what = driving_sequence(model, params, clip, frames)
        new, old = get_engine("warp", **options), get_engine("warp", face_res=0)
        t = time.perf_counter()
        st_new = new.prepare(img, params, model)
        t_prep = time.perf_counter() - t
        st_old = old.prepare(img, params, model)
        new.render_frame(st_new, seq[0])
        old.render_frame(st_old, seq[0])  # warm-up
        tn, to, cn, co = [], [], [], []
        for i in range(len(seq)):
            for eng, st, ts, cs in ((new, st_new, tn, cn), (old, st_old, to, co)):
                t, c = time.perf_counter(), time.thread_time()
                eng.render_frame(st, seq[i])
                ts.append(time.perf_counter() - t)
                cs.append(time.thread_time() - c)
        fn, fo = 1 / np.median(tn), 1 / np.median(to)
        total = t_fit + t_drv + t_prep + float(np.sum(tn))
        print(f"reenact {side}px face-filling {name} by {what}: work grid {st_new.work_hw[1]}x{st_new.work_hw[0]} "
              f"(old {st_old.work_hw[1]}x{st_old.work_hw[0]}), face {st_new.face_px:.0f} px on the grid")
        print(f"  render: {fn:5.1f} fps (face_res={new.opts.face_res}), old settings {fo:5.1f} fps, "
              f"ratio {fn / fo:.2f}x; median frame {1000 * np.median(tn):.1f} ms vs {1000 * np.median(to):.1f} ms "
              f"(CPU time of the rendering thread: {1000 * np.median(cn):.1f} ms vs {1000 * np.median(co):.1f} ms)")
        print(f"  end to end (fit source {t_fit:.1f} s + fit driving {t_drv:.1f} s + prepare {t_prep:.2f} s "
              f"+ render {np.sum(tn):.1f} s): {total:.1f} s for {len(seq)} frames")
        print("  stages of the last frame (cumulative ms):", {a: round(1000 * b, 1) for a, b in new.last_timings.items()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--portrait", type=Path, default=None)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--skip-edits", action="store_true")
    ap.add_argument("--face-res", type=int, default=None, help="the new settings' face_res (default: the engine's)")
    args = ap.parse_args()
    import torch
    from skimage import data

    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model

    torch.set_grad_enabled(False)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; torch threads {torch.get_num_threads()}")
    model = load_face_model("builtin")
    if not args.skip_edits:
        bench_edits(model)
    shared = shared_dir()
    portrait, clip = args.portrait, args.clip
    if shared is not None:
        portrait = portrait or Path(shared) / "data" / "portraits" / "deepface" / "img3.jpg"
        clip = clip or Path(shared) / "data" / "videos" / "liveportrait" / "d0.mp4"
    if portrait is not None and portrait.exists():
        img, name = load_image(portrait), portrait.stem
    else:
        img, name = data.astronaut(), "astronaut"
    bench_reenact(model, img, name, clip if clip is not None and clip.exists() else None, args.frames,
                  {} if args.face_res is None else {"face_res": args.face_res})
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
