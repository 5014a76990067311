"""`facerig edit --engine rigface --weights W --base SD15` end to end on tiny weights the test writes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

from rigface_tiny import write_tiny_rigface  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_rigface(tmp_path_factory.mktemp("rfcli"))


def test_edit_with_rigface_writes_the_edited_photo(tiny, tmp_path, astronaut, run_cli):
    base, weights = tiny
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    out = tmp_path / "smile.png"
    rc, so, se = run_cli(["edit", src, "--engine", "rigface", "--weights", weights, "--base", base, "--steps", "2",
                       "--preset", "smile", "-o", out])
    assert rc == 0, se
    assert "rigface" in so and out.is_file()
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == astronaut.shape
    changed = np.abs(img.astype(int) - astronaut).sum(2) > 0
    assert changed.any()
    # the person is in the middle-upper part of the photo; its corners (flag, shuttle) stay the source's
    assert not changed[:, :80].any() and not changed[:, -120:].any() and not changed[-60:].any()


def test_bad_base_or_weights_is_one_line(tiny, tmp_path, astronaut, run_cli):
    base, weights = tiny
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    for args, word in ((["--weights", weights, "--base", tmp_path / "no-sd15"], "no-sd15"),
                       (["--weights", tmp_path / "no-weights", "--base", base], "RigFace weights"),
                       (["--base", base], "--weights"),
                       (["--weights", weights, "--base", base, "--engine-option", "novalue"], "KEY=VALUE")):
        rc, so, se = run_cli(["edit", src, "--engine", "rigface", "--smile", "0.5", "-o", tmp_path / "o.png", *args])
        assert rc != 0
        lines = [ln for ln in se.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and word in lines[0], se


def test_reenact_with_rigface(tiny, tmp_path, run_cli):
    """`facerig reenact --engine rigface` reaches the engine with --weights/--base/--steps."""
    import cv2
    from skimage import data

    from facerig.io.samples import sample_path
    from facerig.io.video import probe_video, write_video

    img = data.astronaut()[:384, 64:448]
    frames = []
    for i in range(3):
        m = cv2.getRotationMatrix2D((192, 150), 2.0 * i, 1.0)
        frames.append(cv2.warpAffine(img, m, (384, 384), borderMode=cv2.BORDER_REPLICATE))
    clip = write_video(tmp_path / "drv.mp4", frames, fps=10) or tmp_path / "drv.mp4"
    base, weights = tiny
    out = tmp_path / "re.mp4"
    rc, so, se = run_cli(["reenact", sample_path("grace_hopper"), clip, "-o", out, "--no-progress", "--engine", "rigface",
                       "--weights", weights, "--base", base, "--steps", "1"])
    assert rc == 0, se
    assert probe_video(out).frame_count == 3
