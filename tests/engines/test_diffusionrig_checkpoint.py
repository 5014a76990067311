"""DiffusionRig: released-checkpoint compatibility and forward equivalence with the authors' model.

Fixtures (tests/engines/fixtures/):
* ``diffusionrig_official_256_keys.json`` -- name -> shape of every tensor in the released
  ``model_*.pt`` layout at the paper configuration, produced by instantiating the authors' model
  class (adobe-research/diffusion-rig @ f196371, reconstructed outside this repository; torchvision's
  resnet18 replaced by an equivalent stand-in because torchvision cannot be imported here) on the
  meta device.
* ``diffusionrig_reference.safetensors`` -- inputs and outputs of that reconstructed authors' model
  at two tiny configurations (every block kind: plain / down / up residual blocks, 1x1 skip convs,
  attention in input/middle/output paths with 2 heads; variant ``b``: conv resampling and the "new"
  attention order), eval mode, with every tensor filled by :func:`fill` below (seed 7, sorted keys).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facerig.engines.diffusionrig.checkpoint import (
    CheckpointMismatch,
    load_official_checkpoint,
    official_state_dict,
)
from facerig.engines.diffusionrig.model import (
    PAPER_UNET_CONFIG,
    TINY_UNET_CONFIG,
    DiffusionRigUNet,
    GlobalEncoder,
)
from facerig.errors import InvalidInput

FIX = Path(__file__).parent / "fixtures"


def fill(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic non-trivial values for every tensor (zero-initialised convs included)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(sd):
        v = sd[k]
        if not v.is_floating_point():
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif v.ndim >= 2:
            out[k] = torch.randn(v.shape, generator=g) / (v[0].numel() ** 0.5)
        elif k.endswith("weight"):
            out[k] = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = 0.1 * torch.randn(v.shape, generator=g)
    return out


def _meta_official_table(config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        unet = DiffusionRigUNet(**config)
        enc = GlobalEncoder(latent_dim=config["latent_dim"])
    return {k: tuple(v.shape) for k, v in official_state_dict(unet, enc).items()}


def test_paper_layout_matches_released_key_table():
    ref = json.loads((FIX / "diffusionrig_official_256_keys.json").read_text())["shapes"]
    ours = _meta_official_table(PAPER_UNET_CONFIG)
    assert set(ours) == set(ref), (sorted(set(ref) - set(ours))[:5], sorted(set(ours) - set(ref))[:5])
    bad = {k: (ours[k], tuple(ref[k])) for k in ref if ours[k] != tuple(ref[k])}
    assert not bad
    n = sum(torch.Size(s).numel() for s in ref.values())
    assert 144_000_000 < n < 145_000_000  # 133.4M UNet + 11.2M ResNet-18


def _fake_official(table: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A state dict with the released names/shapes without allocating storage per tensor
    (expanded zero-stride views of one scalar: ~0 bytes each)."""
    one = torch.zeros(())
    out = {}
    for k, s in table.items():
        out[k] = (
            torch.zeros((), dtype=torch.long).expand(s)
            if k.endswith("num_batches_tracked")
            else one.expand(s)
        )
    return out


def test_strict_load_of_full_size_layout_and_typed_errors(tmp_path):
    table = {
        k: tuple(v)
        for k, v in json.loads((FIX / "diffusionrig_official_256_keys.json").read_text())["shapes"].items()
    }
    sd = _fake_official(table)
    unet, enc = load_official_checkpoint(sd)  # strict; assign=True keeps the zero-stride views
    assert unet.config.face_model == "flame" and unet.config.model_channels == 128
    assert set(official_state_dict(unet, enc)) == set(table)

    bad = dict(sd)
    bad.pop("denoisingUNet.middle_block.1.qkv.weight")
    bad["denoisingUNet.extra.weight"] = torch.zeros(1)
    bad["encoder.fc.weight"] = torch.zeros(()).expand(10, 512)
    with pytest.raises(CheckpointMismatch) as ei:
        load_official_checkpoint(bad)
    e = ei.value
    assert e.missing == ["denoisingUNet.middle_block.1.qkv.weight"]
    assert e.unexpected == ["denoisingUNet.extra.weight"]
    assert e.mismatched == {"encoder.fc.weight": ((64, 512), (10, 512))}
    assert "middle_block.1.qkv.weight" in str(e) and "encoder.fc.weight" in str(e)

    with pytest.raises(CheckpointMismatch) as ei:
        load_official_checkpoint({**sd, "ema.something": torch.zeros(1)})
    assert ei.value.unexpected == ["ema.something"]


def _load_tiny(variant: str, tmp_path) -> tuple[DiffusionRigUNet, GlobalEncoder]:
    cfg = dict(TINY_UNET_CONFIG, norm_num_groups=32)  # the authors' code has 32 groups, hard-coded
    if variant == "b":
        cfg.update(resblock_updown=False, use_new_attention_order=True)
    unet = DiffusionRigUNet(**cfg)
    enc = GlobalEncoder()
    sd = fill(official_state_dict(unet, enc), seed=7)
    path = tmp_path / f"model_{variant}.pt"
    torch.save(sd, path)  # a released-style file, read back with weights_only=True
    return load_official_checkpoint(path, unet_config=cfg)


@pytest.mark.parametrize("variant", ["a", "b"])
def test_forward_matches_authors_model(variant, tmp_path):
    ref = load_file(FIX / "diffusionrig_reference.safetensors")
    unet, enc = _load_tiny(variant, tmp_path)
    with torch.no_grad():
        code = enc(ref["image"])
        eps = unet(ref["x"], ref["t"], ref["cond"], code)
    torch.testing.assert_close(code, ref[f"{variant}_code"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eps, ref[f"{variant}_eps"], rtol=1e-4, atol=1e-5)
    # the file does not record the group count; the loader refuses anything but the authors' 32
    with pytest.raises(InvalidInput, match="norm_num_groups"):
        load_official_checkpoint(tmp_path / f"model_{variant}.pt", unet_config=TINY_UNET_CONFIG)
