"""InstaFaceModel on a tiny SD-1.5-shaped config: shapes, guidance features reaching every
self-attention, identity tokens in the cross-attention, SD initialisation, save/load."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from facerig.engines.instaface.model import (
    TINY_UNET_CONFIG,
    GuidanceAddProcessor,
    IdentityProjection,
    InstaFaceModel,
    guidance_processors,
)
from facerig.engines.sd.reference import transformer_blocks
from facerig.errors import CheckpointMismatch, InvalidInput

from .conftest import CLIP_DIM, tiny_inputs, tiny_model


@pytest.fixture(scope="module")
def tiny() -> InstaFaceModel:
    return tiny_model().eval()


def _eps(m: InstaFaceModel, d: dict, *, t: int = 500, clip: bool = True, face=None, feats=None, text=True,
         use_guidance=True):
    with torch.no_grad():
        tok = m.identity_tokens(d["face"] if face is None else face, d["clip"] if clip else None)
        return m.predict_noise(d["noisy"], t, d["cond"], tok, d["text"] if text else None, guidance_features=feats,
                               use_guidance=use_guidance)


def test_shapes_and_one_guidance_processor_per_self_attention(tiny):
    d = tiny_inputs(batch=2)
    assert tiny.num_blocks == 16
    assert tiny.guidance_unet.conv_in.weight.shape[1] == 12 and tiny.diffusion_unet.conv_in.weight.shape[1] == 4
    tok = tiny.identity_tokens(d["face"], d["clip"])
    assert tok.shape == (1, 4, 32)
    procs = guidance_processors(tiny.diffusion_unet)
    assert len(procs) == 16 and all(isinstance(b.attn1.processor, GuidanceAddProcessor)
                                    for b in transformer_blocks(tiny.diffusion_unet))
    before = [p.calls for p in procs]
    eps = _eps(tiny, d)
    assert eps.shape == (2, 4, 8, 8) and torch.isfinite(eps).all()
    assert [p.calls - b for p, b in zip(procs, before, strict=True)] == [1] * 16
    # each guidance feature has the shape of the diffusion block's attn1 input (recorded there too)
    with torch.no_grad():
        ctx = tiny.context(tok, d["text"], 1)
        feats = tiny.guidance_features(d["cond"], 500, ctx)
    seen: list[tuple[int, ...]] = []
    hooks = [b.attn1.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[1:])))
             for b in transformer_blocks(tiny.diffusion_unet)]
    try:
        _eps(tiny, d)
    finally:
        for h in hooks:
            h.remove()
    assert [tuple(f.shape[1:]) for f in feats] == seen
    assert len({s[0] for s in seen}) == 4  # 64, 16, 4 tokens and the mid block's 1


def test_every_self_attention_depends_on_its_guidance_feature(tiny):
    d = tiny_inputs()
    with torch.no_grad():
        tok = tiny.identity_tokens(d["face"], d["clip"])
        feats = tiny.guidance_features(d["cond"], 500, tiny.context(tok, d["text"], 1))
    base = _eps(tiny, d, feats=feats)
    assert torch.equal(base, _eps(tiny, d))  # precomputed == computed in the call
    for i in range(len(feats)):
        zeroed = [torch.zeros_like(f) if j == i else f for j, f in enumerate(feats)]
        diff = (_eps(tiny, d, feats=zeroed) - base).abs().max().item()
        assert diff > 1e-6, f"block {i}: zeroing its guidance feature changed nothing"
    # and the guidance input (the fused 3D latents) reaches the output
    d2 = dict(d, cond=d["cond"] + 1.0)
    assert (_eps(tiny, d2) - base).abs().max() > 1e-4
    # guidance off = stock self-attention everywhere (no processor adds anything)
    procs = guidance_processors(tiny.diffusion_unet)
    before = [p.calls for p in procs]
    off = _eps(tiny, d, use_guidance=False)
    assert not torch.allclose(off, base) and [p.calls for p in procs] == before


def test_identity_tokens_change_the_output_face_and_clip(tiny):
    d = tiny_inputs()
    base = _eps(tiny, d)
    other_face = torch.randn(1, 128, generator=torch.Generator().manual_seed(5))
    assert (_eps(tiny, d, face=other_face) - base).abs().max() > 1e-4
    assert (_eps(tiny, d, clip=False) - base).abs().max() > 1e-4  # face-recognition tokens only
    assert (_eps(tiny, d, text=False) - base).abs().max() > 1e-4  # identity tokens without the prompt
    # the tokens reach the guidance network's cross-attention too
    tok = tiny.identity_tokens(d["face"], d["clip"])
    with torch.no_grad():
        f1 = tiny.guidance_features(d["cond"], 500, tiny.context(tok, None, 1))
        f2 = tiny.guidance_features(d["cond"], 500, tiny.context(tok + 1.0, None, 1))
    assert (f1[-1] - f2[-1]).abs().max() > 1e-5


def test_projection_without_clip_and_input_checks():
    p = IdentityProjection(cross_attention_dim=32, clip_dim=0, num_tokens=3, width=32, heads=2)
    assert p(torch.randn(2, 128)).shape == (2, 3, 32) and not p.uses_clip
    with pytest.raises(InvalidInput, match="clip_embedding"):
        p(torch.randn(2, 128), torch.randn(2, 8))
    with pytest.raises(InvalidInput, match="face_embedding"):
        p(torch.randn(2, 64))
    with pytest.raises(InvalidInput, match="width"):
        IdentityProjection(cross_attention_dim=32, width=30, heads=4)


def test_guidance_timestep_zero_ignores_the_step():
    m = tiny_model(guidance_timestep="zero").eval()
    d = tiny_inputs()
    tok = m.identity_tokens(d["face"], d["clip"])
    with torch.no_grad():
        ctx = m.context(tok, d["text"], 1)
        a = m.guidance_features(d["cond"], 900, ctx)
        b = m.guidance_features(d["cond"], 10, ctx)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(InvalidInput, match="guidance_timestep"):
        tiny_model(guidance_timestep="sometimes")


def test_save_load_round_trip_equal_outputs(tiny, tmp_path):
    d = tiny_inputs()
    tiny.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["diffusion_unet", "guidance_unet", "instaface.json",
                                                                  "projection"]
    back = InstaFaceModel.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(_eps(tiny, d), _eps(back, d))
    assert len(guidance_processors(back.diffusion_unet)) == 16
    # strict: a tampered file names the key
    from safetensors.torch import load_file, save_file

    f = tmp_path / "m" / "projection" / "diffusion_pytorch_model.safetensors"
    sd = load_file(f)
    sd.pop("proj_out.bias")
    save_file(sd, f)
    with pytest.raises(CheckpointMismatch, match="proj_out.bias"):
        InstaFaceModel.from_pretrained(tmp_path / "m")


def test_from_sd_unet_copies_and_guidance_conv_in_is_sd_on_equal_latents():
    torch.manual_seed(0)
    sd = UNet2DConditionModel(**TINY_UNET_CONFIG)
    m = InstaFaceModel.from_sd_unet(sd, clip_dim=CLIP_DIM, num_tokens=4, seed=0)
    dif, gui = m.diffusion_unet.state_dict(), m.guidance_unet.state_dict()
    for k, v in sd.state_dict().items():
        assert torch.equal(dif[k], v)
        if k != "conv_in.weight":
            assert torch.equal(gui[k], v)
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m.guidance_unet.conv_in(z.repeat(1, 3, 1, 1)), sd.conv_in(z), atol=1e-5)


def test_input_errors_name_the_argument(tiny):
    d = tiny_inputs()
    tok = tiny.identity_tokens(d["face"], d["clip"])
    with pytest.raises(InvalidInput, match="condition_latents"):
        tiny.predict_noise(d["noisy"], 1, d["cond"][:, :8], tok)
    with pytest.raises(InvalidInput, match="identity_tokens"):
        tiny.predict_noise(d["noisy"], 1, d["cond"], tok[..., :16])
    with pytest.raises(InvalidInput, match="text_embeds"):
        tiny.predict_noise(d["noisy"], 1, d["cond"], tok, d["text"][..., :8])
