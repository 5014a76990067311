"""SH shading in DECA's convention, directional lights and SH fitting."""

from __future__ import annotations

import math

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.render.shading import (
    SH_CONSTANTS,
    directional_light_sh,
    fit_sh,
    lambertian,
    light_direction,
    sh_basis,
    sh_basis_rows,
    shading,
)


def _unit(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 3, generator=g, dtype=dtype)
    return v / v.norm(dim=-1, keepdim=True)


def test_constants_match_deca_table():
    pi = math.pi
    expected = [
        1 / math.sqrt(4 * pi),
        *[(2 * pi / 3) * math.sqrt(3 / (4 * pi))] * 3,
        *[(pi / 4) * 3 * math.sqrt(5 / (12 * pi))] * 3,
        (pi / 4) * 1.5 * math.sqrt(5 / (12 * pi)),
        (pi / 4) * 0.5 * math.sqrt(5 / (4 * pi)),
    ]
    assert SH_CONSTANTS == pytest.approx(expected, rel=1e-15)
    n = torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64)
    x, y, z = 0.3, -0.5, 0.8
    raw = [1, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1]
    assert sh_basis(n)[0].tolist() == pytest.approx([r * c for r, c in zip(raw, expected, strict=True)])
    assert torch.allclose(sh_basis_rows(n.T).T, sh_basis(n))


def test_layouts_agree():
    light = torch.randn(2, 9, 3, dtype=torch.float64)
    img = torch.randn(2, 3, 5, 4, dtype=torch.float64)  # unnormalised on purpose
    a = shading(img, light)
    b = shading(img.permute(0, 2, 3, 1).reshape(2, 20, 3), light).reshape(2, 5, 4, 3).permute(0, 3, 1, 2)
    assert a.shape == (2, 3, 5, 4) and torch.allclose(a, b)
    c = shading(img[0].permute(1, 2, 0), light[0])
    assert torch.allclose(c.permute(2, 0, 1), a[0])
    albedo = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    assert torch.allclose(lambertian(albedo, img, light), albedo * a)
    with pytest.raises(InvalidInput):
        shading(img, torch.randn(2, 4, 3))


def test_gradcheck_shading():
    n = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    light = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(shading, (n, light))


def test_dc_only_light_is_constant_on_unit_normals():
    light = torch.zeros(9, 3, dtype=torch.float64)
    light[0] = torch.tensor([1.0, 2.0, 0.5])
    s = shading(_unit(200), light)
    expected = light[0] / math.sqrt(4 * math.pi)
    assert torch.allclose(s, expected.expand_as(s))


def test_directional_light_matches_clamped_cosine_projection():
    for az, el in [(0, 0), (90, 0), (-35, 20), (140, -60)]:
        d = torch.tensor(light_direction(az, el), dtype=torch.float64)
        light = directional_light_sh(az, el, intensity=(1.0, 0.5, 2.0), ambient=0.2, dtype=torch.float64)
        n = _unit(500, seed=az + 1000)
        t = n @ d
        order2 = 0.25 + 0.5 * t + (5 / 16) * (3 * t * t - 1) / 2  # SH projection of max(0, t), l <= 2
        expected = order2[:, None] * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64) + 0.2
        assert torch.allclose(shading(n, light), expected, atol=1e-12)
        # and it is a fair approximation of the clamped cosine itself
        assert (shading(n, light)[:, 0] - (t.clamp_min(0) + 0.2)).abs().max() < 0.2


def test_light_direction_convention():
    assert light_direction(0, 0) == pytest.approx((0, 0, 1))
    assert light_direction(90, 0) == pytest.approx((1, 0, 0))
    assert light_direction(0, 90) == pytest.approx((0, 1, 0))
    light = directional_light_sh(90, 0)  # from +x (image right)
    n = _unit(2000, dtype=torch.float32)
    s = shading(n, light)[:, 0]
    assert n[s.argmax(), 0] > 0.95
    assert s[n[:, 0] > 0.9].min() > s[n[:, 0] < -0.9].max() + 0.5  # (order-2 ringing: min at t=-8/15)


def test_fit_sh_recovers_light_batched_weighted():
    light = torch.randn(2, 9, 3, dtype=torch.float64)
    n = torch.stack([_unit(300, 1), _unit(300, 2)])
    colors = shading(n, light)
    w = torch.rand(2, 300, dtype=torch.float64) + 0.1
    est = fit_sh(n, colors, w, ridge=0.0)
    assert est.shape == (2, 9, 3) and torch.allclose(est, light, atol=1e-8)
    # front hemisphere only (as seen in a photo), unbatched, with a little noise
    front = _unit(2000, 3)
    front = front[front[:, 2] > 0]
    c = shading(front, light[0]) + 0.001 * torch.randn(front.shape[0], 3, dtype=torch.float64)
    est1 = fit_sh(front, c)
    assert est1.shape == (9, 3)
    assert (shading(front, est1) - c).abs().max() < 0.01
    # differentiable
    cc = colors.clone().requires_grad_()
    fit_sh(n, cc).sum().backward()
    assert torch.isfinite(cc.grad).all()
