"""End to end in a real headless browser: upload a package photo, move a slider, see the image
change, download it; a bad upload shows a message (tests/ui/conftest.py starts both)."""

from __future__ import annotations

import io
import re
import time
import urllib.request

import numpy as np


def _wait(fn, timeout=60.0, what="condition"):
    t = time.time()
    while time.time() - t < timeout:
        try:
            v = fn()
        except Exception:  # the DOM re-renders under us: try again
            v = None
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _pixels(src: str) -> np.ndarray:
    from PIL import Image

    with urllib.request.urlopen(src, timeout=30) as r:  # the gradio file route of the shown image
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


# gradio's status tracker overlays the pending element with its timer ("0.1s", "processing | 0.3s",
# "queue: 1/2 | 0.2s"); it is not part of the message
_TIMER = re.compile(r"^(?:(?:processing|queue:?\s*[\d/]+)\s*\|\s*)?\d+(?:\.\d+)?s(?:\s*/\s*\d+(?:\.\d+)?s)?$")


def _status(d) -> str:
    from selenium.webdriver.common.by import By

    lines = d.find_element(By.ID, "status").text.splitlines()
    return "\n".join(ln for ln in lines if not _TIMER.match(ln.strip()))


def _result_src(d) -> str | None:
    from selenium.webdriver.common.by import By

    imgs = d.find_elements(By.CSS_SELECTOR, "#result img")
    return imgs[0].get_attribute("src") if imgs else None


def test_upload_slider_download_and_bad_upload(server, browser, shot, tmp_path, grace_hopper):
    from PIL import Image
    from selenium.webdriver.common.by import By

    url, studio = server
    d = browser
    photo = tmp_path / "grace_hopper.png"
    Image.fromarray(grace_hopper).save(photo)
    d.get(url)
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"), what="the upload box")
    d.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(photo))
    _wait(lambda: "as uploaded" in _status(d), 90, "the photo fitted after the upload")
    first = _wait(lambda: _result_src(d), what="the result image")
    before = _pixels(first)
    shot("1_uploaded")

    # move a slider: the number box of the smile control (what dragging the slider sets too)
    box = d.find_element(By.CSS_SELECTOR, "#ctl-smile input[type=number]")
    box.clear()
    box.send_keys("0.9\n")
    changed = _wait(lambda: (s := _result_src(d)) != first and s, 30, "the result to change after the slider")
    after = _pixels(changed)
    assert after.shape == before.shape
    diff = np.abs(after.astype(int) - before.astype(int)).max(-1)
    assert (diff > 20).mean() > 0.005, "the smile slider did not change the picture"
    # the change is around the mouth (lower half of the face view), not everywhere
    h = diff.shape[0]
    assert (diff[h // 2:] > 20).sum() > 3 * (diff[: h // 3] > 20).sum()
    shot("2_smile")

    # download: the whole edited photo as PNG, of the photo's size
    _wait(lambda: d.find_element(By.ID, "download").is_enabled(), what="the download button")
    time.sleep(0.5)  # the chained event sets the file after the face view
    d.find_element(By.ID, "download").click()
    got = _wait(lambda: [p for p in d.downloads.glob("*.png") if p.stat().st_size > 0], 30, "the downloaded PNG")
    edited = np.asarray(Image.open(got[0]).convert("RGB"))
    assert edited.shape == grace_hopper.shape
    assert np.abs(edited.astype(int) - grace_hopper.astype(int)).max() > 20

    # a bad upload (not an image, named .png) is a message, not a traceback
    bad = tmp_path / "not_a_photo.png"
    bad.write_bytes(b"this is not an image\n" * 50)
    d.get(url)
    _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#photo input[type=file]"), what="the upload box")
    d.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(bad))
    text = _wait(lambda: (t := _status(d)) and "error" in t.lower() and t, 30, "an error message in the status line")
    shot("3_bad_upload")
    assert "Traceback" not in d.find_element(By.TAG_NAME, "body").text
    assert "image" in text.lower() and len(text.splitlines()) == 1, text
