"""Objectives: differentiable HF CLIP adapter, CLIP subspace objective, identity, L2, and the offline
expression objective (re-estimated from pixels, not circular)."""

from __future__ import annotations

import logging

import pytest
import torch

from facerig.engines.dualmapper.objective import (
    OFFLINE_ESTIMATOR,
    ClipObjective,
    DeltaPenalty,
    HFClipEncoder,
    IdentityObjective,
    OfflineExpressionObjective,
    expression_target,
)
from facerig.errors import AssetMissing, InvalidInput

PSI_NAMES = ("mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R", "browInnerUp", "browDown_L", "browDown_R",
             "jawOpen")  # the tiny generator's (conftest)


def _identity_or_skip():
    obj = IdentityObjective()
    try:
        obj.loss  # noqa: B018 - loads the dlib port once
    except AssetMissing as e:
        pytest.skip(f"identity network unavailable: {e}")
    return obj


def test_hf_clip_encoder_is_differentiable(tiny_clip_dir):
    clip = HFClipEncoder(tiny_clip_dir)
    assert clip.image_size == 32 and "CLIP" in clip.estimator
    x = torch.rand(2, 3, 64, 48, requires_grad=True)  # resized (shortest side) and centre-cropped
    z = clip.encode_image(x)
    assert z.shape == (2, 16)
    z.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    t = clip.encode_text(["a smiling person", "a sad face"])
    assert t.shape == (2, 16) and not t.requires_grad
    assert not torch.allclose(t[0], t[1])
    with pytest.raises(InvalidInput, match="clip_model"):
        HFClipEncoder(tiny_clip_dir / "nowhere")
    same = HFClipEncoder(clip.model, clip.tokenizer)  # a model object and its tokenizer
    assert torch.allclose(same.encode_text(["a smiling person"]), t[:1], atol=1e-5)
    with pytest.raises(InvalidInput, match="tokenizer"):
        HFClipEncoder(clip.model)


def test_clip_objective_targets_the_subspace_projection(tiny_clip_dir, tiny_gen):
    clip = HFClipEncoder(tiny_clip_dir)
    src = tiny_gen.source_image()
    same = ClipObjective(clip, "smile", amplify=1.0).bind(tiny_gen)
    assert float(same(src)["clip"]) < 1e-5  # alpha 1: the target is the source's own embedding
    obj = ClipObjective(clip, "smile", amplify=3.0, text="a person with a big smile")
    assert obj.prompts[obj.index] == "a person with a big smile"
    fn = obj.bind(tiny_gen)
    x = src.clone().requires_grad_(True)
    loss = fn(x)["clip"]
    assert loss > 1e-4
    loss.backward()
    assert x.grad.abs().sum() > 0


def test_identity_objective_is_zero_at_the_source(tiny_gen):
    obj = _identity_or_skip()
    fn = obj.bind(tiny_gen)
    src = tiny_gen.source_image()
    assert float(fn(src)["identity"]) < 1e-5
    w0, psi0 = tiny_gen.initial()
    w = (w0 + torch.randn(w0.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    loss = fn(tiny_gen.render(w, psi0))["identity"]
    assert loss > 1e-4
    loss.backward()
    assert w.grad.abs().sum() > 0


def test_delta_penalty_hand_values():
    dw = torch.zeros(2, 4, 3)
    dw[0, 0, 0] = 2.0  # ||dw_0||^2 = 4, / N=4 -> 1; batch mean 0.5
    dpsi = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # 25 and 0 -> 12.5
    t = DeltaPenalty(w_weight=0.3, psi_weight=0.7)(dw, dpsi)
    assert float(t["l2_dw"]) == pytest.approx(0.5) and float(t["l2_dpsi"]) == pytest.approx(12.5)
    # a factor per coefficient: 9 * 1 + 16 * 10 = 169 -> batch mean 84.5
    s = DeltaPenalty(psi_scale=[1.0, 10.0])(dw, dpsi)
    assert float(s["l2_dpsi"]) == pytest.approx(84.5)
    # a coefficient that may decrease freely: only positive deltas take the factor
    s = DeltaPenalty(psi_scale=[10.0, 10.0], psi_scale_down=[1.0, 10.0])(dw, -dpsi)
    assert float(s["l2_dpsi"]) == pytest.approx((9 * 1 + 16 * 10) / 2)
    s = DeltaPenalty(psi_scale=[10.0, 10.0], psi_scale_down=[1.0, 10.0])(dw, dpsi)
    assert float(s["l2_dpsi"]) == pytest.approx((9 * 10 + 16 * 10) / 2)
    with pytest.raises(InvalidInput, match="psi_scale"):
        DeltaPenalty(psi_scale=[1.0, 2.0, 3.0])(dw, dpsi)
    with pytest.raises(InvalidInput, match="psi_scale"):
        DeltaPenalty(psi_scale=[-1.0, 1.0])


def test_tiny_generator_names(tiny_gen):
    assert tiny_gen.psi_names == PSI_NAMES


def test_expression_target_from_text_and_explicit():
    psi0 = torch.full((1, len(PSI_NAMES)), 0.1)
    tgt, u, info = expression_target("smile a lot", PSI_NAMES, psi0, text_backend="keyword")
    assert info["preset"] == "smile" and info["intensity"] == 1.0
    i = PSI_NAMES.index("mouthSmile_L")
    assert float(tgt[i]) == pytest.approx(0.9) and float(u[i]) == 1.0
    j = PSI_NAMES.index("eyeBlink_L")  # not in the smile recipe: kept at psi0, low weight
    assert float(tgt[j]) == pytest.approx(0.1) and float(u[j]) == pytest.approx(0.1)
    assert float(tgt[PSI_NAMES.index("jawOpen")]) == pytest.approx(0.12)  # the strong smile's jaw
    assert "cheekSquint_L" in info["ignored"]
    tgt, u, info = expression_target("x", PSI_NAMES, psi0, target_psi={"jawOpen": 0.5})
    assert info["source"] == "target_psi" and float(tgt[PSI_NAMES.index("jawOpen")]) == 0.5
    with pytest.raises(InvalidInput, match="generator.psi_names"):
        expression_target("smile", ("exp_0", "exp_1", "jaw"), torch.zeros(1, 3), text_backend="keyword")
    with pytest.raises(InvalidInput, match="target_psi"):
        expression_target("x", PSI_NAMES, psi0, target_psi={"nope": 1.0})


def test_offline_estimate_tracks_the_true_psi(tiny_gen, caplog):
    with caplog.at_level(logging.INFO, logger="facerig.engines.dualmapper.objective"):
        obj = OfflineExpressionObjective("smile", text_backend="keyword")
    assert OFFLINE_ESTIMATOR in caplog.text and obj.estimator == OFFLINE_ESTIMATOR
    fn = obj.bind(tiny_gen)
    assert fn.info["estimator"] == OFFLINE_ESTIMATOR and fn.info["landmarks"] == 12  # the nose never moves
    w0, psi0 = tiny_gen.initial()
    g = torch.Generator().manual_seed(0)
    true = torch.rand(8, len(PSI_NAMES), generator=g) * 0.6
    with torch.no_grad():
        est = fn.estimate(tiny_gen.render(w0.expand(8, -1, -1), true))
    err = (est - true).abs()
    assert float(err.max()) < 0.05, err
    # the estimate follows the pixels, not the psi the caller holds: other colours, same motion
    with torch.no_grad():
        est2 = fn.estimate(tiny_gen.render(w0.expand(8, -1, -1) + 0.3, true))
    assert float((est2 - true).abs().max()) < 0.08


def test_offline_objective_is_not_circular(make_gen):
    """(1) a generator whose render ignores psi: zero gradient to psi, constant objective."""
    blind = make_gen(seed=0, psi_blind=True)
    fn = OfflineExpressionObjective("smile", text_backend="keyword").bind(blind)
    w0, psi0 = blind.initial()
    values = []
    w = w0.clone().requires_grad_(True)  # the loss has a graph (through w), just none to psi
    for p in (psi0, psi0 + 0.4, torch.ones_like(psi0)):
        psi = p.clone().requires_grad_(True)
        loss = fn(blind.render(w, psi))["expression"]
        gw, gpsi = torch.autograd.grad(loss, (w, psi), allow_unused=True)
        assert gw is not None and gpsi is None
        values.append(float(loss.detach()))
    assert max(values) - min(values) == 0.0 and values[0] > 0.1
    # (2) the same objective on a generator that moves pixels with psi does see psi, and a gradient
    # step on psi lowers it towards the smile recipe
    gen = make_gen(seed=0)
    fn = OfflineExpressionObjective("smile", text_backend="keyword").bind(gen)
    psi = psi0.clone().requires_grad_(True)
    loss = fn(gen.render(w0, psi))["expression"]
    loss.backward()
    i = PSI_NAMES.index("mouthSmile_L")
    assert float(psi.grad[0, i]) < 0  # increasing the smile lowers the loss
    with torch.no_grad():
        after = fn(gen.render(w0, psi - 0.5 * psi.grad))["expression"]
    assert float(after) < float(loss.detach())


def test_offline_landmark_loss_is_lowest_at_the_target(tiny_gen):
    """compare="landmarks": the tracked displacements of a render at the recipe's psi match the
    target displacements (generator.landmarks(psi*), fixed) without the shrinkage of the psi re-fit,
    and the loss is lowest there, higher for half and for 1.5 x the motion."""
    fn = OfflineExpressionObjective("smile", text_backend="keyword").bind(tiny_gen)
    assert fn.info["compare"] == "landmarks"
    w0, psi0 = tiny_gen.initial()
    tgt = fn.target[None]
    losses = {}
    with torch.no_grad():
        for a in (0.0, 0.5, 1.0, 1.5):
            psi = psi0 + a * (tgt - psi0)
            img = tiny_gen.render(w0, psi)
            losses[a] = float(fn(img)["expression"])
            if a == 1.0:
                d, _ = fn.track_confidence(img)
                t = fn.target_displacement
                gain = float((d[0] * t).sum() / t.pow(2).sum())
    assert 0.9 < gain < 1.1, gain
    assert losses[1.0] < 0.05 < losses[0.5] < losses[0.0], losses
    assert losses[1.0] < losses[1.5], losses
    # the psi comparison is still there
    fp = OfflineExpressionObjective("smile", text_backend="keyword", compare="psi").bind(tiny_gen)
    with torch.no_grad():
        assert float(fp(tiny_gen.render(w0, tgt))["expression"]) < float(fp(tiny_gen.render(w0, psi0))["expression"])
    with pytest.raises(InvalidInput, match="compare"):
        OfflineExpressionObjective("smile", compare="clip")
