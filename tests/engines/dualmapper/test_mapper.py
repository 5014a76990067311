"""DualMapper: identity at init, cross-attention both ways, bounds, composition, bit-exact save/load."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.dualmapper.mapper import DualMapper, compose
from facerig.errors import InvalidInput

CFG = dict(w_tokens=3, w_dim=8, n_psi=5, psi_names=["a", "b", "c", "d", "e"], hidden=16, heads=2, layers=2,
           target="smile", text="a smiling person")


def _mapper(seed=0, **kw):
    torch.manual_seed(seed)
    return DualMapper(**{**CFG, **kw})


def _inputs(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 8, generator=g), torch.rand(b, 5, generator=g)


def _randomise_heads(m, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (m.dw_head.weight, m.dw_head.bias, m.dpsi_head.weight, m.dpsi_head.bias):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def test_fresh_mapper_is_the_identity_edit_but_learns():
    m = _mapper()
    w, psi = _inputs()
    dw, dpsi = m(w, psi)
    assert dw.shape == (2, 3, 8) and dpsi.shape == (2, 5)
    assert torch.equal(dw, torch.zeros_like(dw)) and torch.equal(dpsi, torch.zeros_like(dpsi))
    w2, psi2 = m.apply(w, psi)
    assert torch.equal(w2, w) and torch.equal(psi2, psi)
    (dw.sum() + dpsi.sum()).backward()
    assert m.dw_head.weight.grad.abs().sum() > 0 and m.dpsi_head.weight.grad.abs().sum() > 0


def test_cross_attention_both_ways():
    m = _randomise_heads(_mapper())
    w, psi = _inputs()
    dw, dpsi = m(w, psi)
    dw2, _ = m(w, psi + 0.5)  # psi changes the texture delta ...
    _, dpsi2 = m(w + 0.5, psi)  # ... and w changes the expression delta
    assert (dw2 - dw).abs().max() > 1e-4
    assert (dpsi2 - dpsi).abs().max() > 1e-4
    # batch rows are independent
    dw1, dpsi1 = m(w[:1], psi[:1])
    assert torch.allclose(dw1, dw[:1], atol=1e-6) and torch.allclose(dpsi1, dpsi[:1], atol=1e-6)


def test_psi_bounds_clamp_after_the_delta():
    m = _randomise_heads(_mapper(psi_lower=[0.0] * 5, psi_upper=[1.0] * 5))
    w, psi = _inputs()
    with torch.no_grad():
        m.dpsi_head.bias.fill_(5.0)
    _, p = m.apply(w, psi)
    assert torch.equal(p, torch.ones_like(p))
    with pytest.raises(InvalidInput, match="psi_upper"):
        DualMapper(**{**CFG, "psi_upper": [1.0] * 4})


def test_compose_is_sequential_application():
    m1, m2 = _randomise_heads(_mapper(0), 1), _randomise_heads(_mapper(1, target="sad"), 2)
    w, psi = _inputs()
    with torch.no_grad():
        seq = m2.apply(*m1.apply(w, psi))
        both = compose([m1, m2], w, psi)
        one, two = m1.apply(w, psi), m2.apply(w, psi)
    assert torch.equal(both[0], seq[0]) and torch.equal(both[1], seq[1])
    for single in (one, two):
        assert (both[0] - single[0]).abs().max() > 1e-3 and (both[1] - single[1]).abs().max() > 1e-3
    assert compose([], w, psi) == (w, psi)
    with pytest.raises(InvalidInput, match=r"mappers\[1\]"):
        compose([m1, "nope"], w, psi)  # type: ignore[list-item]


def test_save_load_round_trip_is_bit_exact(tmp_path):
    m = _randomise_heads(_mapper(psi_lower=[0.0] * 5, psi_upper=[1.0] * 5))
    m.save_pretrained(str(tmp_path / "m"))
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    m2 = DualMapper.from_pretrained(str(tmp_path / "m"))
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert m2.target == "smile" and m2.psi_names == tuple("abcde") and m2.config.text == "a smiling person"
    w, psi = _inputs()
    m.eval()  # from_pretrained returns an eval-mode model (MultiheadAttention's eval path rounds differently)
    with torch.no_grad():
        a, b = m.apply(w, psi), m2.apply(w, psi)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shape_errors_name_the_argument():
    m = _mapper()
    w, psi = _inputs()
    with pytest.raises(InvalidInput, match=r"^w: expected a \(B, 3, 8\)"):
        m(w[:, :2], psi)
    with pytest.raises(InvalidInput, match=r"^psi: expected a \(2, 5\)"):
        m(w, psi[:, :4])
    with pytest.raises(InvalidInput, match="heads"):
        DualMapper(**{**CFG, "heads": 3})
    assert m.apply(lambda mod: None) is m  # nn.Module.apply(fn) keeps its meaning


def test_mirror_pairs_tie_left_and_right_deltas(tmp_path):
    """A symmetric target moves both sides alike: paired coefficients get the mean of their deltas,
    others stay free; the pairs are part of the saved config."""
    from facerig.engines.dualmapper.mapper import DualMapper, mirror_pairs

    names = ["browDown_L", "browDown_R", "jawOpen", "eyeLookInLeft", "eyeLookInRight"]
    pairs = mirror_pairs(names)
    assert sorted(map(tuple, pairs)) == [(0, 1), (3, 4)]
    m = DualMapper(w_tokens=2, w_dim=3, n_psi=5, psi_names=names, hidden=8, heads=2, layers=1, mirror_pairs=pairs)
    with torch.no_grad():
        m.dpsi_head.bias.copy_(torch.tensor([0.2, 0.6, 0.5, -0.1, 0.3]))
    w, psi = torch.zeros(1, 2, 3), torch.zeros(1, 5)
    _, dpsi = m(w, psi)
    assert torch.allclose(dpsi[0], torch.tensor([0.4, 0.4, 0.5, 0.1, 0.1]), atol=1e-6)
    m.save_pretrained(tmp_path / "m")
    m2 = DualMapper.from_pretrained(tmp_path / "m")
    assert torch.equal(m2(w, psi)[1], dpsi)
