"""MagicPortrait guidance encoders (CPU, seeded): released key layout, zero output at init, shapes,
only the last attention runs, the three-encoder sum and its input checks."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.magicportrait.guidance import (
    RELEASED_GUIDANCE_CONFIG,
    TINY_GUIDANCE_CONFIG,
    GuidanceEncoder,
    guidance_features,
)
from facerig.errors import InvalidInput


def _randomise(enc: GuidanceEncoder, seed: int) -> GuidanceEncoder:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return enc.eval()


def _maps(seed: int = 0, b: int = 1, f: int = 2, s: int = 16):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 3, f, s, s, generator=g) for _ in range(3)]


def test_released_config_has_the_released_149_keys_and_shapes(layout):
    enc = GuidanceEncoder(**RELEASED_GUIDANCE_CONFIG)
    expected = layout.released_guidance_keys()
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert len(expected) == 149
    assert got == expected
    dead = enc.dead_keys()
    # five of the six per-level attentions and guidance_attention, 19 keys each
    assert len(dead) == 6 * 19
    assert {k.split(".transformer_blocks")[0].split(".norm")[0].split(".proj")[0] for k in dead} == {
        "attentions.0", "attentions.1", "attentions.2", "attentions.3", "attentions.4", "guidance_attention"}
    assert not any(k.startswith("attentions.5.") for k in dead)


def test_fresh_encoder_outputs_zero_with_the_released_shape():
    torch.manual_seed(0)
    enc = GuidanceEncoder(**RELEASED_GUIDANCE_CONFIG).eval()
    x = torch.rand(1, 3, 2, 64, 64)
    with torch.no_grad():
        y = enc(x)
    assert y.shape == (1, 320, 2, 8, 8)
    assert torch.count_nonzero(y) == 0
    assert enc.downsampling == 8


def test_only_the_last_attention_runs():
    enc = _randomise(GuidanceEncoder(**TINY_GUIDANCE_CONFIG), 1)
    x = _maps(2)[0]
    with torch.no_grad():
        y0 = enc(x)
        assert y0.abs().max() > 0
        for name, p in enc.named_parameters():
            if name.startswith(tuple(enc.dead_prefixes())):
                p.add_(1.0)
        assert torch.equal(enc(x), y0), "dead weights changed the output"
        enc.attentions[-1].proj_out.weight.add_(0.5)
        assert not torch.allclose(enc(x), y0), "the last attention must run"


def test_video_runs_frame_by_frame_and_image_rank_is_kept():
    enc = _randomise(GuidanceEncoder(**TINY_GUIDANCE_CONFIG), 3)
    x = _maps(4, b=2, f=3)[0]
    with torch.no_grad():
        y = enc(x)
        assert y.shape == (2, 16, 3, 4, 4)
        for f in range(3):
            torch.testing.assert_close(y[:, :, f], enc(x[:, :, f]), rtol=1e-5, atol=1e-6)


def test_guidance_features_is_the_sum_of_the_three_encoders():
    encs = {t: _randomise(GuidanceEncoder(**TINY_GUIDANCE_CONFIG), 10 + i)
            for i, t in enumerate(("depth", "normal", "render"))}
    d, n, r = _maps(5)
    with torch.no_grad():
        out = guidance_features(encs, d, n, r)
        ref = encs["depth"](d) + encs["normal"](n) + encs["render"](r)
        torch.testing.assert_close(out, ref)
        # a one-channel depth is repeated to three channels, as released
        torch.testing.assert_close(guidance_features(encs, d[:, :1], n, r),
                                   guidance_features(encs, d[:, :1].expand(-1, 3, -1, -1, -1), n, r))


def test_guidance_features_rejects_bad_maps_naming_them():
    encs = {t: GuidanceEncoder(**TINY_GUIDANCE_CONFIG) for t in ("depth", "normal", "render")}
    d, n, r = _maps(6)
    with pytest.raises(InvalidInput, match=r"^normal: .*\[0, 1\]"):
        guidance_features(encs, d, n * 2 - 1, r)  # signed normals are not what the released weights saw
    with pytest.raises(InvalidInput, match=r"^render: .*\(B, 3, F, H, W\)"):
        guidance_features(encs, d, n, r[:, :, 0])
    with pytest.raises(InvalidInput, match=r"^render: .*same"):
        guidance_features(encs, d, n, r[:, :, :1])
    with pytest.raises(InvalidInput, match=r"^encoders: .*missing \['render'\]"):
        guidance_features({k: encs[k] for k in ("depth", "normal")}, d, n, r)
    with pytest.raises(InvalidInput, match=r"^condition"):
        encs["depth"](torch.rand(1, 4, 16, 16))
