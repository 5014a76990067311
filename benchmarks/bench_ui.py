"""Latency of the web UI (``facerig serve``): server-side time per slider update, and the browser
round trip.

    python benchmarks/bench_ui.py [--updates 40] [--size 512] [--browser] [--rounds 20]

Server side: each photo (skimage's astronaut and matplotlib's grace_hopper, resized to ``--size``
on the long side, plus up to two shared portraits when $FACERIG_SHARED is there) is uploaded and
fitted once (the first-fit time is printed separately); then a sweep of slider values (smile, blink,
brows, gaze, visemes, yaw, a light preset, the controls together) is rendered the way the UI's slider
callback does: :meth:`facerig.ui.core.Studio.render` plus the before|after sheet. Printed: median and
p90 ms of the update, of its parts (rig + engine), and of encoding the face view as WebP (what gradio
sends to the browser). Goal: <= 50 ms per update at 512 px on 2 cores.

``--browser``: the UI is started on a free local port and a headless Debian chromium (selenium,
system chromedriver) uploads the astronaut, then sets the smile slider ``--rounds`` times; each round
trip is the time from setting the value to a new result image in the page. Goal: <= 250 ms locally.

Figures only (no asserts); the load average is printed (figures compare only on an idle machine).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def _photos(size: int) -> list[tuple[str, np.ndarray]]:
    import cv2

    from facerig.io.image import load_image
    from facerig.io.samples import sample_path

    out = [(n, load_image(sample_path(n))) for n in ("astronaut", "grace_hopper")]
    shared = Path(os.environ.get("FACERIG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    for rel in ("data/portraits/pexels-unsplash/pexels-andrea-piacquadio-733872.jpg",
                "data/portraits/deepface/img3.jpg"):
        if (shared / rel).is_file():
            out.append((Path(rel).stem, load_image(shared / rel)))
    res = []
    for name, im in out:
        s = size / max(im.shape[:2])
        res.append((name, cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)),
                                     interpolation=cv2.INTER_AREA)))
    return res


def sweep(n: int) -> list:
    from facerig.ui.core import EditValues

    base = [
        EditValues(controls={"smile": v}) for v in np.linspace(0.1, 1.0, 6)
    ] + [EditValues(controls={"blink": v}) for v in (0.3, 0.7, 1.0)] + [
        EditValues(controls={"brows": v}) for v in (0.5, -0.5)
    ] + [EditValues(controls={"gaze_x": 0.8, "gaze_y": 0.3}), EditValues(controls={"aaa": 0.8}),
         EditValues(controls={"ooo": 0.8}), EditValues(controls={"wink_left": 1.0})] + [
        EditValues(yaw=v) for v in (5.0, 10.0, -10.0)
    ] + [EditValues(light="left"), EditValues(controls={"smile": 0.6, "blink": 0.4, "brows": 0.3}, pitch=5.0)]
    return [base[i % len(base)] for i in range(n)]


def server_side(args: argparse.Namespace) -> None:
    from PIL import Image

    from facerig.ui.core import Studio
    from facerig.viz import hstack, label

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    studio = Studio(work_dir=tmp)
    print(f"server side, {args.updates} slider updates per photo, long side {args.size} px")
    print(f"{'photo':<34} {'size':>9} {'fit ms':>8} {'update med':>11} {'p90':>7} {'engine med':>11} "
          f"{'webp med':>9}")
    all_upd: list[float] = []
    for name, im in _photos(args.size):
        p = tmp / f"{name}.png"
        Image.fromarray(im).save(p)
        t = time.perf_counter()
        photo = studio.load(p)
        studio.session(photo.key)
        fit = time.perf_counter() - t
        upd, eng, enc = [], [], []
        for v in sweep(args.updates):
            t = time.perf_counter()
            r = studio.render(photo.key, v)
            hstack([label(r.before, "before"), label(r.after, "after")], height=360)
            upd.append(time.perf_counter() - t)
            eng.append(r.result.timings.get("engine", 0.0) + r.result.timings.get("rig", 0.0))
            t = time.perf_counter()
            Image.fromarray(r.after).save(io.BytesIO(), format="WEBP")
            enc.append(time.perf_counter() - t)
        all_upd += upd
        print(f"{name[:34]:<34} {im.shape[1]:>4}x{im.shape[0]:<4} {fit * 1000:8.0f} {_pct(upd, 50):11.1f} "
              f"{_pct(upd, 90):7.1f} {_pct(eng, 50):11.1f} {_pct(enc, 50):9.1f}")
    print(f"all photos: update median {_pct(all_upd, 50):.1f} ms, p90 {_pct(all_upd, 90):.1f} ms "
          f"(goal <= 50 ms); load average {os.getloadavg()[0]:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


def browser_round_trip(args: argparse.Namespace) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    from facerig.io.image import load_image
    from facerig.io.samples import sample_path
    from facerig.ui.app import build_app
    from facerig.ui.core import Studio

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    studio = Studio(work_dir=tmp)
    demo = build_app(studio)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                allowed_paths=[str(tmp)])
    photo = tmp / "astronaut.png"
    Image.fromarray(load_image(sample_path("astronaut"))).save(photo)
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        d.get(f"http://127.0.0.1:{port}/")

        def wait(fn, timeout=60.0):
            t = time.time()
            while time.time() - t < timeout:
                try:
                    v = fn()
                except Exception:
                    v = None
                if v:
                    return v
                time.sleep(0.002)
            raise TimeoutError("the page did not update")

        wait(lambda: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"))
        t0 = time.perf_counter()
        d.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(photo))
        wait(lambda: "as uploaded" in d.find_element(By.ID, "status").text, 120)
        print(f"browser: upload -> first result {time.perf_counter() - t0:.2f} s (detect + fit + prepare)")

        def src():
            imgs = d.find_elements(By.CSS_SELECTOR, "#result img")
            return imgs[0].get_attribute("src") if imgs else None

        # timed in the page itself (performance.now): the range input is set and its input event fired,
        # as a drag does, and the round trip ends when the new result image has loaded
        js = """
const done = arguments[arguments.length - 1];
const value = arguments[0];
const img = () => document.querySelector('#result img');
const before = img() ? img().src : null;
const range = document.querySelector('#ctl-smile input[type=range]');
const t0 = performance.now();
const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
setter.call(range, value);
range.dispatchEvent(new Event('input', {bubbles: true}));
range.dispatchEvent(new Event('change', {bubbles: true}));
(function poll() {
  const i = img();
  if (i && i.src !== before && i.complete && i.naturalWidth > 0) { done(performance.now() - t0); return; }
  if (performance.now() - t0 > 20000) { done(-1); return; }
  requestAnimationFrame(poll);
})();
"""
        d.set_script_timeout(30)
        rts = []
        for i in range(args.rounds):
            ms = d.execute_async_script(js, f"{0.2 + 0.7 * ((i % 8) / 7):.2f}")
            if ms < 0:
                raise TimeoutError("the result image did not change")
            rts.append(ms / 1000.0)
            time.sleep(0.3)  # let the chained before|after / download step finish: rounds do not overlap
        print(f"browser round trip (set the smile slider -> new image loaded in the page), {args.rounds} rounds: "
              f"median {_pct(rts, 50):.0f} ms, p90 {_pct(rts, 90):.0f} ms (goal <= 250 ms)")
    finally:
        d.quit()
        demo.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=40)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--browser", action="store_true", help="also time the round trip in a headless chromium")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)
    server_side(args)
    if args.browser:
        browser_round_trip(args)


if __name__ == "__main__":
    main()
