"""DiffusionRig engine + `facerig train diffusionrig` / `facerig personalize diffusionrig` smoke runs
(tiny models; quality irrelevant)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facerig.cli import main
from facerig.engines import available_engines, get_engine
from facerig.errors import IncompatibleModel, InvalidInput


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.fit.api import fit_image
    from facerig.morphable import load_face_model

    m = load_face_model("builtin")
    return astronaut, fit_image(astronaut, m).params, m


def _tiny_pipeline(face_model: str):
    from facerig.engines.diffusionrig import (
        TINY_UNET_CONFIG,
        DiffusionRigPipeline,
        DiffusionRigUNet,
        GlobalEncoder,
    )

    torch.manual_seed(0)
    cfg = dict(TINY_UNET_CONFIG, face_model=face_model)
    return DiffusionRigPipeline(DiffusionRigUNet(**cfg), GlobalEncoder(latent_dim=cfg.get("latent_dim", 64)))


def test_registered():
    assert available_engines()["diffusionrig"]["requires_weights"] is True
    with pytest.raises(InvalidInput):
        get_engine("diffusionrig")


def test_engine_output_and_refusal(fitted, tmp_path):
    img, p, m = fitted
    pipe = _tiny_pipeline(m.fingerprint())
    pipe.save_pretrained(tmp_path / "pipe")
    eng = get_engine("diffusionrig", weights=str(tmp_path / "pipe"), steps=3)
    target = p.replace(rotation=p.rotation + torch.tensor([[0.0, 0.25, 0.0]]))
    out = eng.edit(img, p, target, m)
    assert out.shape == img.shape and out.dtype == np.uint8
    # outside the pasted FFHQ crop the frame is untouched; inside it changed
    assert np.array_equal(out[:5, :5], img[:5, :5]) and np.abs(out.astype(int) - img).mean() > 1
    # same source, same target, fixed noise: deterministic
    assert np.array_equal(eng.edit(img, p, target, m), out)
    # weights of another face model refuse these buffers
    other = get_engine("diffusionrig", pipeline=_tiny_pipeline("flame"), steps=2)
    with pytest.raises(IncompatibleModel, match="flame"):
        other.edit(img, p, target, m)


def test_train_and_personalize_cli(astronaut, grace_hopper, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i, a in enumerate((astronaut, astronaut[:, ::-1], grace_hopper)):
        Image.fromarray(np.ascontiguousarray(a)).save(inp / f"p{i}.png")
    shards = tmp_path / "shards"
    assert main(["prepare", str(inp), "-o", str(shards), "--size", "64", "--no-progress"]) == 0
    run = tmp_path / "run"
    args = ["train", "diffusionrig", "--config", "tiny_cpu", "--data", str(shards), "-o", str(run), "--max-steps", "2"]
    assert main(args) == 0
    assert (run / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    cfg = json.loads((run / "final" / "pipeline" / "unet" / "config.json").read_text())
    assert cfg["image_size"] == 32 and cfg["face_model"].startswith("builtin-")
    # stage 2 on an album of one person, from the stage-1 run
    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(astronaut).save(album / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(album / "b.png")
    run2 = tmp_path / "run2"
    assert main(["personalize", "diffusionrig", "--album", str(album), "--base", str(run), "-o", str(run2),
                 "--config", "tiny_cpu", "--max-steps", "1"]) == 0
    personal = json.loads((run2 / "final" / "pipeline" / "personal.json").read_text())
    assert personal["num_photos"] == 2 and len(personal["identity"]) > 0
    from facerig.engines.diffusionrig import DiffusionRigPipeline

    base = DiffusionRigPipeline.from_pretrained(run / "final" / "pipeline")
    tuned = DiffusionRigPipeline.from_pretrained(run2 / "final" / "pipeline")
    for (n, a), b in zip(base.encoder.state_dict().items(), tuned.encoder.state_dict().values(), strict=True):
        if "running" not in n and "num_batches" not in n:
            assert torch.equal(a, b), n  # encoder frozen in stage 2
