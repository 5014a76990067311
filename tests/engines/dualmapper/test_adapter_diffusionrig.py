"""The DiffusionRig RigGenerator on a TINY random DiffusionRig (32 px): shapes, gradients to w and
psi, checkpointing on/off equal, the same images as the pipeline's own DDIM sampler."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.dualmapper.adapters import build_generator
from facerig.engines.dualmapper.generator import check_generator
from facerig.errors import AssetMissing, InvalidInput


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    params = _fit_one(astronaut, model, "largest", "astronaut")
    return astronaut, params, model


def _tiny_pipeline(model, seed: int = 0):
    from facerig.engines.diffusionrig import (
        TINY_UNET_CONFIG,
        DiffusionRigPipeline,
        DiffusionRigUNet,
        GlobalEncoder,
    )

    torch.manual_seed(seed)
    unet = DiffusionRigUNet(**{**TINY_UNET_CONFIG, "face_model": model.fingerprint()})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random, non-zero weights everywhere (the zero-initialised output conv too)
        for p in unet.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return DiffusionRigPipeline(unet, GlobalEncoder())


@pytest.fixture(scope="module")
def gen(fitted):
    image, params, model = fitted
    return build_generator("diffusionrig", image, params, model, pipeline=_tiny_pipeline(model), steps=3)


def test_shapes_and_protocol(gen, fitted):
    _, params, model = fitted
    check_generator(gen)
    assert gen.w_shape == (8, 8) and gen.image_size == (32, 32)
    assert gen.psi_names == tuple(model.expression_names)
    w0, psi0 = gen.initial()
    with torch.no_grad():
        out = gen.render(w0, psi0)
        two = gen.render(w0, torch.cat([psi0, psi0]))
    assert out.shape == (1, 3, 32, 32) and two.shape == (2, 3, 32, 32)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(two[0], out[0], atol=1e-5) and torch.allclose(two[1], out[0], atol=1e-5)
    lm = gen.landmarks(psi0)
    assert lm.shape == (1, model.landmark_index.numel(), 2)
    assert bool(((lm > -2) & (lm < 34)).all())  # the face fills the FFHQ crop
    assert gen.points5().shape == (1, 5, 2)


def test_same_images_as_the_pipeline_sampler(gen):
    w0, psi0 = gen.initial()
    with torch.no_grad():
        out = gen.render(w0, psi0)
        ref = gen.pipe(gen.cond(psi0), global_code=w0.reshape(1, -1), noise=gen._noise, num_inference_steps=3)
    assert float((out - ref).abs().max()) < 1e-4


def _grads(gen, checkpoint: bool):
    gen.checkpoint = checkpoint
    w0, psi0 = gen.initial()
    w = w0.clone().requires_grad_()
    psi = psi0.clone()
    psi[0, gen.psi_names.index("jawOpen")] = 0.5
    psi.requires_grad_()
    out = gen.render(w, psi)
    proj = torch.rand(out.shape, generator=torch.Generator().manual_seed(3))
    (out * proj).sum().backward()
    return out.detach(), w.grad, psi.grad


def test_gradients_and_checkpointing_equal(gen):
    try:
        out_c, gw_c, gp_c = _grads(gen, True)
        out_n, gw_n, gp_n = _grads(gen, False)
    finally:
        gen.checkpoint = True
    for g in (gw_c, gp_c):
        assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    assert torch.equal(out_c, out_n)
    assert torch.allclose(gw_c, gw_n, rtol=1e-5, atol=1e-7)
    assert torch.allclose(gp_c, gp_n, rtol=1e-5, atol=1e-7)
    # the generator's weights are frozen: nothing accumulates there
    assert all(p.grad is None for p in gen.pipe.unet.parameters())


def test_missing_weights_and_bad_options(fitted, tmp_path):
    image, params, model = fitted
    with pytest.raises(AssetMissing, match="DiffusionRig weights"):
        build_generator("diffusionrig", image, params, model)
    with pytest.raises(AssetMissing, match="nope"):
        build_generator("diffusionrig", image, params, model, weights=tmp_path / "nope")
    pipe = _tiny_pipeline(model)
    with pytest.raises(InvalidInput, match="tokens"):
        build_generator("diffusionrig", image, params, model, pipeline=pipe, tokens=7)
    with pytest.raises(InvalidInput, match="steps"):
        build_generator("diffusionrig", image, params, model, pipeline=pipe, steps=0)


def test_builds_from_a_saved_pipeline_folder(fitted, tmp_path, gen):
    image, params, model = fitted
    gen.pipe.save_pretrained(tmp_path / "w")
    again = build_generator("diffusionrig", image, params, model, weights=tmp_path / "w", steps=3)
    w0, psi0 = gen.initial()
    w1, psi1 = again.initial()
    assert torch.allclose(w0, w1, atol=1e-6) and torch.equal(psi0, psi1)
    with torch.no_grad():
        assert torch.allclose(again.render(w1, psi1), gen.render(w0, psi0), atol=1e-5)
