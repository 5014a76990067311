"""Strict loading of MagicPortrait's released checkpoint files, written by the tests in the released
layout (tiny configs, seeded random weights): success, each error naming its key, dead weights
listed, the AnimateDiff -> MotionAdapter renaming and the UNetMotionModel built from the two."""

from __future__ import annotations

import logging

import pytest
import torch

from facerig.engines.magicportrait.checkpoints import (
    animatediff_to_diffusers,
    build_denoiser,
    diffusers_to_animatediff,
    load_denoising_unet,
    load_guidance_encoder,
    load_guidance_encoders,
    load_motion_adapter,
    load_reference_unet,
    read_checkpoint,
)
from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput


def _edit(src, dst, fn):
    sd = torch.load(src, weights_only=True)
    fn(sd)
    torch.save(sd, dst)
    return dst


def test_guidance_encoders_load_strictly_and_list_dead_weights(tiny_release, layout, caplog):
    with caplog.at_level(logging.INFO, logger="facerig.engines.magicportrait.checkpoints"):
        encs = load_guidance_encoders(tiny_release, layout.TINY_GUIDANCE)
    assert set(encs) == {"depth", "normal", "render"}
    for t, enc in encs.items():
        sd = torch.load(tiny_release / f"guidance_encoder_{t}.pth", weights_only=True)
        for k, v in enc.state_dict().items():
            assert torch.equal(v, sd[k]), k
        assert not enc.training
    assert "dead weights" in caplog.text and "guidance_attention" in caplog.text and "attentions.0" in caplog.text
    # the three files differ (seeded per map), so the mapping is not a copy of one file
    assert not torch.equal(encs["depth"].conv_in.weight, encs["render"].conv_in.weight)


def test_guidance_encoder_errors_name_the_key(tiny_release, layout, tmp_path):
    src = tiny_release / "guidance_encoder_depth.pth"
    cfg = layout.TINY_GUIDANCE

    f = _edit(src, tmp_path / "a.pth", lambda sd: sd.pop("guidance_attention.proj_out.bias"))
    with pytest.raises(CheckpointMismatch, match="missing guidance_attention.proj_out.bias") as e:
        load_guidance_encoder(f, cfg)
    assert e.value.missing == ["guidance_attention.proj_out.bias"]

    f = _edit(src, tmp_path / "b.pth", lambda sd: sd.__setitem__("attentions.9.norm.weight", torch.zeros(3)))
    with pytest.raises(CheckpointMismatch, match="unexpected attentions.9.norm.weight"):
        load_guidance_encoder(f, cfg)

    f = _edit(src, tmp_path / "c.pth", lambda sd: sd.__setitem__("conv_out.weight", torch.zeros(320, 32, 3, 3)))
    with pytest.raises(CheckpointMismatch, match=r"conv_out.weight \(16, 32, 3, 3\) vs \(320, 32, 3, 3\)") as e:
        load_guidance_encoder(f, cfg)
    assert e.value.mismatched == {"conv_out.weight": ((16, 32, 3, 3), (320, 32, 3, 3))}

    with pytest.raises(AssetMissing, match="guidance encoder"):
        load_guidance_encoder(tmp_path / "nope.pth", cfg)


class Thing:
    """A pickled object: refused by weights_only=True."""


def test_read_checkpoint_refuses_pickled_objects_and_non_state_dicts(tmp_path):
    torch.save({"a": Thing()}, tmp_path / "pickle.pth")
    with pytest.raises(InvalidInput, match="weights_only=True"):
        read_checkpoint(tmp_path / "pickle.pth")
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "mixed.pth")
    with pytest.raises(InvalidInput, match=r"flat state dict"):
        read_checkpoint(tmp_path / "mixed.pth")


def test_reference_unet_loads_without_its_tail_and_returns_the_last_up_block(tiny_release, layout):
    from diffusers import UNet2DConditionModel

    ref = load_reference_unet(tiny_release / "reference_unet.pth", layout.TINY_UNET_CONFIG)
    sd = torch.load(tiny_release / "reference_unet.pth", weights_only=True)
    assert set(ref.state_dict()) == set(sd)
    assert not any(k.startswith(("conv_norm_out.", "conv_out.")) for k in ref.state_dict())
    # a stock UNet with the same weights: the tail-less output is its last up block's output
    stock = UNet2DConditionModel(**layout.TINY_UNET_CONFIG).eval()
    stock.load_state_dict(sd, strict=False)
    seen = {}
    stock.up_blocks[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("h", out))
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        out = ref(x, 0, text).sample
        stock(x, 0, text)
    assert out.shape == (1, 16, 8, 8)
    torch.testing.assert_close(out, seen["h"])


def test_reference_unet_with_a_tail_is_refused(tiny_release, layout, tmp_path):
    f = _edit(tiny_release / "reference_unet.pth", tmp_path / "r.pth",
              lambda sd: sd.update({"conv_out.weight": torch.zeros(4, 16, 3, 3), "conv_out.bias": torch.zeros(4)}))
    with pytest.raises(CheckpointMismatch, match="unexpected conv_out.bias, conv_out.weight"):
        load_reference_unet(f, layout.TINY_UNET_CONFIG)


def test_denoising_unet_strict(tiny_release, layout, tmp_path):
    unet = load_denoising_unet(tiny_release / "denoising_unet.pth", layout.TINY_UNET_CONFIG)
    sd = torch.load(tiny_release / "denoising_unet.pth", weights_only=True)
    assert all(torch.equal(v, sd[k]) for k, v in unet.state_dict().items())
    f = _edit(tiny_release / "denoising_unet.pth", tmp_path / "d.pth", lambda sd: sd.pop("conv_in.weight"))
    with pytest.raises(CheckpointMismatch, match="missing conv_in.weight"):
        load_denoising_unet(f, layout.TINY_UNET_CONFIG)
    motion = torch.load(tiny_release / "motion_module.pth", weights_only=True)
    one = next(iter(motion))
    f = _edit(tiny_release / "denoising_unet.pth", tmp_path / "m.pth", lambda sd: sd.__setitem__(one, motion[one]))
    with pytest.raises(CheckpointMismatch, match=f"motion_module.pth.*unexpected {one}"):
        load_denoising_unet(f, layout.TINY_UNET_CONFIG)


def test_unet_config_from_a_folder(tiny_release, layout, tmp_path):
    import json

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**layout.TINY_UNET_CONFIG, "_class_name": "UNet2DConditionModel"}))
    unet = load_denoising_unet(tiny_release / "denoising_unet.pth", tmp_path / "unet")
    assert list(unet.config.block_out_channels) == list(layout.TINY_UNET_CONFIG["block_out_channels"])
    with pytest.raises(AssetMissing, match="config.json"):
        load_denoising_unet(tiny_release / "denoising_unet.pth", tmp_path / "nothing")


def test_motion_renaming_round_trip_and_matches_motion_adapter(layout):
    from diffusers import MotionAdapter

    cfg = layout.TINY_UNET_CONFIG
    ad = layout.released_motion_state(cfg, seed=5)
    # 2 temporal attentions per module, down 4 x 2 + mid 1 + up 4 x 3 = 21 modules
    assert len({k.split(".temporal_transformer")[0] for k in ad}) == 21
    renamed = animatediff_to_diffusers(ad)
    adapter = MotionAdapter(block_out_channels=tuple(cfg["block_out_channels"]), motion_layers_per_block=2,
                            motion_num_attention_heads=2, motion_norm_num_groups=8)
    own = adapter.state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[k].shape == own[k].shape for k in own)
    # the release's sinusoids equal diffusers' (same formula, max length 32)
    for k in own:
        if k.endswith("pos_embed.pe"):
            torch.testing.assert_close(renamed[k], own[k])
    back = diffusers_to_animatediff(renamed)
    assert set(back) == set(ad) and all(torch.equal(back[k], ad[k]) for k in ad)


def test_motion_renaming_refuses_unequal_sinusoids_and_foreign_keys(layout):
    ad = layout.released_motion_state(layout.TINY_UNET_CONFIG, seed=6)
    k1 = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    bad = dict(ad)
    bad[k1] = ad[k1] + 1.0
    with pytest.raises(CheckpointMismatch, match="attention_blocks.1.pos_encoder.pe"):
        animatediff_to_diffusers(bad)
    with pytest.raises(CheckpointMismatch, match="unexpected conv_in.weight"):
        animatediff_to_diffusers({**ad, "conv_in.weight": torch.zeros(1)})


def test_motion_adapter_and_denoiser_from_the_release(tiny_release, layout, tmp_path):
    cfg = layout.TINY_UNET_CONFIG
    kw = {"num_attention_heads": layout.TINY_MOTION["num_attention_heads"],
          "norm_num_groups": layout.TINY_MOTION["norm_num_groups"]}
    adapter = load_motion_adapter(tiny_release / "motion_module.pth", cfg, **kw)
    ad = torch.load(tiny_release / "motion_module.pth", weights_only=True)
    renamed = animatediff_to_diffusers(ad)
    assert all(torch.equal(v, renamed[k]) for k, v in adapter.state_dict().items())
    assert adapter.config.motion_max_seq_length == 32

    unet = load_denoising_unet(tiny_release / "denoising_unet.pth", cfg)
    den = build_denoiser(unet, adapter)
    full = den.state_dict()
    base = unet.state_dict()
    assert set(full) == set(base) | set(renamed)
    assert all(torch.equal(full[k], base[k]) for k in base)
    assert all(torch.equal(full[k], renamed[k]) for k in renamed)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        # UNetMotionModel takes one text embedding per frame (B * F, 77, C)
        y = den(x, 10, text.repeat_interleave(3, dim=0)).sample
    assert y.shape == (1, 4, 3, 8, 8) and torch.isfinite(y).all()

    def drop(sd):
        sd.pop("up_blocks.3.motion_modules.2.temporal_transformer.transformer_blocks.0.ff_norm.weight")

    f = _edit(tiny_release / "motion_module.pth", tmp_path / "mm.pth", drop)
    with pytest.raises(CheckpointMismatch, match="missing up_blocks.3.motion_modules.2.transformer_blocks.0.norm3.weight"):
        load_motion_adapter(f, cfg, **kw)


def test_full_size_layouts_on_the_meta_device(layout):
    """SD 1.5 sizes, keys and shapes only (meta tensors, nothing allocated): 686 denoiser keys, the
    reference file's 682, 21 motion modules whose renamed keys are MotionAdapter's."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    from facerig.engines.magicportrait.checkpoints import strip_reference_tail
    from facerig.engines.rigface.model import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        assert len(unet.state_dict()) == 686
        assert len(strip_reference_tail(unet).state_dict()) == 686 - 4
        ad = layout.released_motion_state(SD15_UNET_CONFIG)
        adapter = MotionAdapter(block_out_channels=tuple(SD15_UNET_CONFIG["block_out_channels"]))
    assert len({k.split(".temporal_transformer")[0] for k in ad}) == 21
    renamed = animatediff_to_diffusers(ad)
    own = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in renamed.items()} == own
    assert own["down_blocks.0.motion_modules.0.transformer_blocks.0.pos_embed.pe"] == (1, 32, 320)


def test_temporal_modules_normalise_each_frame(tiny_release, layout):
    """The release (AnimateDiff lineage) GroupNorms each frame; diffusers' AnimateDiffTransformer3D
    would pool the statistics over frames. FrameGroupNorm restores per-frame statistics."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    from facerig.engines.magicportrait.checkpoints import FrameGroupNorm

    g = torch.Generator().manual_seed(0)
    norm = FrameGroupNorm(4, 16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
        norm.bias.copy_(torch.randn(16, generator=g))
    x = torch.randn(2, 16, 3, 5, 5, generator=g) + torch.arange(3.0)[None, None, :, None, None] * 4
    y = norm(x)
    for f in range(3):
        torch.testing.assert_close(y[:, :, f], torch.nn.functional.group_norm(x[:, :, f], 4, norm.weight, norm.bias, 1e-5))
    pooled = torch.nn.functional.group_norm(x, 4, norm.weight, norm.bias, 1e-5)
    assert (pooled - y).abs().max() > 0.5  # the two differ when frames differ

    cfg = layout.TINY_UNET_CONFIG
    den = build_denoiser(load_denoising_unet(tiny_release / "denoising_unet.pth", cfg),
                         load_motion_adapter(tiny_release / "motion_module.pth", cfg, num_attention_heads=2,
                                             norm_num_groups=8))
    mods = [m for m in den.modules() if isinstance(m, AnimateDiffTransformer3D)]
    assert len(mods) == 21 and all(isinstance(m.norm, FrameGroupNorm) for m in mods)
    assert {m.norm.num_groups for m in mods} == {8}


def test_denoiser_temporal_norms_take_the_adapters_groups(tiny_release, layout):
    """UNetMotionModel builds its temporal norms with the UNet's norm_num_groups; the release's
    temporal modules always use 32 groups, whatever the UNet uses."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    cfg = {**layout.TINY_UNET_CONFIG, "block_out_channels": [32, 32, 64, 64]}
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg)
    ad = layout.released_motion_state(cfg, seed=7)
    from diffusers import MotionAdapter

    adapter = MotionAdapter(block_out_channels=(32, 32, 64, 64), motion_num_attention_heads=8, motion_norm_num_groups=32)
    adapter.load_state_dict(animatediff_to_diffusers(ad), strict=True)
    den = build_denoiser(unet, adapter)
    assert {m.norm.num_groups for m in den.modules() if isinstance(m, AnimateDiffTransformer3D)} == {32}


def test_unet_config_keys_of_other_diffusers_versions_are_ignored(tiny_release, layout, tmp_path):
    import json

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**layout.TINY_UNET_CONFIG, "_diffusers_version": "0.6.0",
                                                               "some_future_option": 1}))
    unet = load_denoising_unet(tiny_release / "denoising_unet.pth", tmp_path / "unet")
    assert unet.config.cross_attention_dim == 32


def test_saved_motion_module_is_the_released_file_again(tiny_release, layout, tmp_path):
    """A denoiser built from the release's motion_module.pth writes it back key for key and tensor
    for tensor (the AnimateDiff layout stage 2 exports); a 2D UNet is refused."""
    from facerig.engines.magicportrait.checkpoints import save_motion_module

    cfg = layout.TINY_UNET_CONFIG
    kw = {"num_attention_heads": layout.TINY_MOTION["num_attention_heads"],
          "norm_num_groups": layout.TINY_MOTION["norm_num_groups"]}
    unet = load_denoising_unet(tiny_release / "denoising_unet.pth", cfg)
    den = build_denoiser(unet, load_motion_adapter(tiny_release / "motion_module.pth", cfg, **kw))
    out = save_motion_module(den, tmp_path / "out" / "motion_module.pth")
    got = torch.load(out, weights_only=True)
    want = torch.load(tiny_release / "motion_module.pth", weights_only=True)
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k].float()) for k in want)
    with pytest.raises(InvalidInput, match="denoiser"):
        save_motion_module(unet, tmp_path / "x.pth")
