"""DiffusionRig YAML recipes parse into typed configs and build the intended models."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.diffusionrig.model import PAPER_UNET_CONFIG
from facerig.engines.diffusionrig.training import build_train_module
from facerig.errors import InvalidInput
from facerig.train.config import load_recipe


@pytest.mark.parametrize("name", ["paper_stage1", "paper_stage2", "tiny_cpu"])
def test_recipes_build(name):
    r = load_recipe(name, engine="diffusionrig")
    assert r.engine == "diffusionrig" and r.name == name
    with torch.device("meta"):
        mod = build_train_module(r.model, face_model="flame-0000000000")
    cfg = mod.unet.config
    assert cfg.face_model == "flame-0000000000"
    if name.startswith("paper"):
        for k in ("model_channels", "num_res_blocks", "dropout", "use_scale_shift_norm", "resblock_updown"):
            assert cfg[k] == PAPER_UNET_CONFIG[k]
        assert tuple(cfg.channel_mult) == (1, 1, 2, 2, 4, 4)
        assert r.train.grad_clip == 1.0 and r.train.mixed_precision == "fp16"
    if name == "paper_stage1":
        assert (r.train.lr, r.train.max_steps, r.train.batch_size) == (1e-4, 50000, 32)
    if name == "paper_stage2":
        assert (r.train.lr, r.train.max_steps, r.train.batch_size) == (1e-5, 5000, 4)
        assert not any(p.requires_grad for p in mod.encoder.parameters())


def test_bad_model_section():
    with pytest.raises(InvalidInput):
        build_train_module({"unet": {"image_size": 32}, "typo": 1})
    with pytest.raises(InvalidInput):
        load_recipe("no_such_recipe", engine="diffusionrig")
