"""Equality with the authors' own modules (their GuidanceEncoder and AnimateDiff VanillaTemporalModule),
random weights in the released layout, released sizes. Needs their public code: set
FACERIG_MAGICPORTRAIT_SRC to a folder holding their ``models/`` package (e.g. from
``git -C <snapshot> archive HEAD models | tar -x``) and have ``einops`` importable; skipped otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

SRC = os.environ.get("FACERIG_MAGICPORTRAIT_SRC")
pytestmark = pytest.mark.skipif(not SRC or not (Path(SRC) / "models" / "motion_module.py").is_file(),
                                reason="FACERIG_MAGICPORTRAIT_SRC (the authors' models/ folder) not set")


@pytest.fixture(scope="module")
def authors():
    pytest.importorskip("einops")
    saved_path, saved_mods = list(sys.path), {k: v for k, v in sys.modules.items() if k == "models" or k.startswith("models.")}
    for k in saved_mods:
        del sys.modules[k]
    sys.path.insert(0, str(SRC))
    try:
        import models.guidance_encoder as guidance  # type: ignore[import-not-found]
        import models.motion_module as motion  # type: ignore[import-not-found]

        yield guidance, motion
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            del sys.modules[k]
        sys.modules.update(saved_mods)


def _randomise(m: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_guidance_encoder_equals_the_authors(authors):
    from facerig.engines.magicportrait.guidance import RELEASED_GUIDANCE_CONFIG, GuidanceEncoder

    theirs = authors[0].GuidanceEncoder(320, 3, (16, 32, 96, 256)).eval()
    _randomise(theirs, 0)
    ours = GuidanceEncoder(**RELEASED_GUIDANCE_CONFIG).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(1, 3, 2, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_motion_module_equals_the_authors(authors):
    from diffusers import MotionAdapter

    from facerig.engines.magicportrait.checkpoints import animatediff_to_diffusers, per_frame_motion_norm

    kw = {"num_attention_heads": 8, "num_transformer_block": 1, "attention_block_types": ["Temporal_Self"] * 2,
          "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32, "temporal_attention_dim_div": 1}
    theirs = authors[1].get_motion_module(320, "Vanilla", kw).eval()
    _randomise(theirs, 2)
    pre = "down_blocks.0.motion_modules.0."
    renamed = animatediff_to_diffusers({pre + k: v for k, v in theirs.state_dict().items()})
    adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280)).eval()
    ours = adapter.down_blocks[0].motion_modules[0]
    ours.load_state_dict({k[len(pre):]: v for k, v in renamed.items()}, strict=True)
    per_frame_motion_norm(adapter)
    f = 5
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 320, f, 8, 8, generator=g) * 2 + torch.linspace(-3, 3, f)[None, None, :, None, None]
    with torch.no_grad():
        want = theirs(h, None, None)
        got = ours(h.permute(0, 2, 1, 3, 4).reshape(2 * f, 320, 8, 8), num_frames=f)
    got = got.reshape(2, f, 320, 8, 8).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_released_model_equals_the_authors_tiny(authors, tmp_path):
    """Their UNet3DConditionModel + reference UNet + ReferenceAttentionControl (write/read, 'full',
    fp16 bank) + guidance encoders, random weights, saved in the released layout and loaded with
    load_released: the conditional and the unconditional (empty bank) predictions agree."""
    from models.guidance_encoder import GuidanceEncoder as TheirGuidance  # type: ignore[import-not-found]
    from models.mutual_self_attention import ReferenceAttentionControl  # type: ignore[import-not-found]
    from models.unet_2d_condition import UNet2DConditionModel as Their2D  # type: ignore[import-not-found]
    from models.unet_3d import UNet3DConditionModel as Their3D  # type: ignore[import-not-found]

    from facerig.engines.magicportrait import load_released
    from facerig.engines.rigface.model import SD15_UNET_CONFIG

    # widths multiple of 32: their temporal modules always use 32 norm groups
    cfg = {**SD15_UNET_CONFIG, "block_out_channels": [32, 32, 64, 64], "attention_head_dim": 2,
           "cross_attention_dim": 32, "norm_num_groups": 8, "sample_size": 8}
    extra = {"use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False,
             "unet_use_temporal_attention": False, "use_motion_module": True,
             "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
             "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
             "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                      "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                      "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                                      "temporal_attention_dim_div": 1}}
    c3 = {**cfg, "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
          "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3, "mid_block_type": "UNetMidBlock3DCrossAttn"}
    den = Their3D.from_config(c3, **extra).eval()
    ref = Their2D.from_config(cfg).eval()
    _randomise(den, 1)
    _randomise(ref, 2)
    types = ("depth", "normal", "render")
    gcfg = {"guidance_embedding_channels": 32, "guidance_input_channels": 3, "block_out_channels": (8, 32, 32),
            "attention_num_heads": 8}
    gens = {}
    for i, t in enumerate(types):
        gens[t] = TheirGuidance(32, 3, (8, 32, 32)).eval()
        _randomise(gens[t], 10 + i)
        torch.save(gens[t].state_dict(), tmp_path / f"guidance_encoder_{t}.pth")
    dsd = den.state_dict()
    motion = {k: v for k, v in dsd.items() if ".motion_modules." in k}
    torch.save({k: v for k, v in dsd.items() if k not in motion}, tmp_path / "denoising_unet.pth")
    torch.save(motion, tmp_path / "motion_module.pth")
    torch.save(ref.state_dict(), tmp_path / "reference_unet.pth")  # their class has no conv_norm_out/conv_out
    mp = load_released(tmp_path, cfg, guidance_config=gcfg, motion_heads=8, motion_norm_groups=32)

    writer = ReferenceAttentionControl(ref, do_classifier_free_guidance=False, mode="write", fusion_blocks="full")
    reader = ReferenceAttentionControl(den, do_classifier_free_guidance=False, mode="read", fusion_blocks="full")
    g = torch.Generator().manual_seed(5)
    f = 4
    lat = torch.randn(1, 4, f, 8, 8, generator=g)
    ref_lat = torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, 32, generator=g)
    maps = [torch.rand(1, 3, f, 32, 32, generator=g) for _ in range(3)]
    with torch.no_grad():
        feats_theirs = sum(gens[t](m) for t, m in zip(types, maps, strict=True))
        feats = mp.guidance(*maps)
        torch.testing.assert_close(feats, feats_theirs, rtol=1e-5, atol=1e-6)
        ref(ref_lat, torch.zeros(1, dtype=torch.long), encoder_hidden_states=text, return_dict=False)
        reader.update(writer)
        want = den(lat, torch.tensor([500]), guidance_fea=feats_theirs, encoder_hidden_states=text).sample
        bank = mp.reference_bank(ref_lat, text)
        got = mp.predict(lat, 500, text, feats, bank)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        reader.clear()
        want_u = den(lat, torch.tensor([500]), guidance_fea=feats_theirs, encoder_hidden_states=text).sample
        got_u = mp.predict(lat, 500, text, feats, bank, uncond=True)
        torch.testing.assert_close(got_u, want_u, rtol=1e-5, atol=1e-5)
        assert (want - want_u).abs().max() > 1e-3  # the reference matters in their model too
        # classifier-free guidance in ONE batched call: their reader with the uncond mask over
        # [uncond, cond], ours with a per-row drop; the reference UNet runs on the doubled batch
        cfg_reader = ReferenceAttentionControl(den, do_classifier_free_guidance=True, mode="read", fusion_blocks="full")
        writer.clear()
        ref(ref_lat.repeat(2, 1, 1, 1), torch.zeros(2, dtype=torch.long), encoder_hidden_states=text.repeat(2, 1, 1),
            return_dict=False)
        cfg_reader.update(writer)
        want2 = den(lat.repeat(2, 1, 1, 1, 1), torch.tensor([500]), guidance_fea=feats_theirs.repeat(2, 1, 1, 1, 1),
                    encoder_hidden_states=text.repeat(2, 1, 1)).sample
        mp.bank.set_drop([True, False])
        try:
            got2 = mp.predict(lat.repeat(2, 1, 1, 1, 1), 500, text, feats.repeat(2, 1, 1, 1, 1), bank)
        finally:
            mp.bank.set_drop(None)
        torch.testing.assert_close(got2, want2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got2[:1], got_u, rtol=1e-5, atol=1e-5)
