"""Speed of the warp engine (after detection/fitting): edits of the package photo and reenactment of
face-filling 1024 px and 512 px portraits driven by a 512 px clip, with the old settings
(``face_res=0``: the work grid bounded by ``work_size`` only) measured in the same run as the
baseline.

    python benchmarks/bench_warp.py [--frames 40] [--portrait PATH] [--clip PATH] [--skip-edits]
        [--baseline SRC] [--quality N] [--crops DIR]

``--baseline SRC`` (the ``src`` folder of another checkout, e.g. the main branch's) renders the same
frames with that code in a worker process, alternating frame by frame with this tree's, and prints
the ratio of the two (so a loaded machine slows both alike) and per-stage ms of each. ``--quality
N`` compares this tree's pictures with the baseline's on N shared portraits (1024 px face-filling
crops) x 4 edits (smile, open_mouth, yaw 15, light left): PSNR inside the face (the detected
landmarks' hull), the largest difference there, and whether everything outside the head region is
bit-identical; ``--crops DIR`` writes before/after face crops there (keep them outside the repo).

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
import json
import os
import pickle
import subprocess
import sys
import tempfile
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


class Baseline:
    """Another checkout's warp engine (``src`` folder) in a worker process: ``prepare`` once per
    source, then ``render(i)`` renders target i (seconds, stage timings) and optionally saves the
    output (.npy)."""

    def __init__(self, src: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(src))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def call(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        while True:  # (skipping anything a library printed)
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the baseline worker died (see its stderr above)")
            if line.startswith("{"):
                return dict(json.loads(line))

    def prepare(self, img: np.ndarray, params: Any, targets: list[Any], options: dict[str, Any]) -> None:
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as fh:
            pickle.dump((img, params, targets, options), fh)
        self.call(cmd="prepare", path=fh.name)
        os.unlink(fh.name)

    def render(self, i: int, save: str | None = None) -> dict[str, Any]:
        return self.call(cmd="render", i=i, save=save)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.call(cmd="quit")
        self.proc.wait(timeout=60)


def worker() -> None:
    """The baseline side of :class:`Baseline` (one JSON line in, one out)."""
    import torch

    from facerig.engines import get_engine
    from facerig.morphable import load_face_model

    torch.set_grad_enabled(False)
    model = load_face_model("builtin")
    eng, st, targets = None, None, []
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            print(json.dumps({}), flush=True)
            return
        if msg["cmd"] == "prepare":
            with open(msg["path"], "rb") as fh:
                img, params, targets, options = pickle.load(fh)
            eng = get_engine("warp", **options)
            st = eng.prepare(img, params, model)
            eng.render_frame(st, targets[0])  # warm-up
            print(json.dumps({}), flush=True)
        else:
            assert eng is not None
            t = time.perf_counter()
            out = eng.render_frame(st, targets[msg["i"]])
            dt = time.perf_counter() - t
            if msg.get("save"):
                np.save(msg["save"], out)
            print(json.dumps({"s": dt, "stages": dict(getattr(eng, "last_timings", {}))}), flush=True)


def bench_against(model: Any, portrait: np.ndarray, name: str, clip: Path | None, frames: int,
                  baseline: Path) -> None:
    """This tree's default engine vs ``baseline``'s, alternating frame by frame."""
    from facerig.engines import get_engine

    base = Baseline(baseline)
    try:
        for side in (1024, 512):
            img, params = face_filling(portrait, model, side, name)
            seq, _, what = driving_sequence(model, params, clip, frames)
            targets = [seq[i] for i in range(len(seq))]
            eng = get_engine("warp")
            st = eng.prepare(img, params, model)
            t = time.perf_counter()
            eng.render_frame(st, targets[0])
            first = time.perf_counter() - t
            base.prepare(img, params, targets, {})
            tn, to, sn, so = [], [], [], []
            for i in range(len(targets)):
                t = time.perf_counter()
                eng.render_frame(st, targets[i])
                tn.append(time.perf_counter() - t)
                sn.append(dict(eng.last_timings))
                r = base.render(i)
                to.append(r["s"])
                so.append(r["stages"])
            mn, mo = float(np.median(tn)), float(np.median(to))
            print(f"reenact {side}px face-filling {name} by {what}: work grid {st.work_hw[1]}x{st.work_hw[0]}; "
                  f"this tree {1 / mn:5.1f} fps ({1000 * mn:.1f} ms), baseline {1 / mo:5.1f} fps "
                  f"({1000 * mo:.1f} ms): {mo / mn:.2f}x faster; first frame here {1000 * first:.0f} ms")
            for label, ss in (("this tree", sn), ("baseline ", so)):
                print(f"  stages, {label} (cumulative ms, medians):",
                      {k: round(1000 * float(np.median([x[k] for x in ss])), 1) for k in ss[0]})
    finally:
        base.close()


_QUALITY_EDITS = (("smile", {"preset": "smile"}), ("open_mouth", {"preset": "open_mouth"}),
                  ("yaw15", {"yaw": 15}), ("light_left", {"light": "left"}))


def quality(model: Any, baseline: Path, n: int, crops: Path | None) -> None:
    """PSNR inside the face between this tree's and the baseline's outputs (see the docstring)."""
    import cv2

    from facerig.engines import get_engine
    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image
    from facerig.rig import EditSpec

    shared = shared_dir()
    if shared is None:
        print("quality: no shared data folder (FACERIG_SHARED)")
        return
    root = Path(shared) / "data" / "portraits"
    paths = sorted((root / "deepface").glob("img[0-9]*.jpg"))[:max(1, n // 2)]
    paths += sorted(p for p in (root / "pexels-unsplash").glob("*.jpg"))[:max(0, n - len(paths))]
    base = Baseline(baseline)
    tmp = Path(tempfile.mkdtemp())
    worst, rows = float("inf"), []
    try:
        for path in paths[:n]:
            try:
                img, params = face_filling(load_image(path), model, 1024, path.stem)
            except Exception as e:  # noqa: BLE001 - a portrait without a usable face is skipped
                print(f"  {path.name}: skipped ({type(e).__name__}: {e})")
                continue
            targets = [EditSpec(**kw).apply(params, model) for _, kw in _QUALITY_EDITS]
            eng = get_engine("warp")
            st = eng.prepare(img, params, model)
            base.prepare(img, params, targets, {})
            lm = np.asarray(params.meta["landmarks_px"])[:, :2].astype(np.float32)
            face = np.zeros(img.shape[:2], np.uint8)
            cv2.fillConvexPoly(face, cv2.convexHull(lm).astype(np.int32), 1)
            x0, y0, x1, y1 = st.roi
            outside = np.ones(img.shape[:2], bool)
            outside[y0:y1, x0:x1] = False
            for i, ((label, _), tgt) in enumerate(zip(_QUALITY_EDITS, targets, strict=True)):
                a = eng.render_frame(st, tgt)
                base.render(i, save=str(tmp / "b.npy"))
                b = np.load(tmp / "b.npy")
                d = (a.astype(np.float64) - b.astype(np.float64))[face > 0]
                mse = float(np.mean(d ** 2))
                psnr = 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")
                same_out = bool(np.array_equal(a[outside], b[outside]))
                worst = min(worst, psnr)
                rows.append((path.stem, label, psnr, int(np.abs(d).max()) if d.size else 0,
                             float(np.mean(np.any(a != b, axis=2))), same_out))
                print(f"  {path.stem:>24} {label:>10}: PSNR in the face {psnr:6.1f} dB, max |diff| {rows[-1][3]:3d}, "
                      f"pixels differing {100 * rows[-1][4]:.3f} %, outside the work region identical: {same_out}")
                if crops is not None:
                    crops.mkdir(parents=True, exist_ok=True)
                    ys, xs = np.nonzero(face)
                    c = (slice(max(0, ys.min() - 20), ys.max() + 20), slice(max(0, xs.min() - 20), xs.max() + 20))
                    diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)) * 16, 0, 255).astype(np.uint8)
                    sheet = np.concatenate([b[c], a[c], diff[c]], 1)
                    cv2.imwrite(str(crops / f"{path.stem}_{label}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    finally:
        base.close()
    if rows:
        print(f"quality: {len(rows)} renders, worst PSNR inside the face {worst:.1f} dB, "
              f"{sum(r[2] == float('inf') for r in rows)} identical, outside the work region identical in "
              f"{sum(r[5] for r in rows)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--portrait", type=Path, default=None)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--skip-edits", action="store_true")
    ap.add_argument("--face-res", type=int, default=None, help="the new settings' face_res (default: the engine's)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="src folder of another checkout to compare with (same frames, alternating)")
    ap.add_argument("--quality", type=int, default=0, help="with --baseline: compare pictures on N portraits")
    ap.add_argument("--crops", type=Path, default=None, help="with --quality: write before/after crops here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return
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
    clip = clip if clip is not None and clip.exists() else None
    if args.baseline is not None:
        bench_against(model, img, name, clip, args.frames, args.baseline)
        if args.quality:
            quality(model, args.baseline, args.quality, args.crops)
    else:
        bench_reenact(model, img, name, clip, args.frames, {} if args.face_res is None else {"face_res": args.face_res})
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
