"""`facerig personalize instaface --image` and `facerig edit --engine instaface` on tiny random
weights the test writes (the facerig InstaFace layout) and a tiny SD base."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from facerig.engines.instaface.model import TINY_UNET_CONFIG, InstaFaceModel
    from facerig.engines.sd.base import write_tiny_sd_base

    root = tmp_path_factory.mktemp("ifcli")
    base = write_tiny_sd_base(root / "sd")
    InstaFaceModel.from_config(TINY_UNET_CONFIG, clip_dim=0, seed=0, projection_width=32,
                               projection_heads=1).save_pretrained(root / "weights")
    return base, root / "weights"


def test_personalize_then_edit_with_the_personalized_weights(tiny, tmp_path, astronaut, run_cli):
    base, weights = tiny
    src = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(src)
    small = ["--engine-option", "size=64", "--engine-option", "finetune_lr=1e-3"]
    rc, so, se = run_cli(["personalize", "instaface", "--image", src, "--weights", weights, "--base", base,
                       "--steps", "2", "-o", tmp_path / "me", *small])
    assert rc == 0, se
    assert "personalized ->" in so and (tmp_path / "me" / "diffusion_unet").is_dir()
    out = tmp_path / "smile.png"
    rc, so, se = run_cli(["edit", src, "--engine", "instaface", "--weights", tmp_path / "me", "--base", base,
                       "--steps", "2", "--preset", "smile", "-o", out, *small])
    assert rc == 0, se
    img = np.asarray(Image.open(out).convert("RGB"))
    changed = np.abs(img.astype(int) - astronaut).sum(2) > 0
    assert img.shape == astronaut.shape and 0 < changed.mean() < 0.3


@pytest.mark.parametrize("args, needle", [
    (["personalize", "instaface", "-o", "x"], "--image"),
    (["personalize", "instaface", "--image", "a.png", "--weights", "w", "--album", "alb", "-o", "x"], "--album"),
    (["personalize", "diffusionrig", "-o", "x"], "--album"),
    (["personalize", "rigface", "-o", "x"], "instaface"),
])
def test_personalize_argument_errors_are_one_line(args, needle, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err
