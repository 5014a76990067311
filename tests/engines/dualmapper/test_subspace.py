"""Subspace-projection targets against hand-computed cases."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from facerig.engines.dualmapper.subspace import (
    DEFAULT_PROMPTS,
    EXPRESSION_TARGETS,
    NEUTRAL_PROMPT,
    subspace_coefficients,
    subspace_target,
    target_index,
)
from facerig.errors import InvalidInput

EX, EY, EZ = torch.eye(3, dtype=torch.float64)


def _t(*rows):
    return torch.stack([torch.as_tensor(r, dtype=torch.float64) for r in rows])


def test_orthogonal_prompts_hand_case():
    e = torch.tensor([[1.0, 1.0, 1.0]]) * 5  # the image embedding is normalised first
    t = _t(EX * 2, EY)  # and so are the prompts
    assert torch.allclose(subspace_coefficients(e, t), torch.tensor([[1, 1]], dtype=torch.float64) / math.sqrt(3))
    # target 0, alpha 2: e + c0 t0 = (2, 1, 1)/sqrt3 -> (2, 1, 1)/sqrt6
    out = subspace_target(e, t, 0, amplify=2.0)
    assert torch.allclose(out, torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64) / math.sqrt(6))
    # alpha 3 on prompt 1: (1, 3, 1)/sqrt11
    out = subspace_target(e, t, 1, amplify=3.0)
    assert torch.allclose(out, torch.tensor([[1.0, 3.0, 1.0]], dtype=torch.float64) / math.sqrt(11))
    # alpha 0 removes the target component: (0, 1, 1)/sqrt2
    out = subspace_target(e, t, 0, amplify=0.0)
    assert torch.allclose(out, torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64) / math.sqrt(2))


def test_alpha_one_is_the_identity():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(4, 16, generator=g)
    t = torch.randn(7, 16, generator=g)
    for comp in ("coefficient", "projection"):
        out = subspace_target(e, t, 3, amplify=1.0, component=comp)
        assert torch.allclose(out, (e / e.norm(dim=1, keepdim=True)).double(), atol=1e-12)


def test_non_orthogonal_coefficient_vs_projection(caplog):
    # t0 = x, t1 = (x + y)/sqrt2, e = y: least squares gives e = -1 t0 + sqrt2 t1
    e = _t(EY)
    t = _t(EX, EX + EY)
    assert torch.allclose(subspace_coefficients(e, t), torch.tensor([[-1.0, math.sqrt(2)]], dtype=torch.float64))
    # coefficient: e + (alpha-1) c1 t1 = y + sqrt2 (x+y)/sqrt2 = (1, 2, 0) -> /sqrt5
    out = subspace_target(e, t, 1, amplify=2.0)
    assert torch.allclose(out, torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64) / math.sqrt(5))
    # projection on t1: (e.t1) t1 = (1/sqrt2)(x+y)/sqrt2 = (0.5, 0.5, 0): e + that = (0.5, 1.5, 0) -> /sqrt2.5
    out = subspace_target(e, t, 1, amplify=2.0, component="projection")
    assert torch.allclose(out, torch.tensor([[0.5, 1.5, 0.0]], dtype=torch.float64) / math.sqrt(2.5))
    # the target-0 coefficient is negative: amplifying moves away from t0, and it is said so
    with caplog.at_level(logging.WARNING, logger="facerig.engines.dualmapper.subspace"):
        out = subspace_target(e, t, 0, amplify=2.0)  # y - x -> (-1, 1, 0)/sqrt2
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0, 0.0]], dtype=torch.float64) / math.sqrt(2))
    assert "moves them away" in caplog.text


def test_rank_deficient_prompts():
    e = torch.tensor([[1.0, 1.0, 1.0]])
    t = _t(EX, EX * 3, EY)  # prompt 1 duplicates prompt 0 (after normalisation)
    c = subspace_coefficients(e, t)
    s3 = math.sqrt(3)
    assert torch.allclose(c, torch.tensor([[0.5 / s3, 0.5 / s3, 1 / s3]], dtype=torch.float64))  # min-norm split
    # target 2 (independent prompt), alpha 3: (1, 3, 1)/sqrt11
    assert torch.allclose(subspace_target(e, t, 2, amplify=3.0),
                          torch.tensor([[1.0, 3.0, 1.0]], dtype=torch.float64) / math.sqrt(11))
    # target 0 (one of two copies), alpha 3: e + 2 * (0.5/sqrt3) x = (2, 1, 1)/sqrt3 -> /sqrt6
    assert torch.allclose(subspace_target(e, t, 0, amplify=3.0),
                          torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64) / math.sqrt(6))
    assert torch.isfinite(subspace_target(e, _t(EX, EX, EX), 1, amplify=5.0)).all()


def test_residual_outside_the_span_is_preserved():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(3, 12, generator=g, dtype=torch.float64)
    t = torch.randn(4, 12, generator=g, dtype=torch.float64)
    tn = t / t.norm(dim=1, keepdim=True)
    en = e / e.norm(dim=1, keepdim=True)
    q, _ = torch.linalg.qr(tn.T)
    proj = q @ q.T
    k = 2
    out = subspace_target(e, t, k, amplify=4.0)
    # undo the final normalisation with the known unnormalised norm: e + 3 c_k t_k
    c = subspace_coefficients(e, t)
    raw = en + 3 * c[:, k:k + 1] * tn[k]
    assert torch.allclose(out, raw / raw.norm(dim=1, keepdim=True))
    assert torch.allclose((out * raw.norm(dim=1, keepdim=True)) @ (torch.eye(12, dtype=torch.float64) - proj),
                          en @ (torch.eye(12, dtype=torch.float64) - proj), atol=1e-12)
    # and within the span only the target direction changed: in-span part minus e's = multiple of t_k
    diff = (out * raw.norm(dim=1, keepdim=True) - en) @ proj
    assert torch.allclose(diff, 3 * c[:, k:k + 1] * tn[k], atol=1e-12)
    assert torch.allclose(out.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_no_gradients_and_typed_errors():
    e = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(3, 5)
    out = subspace_target(e, t, 0)
    assert not out.requires_grad and out.dtype == torch.float64
    with pytest.raises(InvalidInput, match="target_index"):
        subspace_target(e, t, 3)
    with pytest.raises(InvalidInput, match="text_embs"):
        subspace_target(e, torch.randn(3, 4), 0)
    with pytest.raises(InvalidInput, match="image_emb"):
        subspace_target(torch.zeros(1, 5), t, 0)
    with pytest.raises(InvalidInput, match="component"):
        subspace_target(e, t, 0, component="nope")


def test_default_prompt_set():
    assert EXPRESSION_TARGETS == ("smile", "angry", "sad", "close_eyes", "raise_brows", "frown_brows")
    assert DEFAULT_PROMPTS["neutral"] == NEUTRAL_PROMPT
    assert target_index("Close eyes", list(DEFAULT_PROMPTS)) == 3
    with pytest.raises(InvalidInput, match="one of smile"):
        target_index("wink", list(DEFAULT_PROMPTS))
