"""load_released on the tiny release the tests write (CPU, seeded): reference bank, guidance, predict;
the reference drop (uncond, and per row in one batched call), the repeat over frames, per-sample
independence, and the guidance features added after conv_in."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.magicportrait import load_released
from facerig.engines.magicportrait.checkpoints import build_denoiser, load_denoising_unet, load_motion_adapter
from facerig.engines.sd.reference import transformer_blocks
from facerig.errors import InvalidInput

F = 3


@pytest.fixture(scope="module")
def mp(tiny_release, layout):
    return load_released(tiny_release, layout.TINY_UNET_CONFIG, guidance_config=layout.TINY_GUIDANCE,
                         motion_heads=layout.TINY_MOTION["num_attention_heads"],
                         motion_norm_groups=layout.TINY_MOTION["norm_num_groups"])


def _inputs(seed: int, b: int = 1):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, 4, F, 8, 8, generator=g)
    ref = torch.randn(b, 4, 8, 8, generator=g)
    text = torch.randn(b, 77, 32, generator=g)
    maps = [torch.rand(b, 3, F, 32, 32, generator=g) for _ in range(3)]
    return lat, ref, text, maps


def test_shapes_and_block_pairing(mp):
    lat, ref, text, maps = _inputs(0)
    bank = mp.reference_bank(ref, text)
    blocks = transformer_blocks(mp.denoiser)
    assert len(bank) == len(blocks) == len(transformer_blocks(mp.reference_unet))
    # the temporal modules' blocks are not readers
    assert all(".motion_modules." not in n for n, m in mp.denoiser.named_modules() if m in blocks)
    assert [s.shape[-1] for s in bank] == [b.norm1.normalized_shape[0] for b in blocks]
    feats = mp.guidance(*maps)
    assert feats.shape == (1, 16, F, 8, 8) and feats.abs().max() > 0
    out = mp.predict(lat, 500, text, feats, bank)
    assert out.shape == (1, 4, F, 8, 8) and torch.isfinite(out).all()


def test_uncond_drops_the_reference_and_equals_the_stock_denoiser(mp, tiny_release, layout):
    lat, ref, text, maps = _inputs(1)
    feats = mp.guidance(*maps)
    bank_a = mp.reference_bank(ref, text)
    bank_b = mp.reference_bank(ref + 1.0, text)
    u_a = mp.predict(lat, 400, text, feats, bank_a, uncond=True)
    u_b = mp.predict(lat, 400, text, feats, bank_b, uncond=True)
    c_a = mp.predict(lat, 400, text, feats, bank_a)
    c_b = mp.predict(lat, 400, text, feats, bank_b)
    torch.testing.assert_close(u_a, u_b, rtol=0, atol=0)
    assert (c_a - c_b).abs().max() > 1e-4, "the reference must change the conditional prediction"
    assert (c_a - u_a).abs().max() > 1e-4
    # the uncond prediction = a stock UNetMotionModel (stock attention) with the features added after conv_in
    cfg = layout.TINY_UNET_CONFIG
    den = build_denoiser(load_denoising_unet(tiny_release / "denoising_unet.pth", cfg),
                         load_motion_adapter(tiny_release / "motion_module.pth", cfg, num_attention_heads=2,
                                             norm_num_groups=8))
    add = feats.permute(0, 2, 1, 3, 4).reshape(F, 16, 8, 8)
    den.conv_in.register_forward_hook(lambda m, a, out: out + add)
    with torch.no_grad():
        ref_out = den(lat, 400, text.repeat_interleave(F, dim=0)).sample
    torch.testing.assert_close(u_a, ref_out, rtol=1e-5, atol=1e-5)


def test_guidance_features_enter_after_conv_in(mp):
    lat, ref, text, maps = _inputs(2)
    bank = mp.reference_bank(ref, text)
    feats = mp.guidance(*maps)
    with_f = mp.predict(lat, 300, text, feats, bank)
    without = mp.predict(lat, 300, text, torch.zeros_like(feats), bank)
    assert (with_f - without).abs().max() > 1e-4
    with pytest.raises(InvalidInput, match="guidance_features"):
        mp.predict(lat, 300, text, feats[:, :, :2], bank)
    with pytest.raises(InvalidInput, match="guidance_features"):
        mp.predict(lat, 300, text, feats[..., :4, :4], bank)
    with pytest.raises(InvalidInput, match="^bank"):
        mp.predict(lat, 300, text, feats, None)


def test_batch_rows_are_independent_with_one_reference_each(mp):
    """The reference of sample i reaches all frames of sample i and no other (frames repeat
    batch-major), and the text is repeated likewise."""
    lat, ref, text, maps = _inputs(3, b=2)
    feats = mp.guidance(*maps)
    bank2 = mp.reference_bank(ref, text)
    both = mp.predict(lat, 700, text, feats, bank2)
    for i in range(2):
        bank_i = mp.reference_bank(ref[i:i + 1], text[i:i + 1])
        one = mp.predict(lat[i:i + 1], 700, text[i:i + 1], feats[i:i + 1], bank_i)
        torch.testing.assert_close(both[i:i + 1], one, rtol=1e-4, atol=1e-5)
    # a batch-1 bank and a batch-1 text serve every sample
    bank1 = mp.reference_bank(ref[:1], text[:1])
    shared = mp.predict(lat, 700, text[:1], feats, bank1)
    rep = mp.predict(lat, 700, text[:1].expand(2, -1, -1), feats, [s.expand(2, -1, -1) for s in bank1])
    torch.testing.assert_close(shared, rep, rtol=1e-5, atol=1e-6)


def test_batched_uncond_cond_with_a_per_row_drop(mp):
    """[uncond, cond] in ONE call (bank.set_drop) equals the two separate calls."""
    lat, ref, text, maps = _inputs(4)
    feats = mp.guidance(*maps)
    bank = mp.reference_bank(ref, text)
    u = mp.predict(lat, 600, text, feats, bank, uncond=True)
    c = mp.predict(lat, 600, text, feats, bank)
    mp.bank.set_drop([True, False])
    try:
        both = mp.predict(lat.repeat(2, 1, 1, 1, 1), 600, text, feats.repeat(2, 1, 1, 1, 1), bank)
    finally:
        mp.bank.set_drop(None)
    torch.testing.assert_close(both[:1], u, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both[1:], c, rtol=1e-4, atol=1e-5)


def test_reference_states_are_rounded_to_fp16_as_released(mp):
    lat, ref, text, maps = _inputs(5)
    feats = mp.guidance(*maps)
    bank = mp.reference_bank(ref, text)
    assert mp.bank.round_to == torch.float16
    rounded = [s.half().float() for s in bank]
    torch.testing.assert_close(mp.predict(lat, 100, text, feats, bank), mp.predict(lat, 100, text, feats, rounded),
                               rtol=0, atol=0)
