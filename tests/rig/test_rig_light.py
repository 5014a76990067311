"""Lighting: preset directions, brightness calibration, exposure-preserving relight, transfer."""

from __future__ import annotations

import math

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.render.shading import shading
from facerig.rig import (
    LIGHT_PRESET_NAMES,
    directional,
    light_preset,
    mean_frontal_shading,
    relight_keep_brightness,
    set_light,
    transfer_light,
)

LEFT, RIGHT = torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
UP, DOWN = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, -1.0, 0.0])
FRONT = torch.tensor([0.0, 0.0, 1.0])


def _shade(light, n):
    return shading(n[None], light)[0]


def test_preset_directions():
    left, right = light_preset("left"), light_preset("right")
    # 'left' = light on the image's left: normals pointing to image left (-x) are brighter
    # (display-referred: a physical 4.3:1 key/fill contrast reads ~1.9:1 in pixel values)
    assert (_shade(left, LEFT) > 1.7 * _shade(left, RIGHT)).all()
    assert (_shade(right, RIGHT) > 1.7 * _shade(right, LEFT)).all()
    top = light_preset("top")
    assert (_shade(top, UP) > 1.7 * _shade(top, DOWN)).all()
    assert (_shade(top, UP) > _shade(light_preset("front"), UP)).all()
    front = light_preset("front")
    assert (_shade(front, FRONT) > _shade(front, LEFT)).all()
    rim = light_preset("rim")
    back = torch.tensor([0.0, 0.0, -1.0])
    assert (_shade(rim, back) > 1.5 * _shade(rim, FRONT)).all()
    assert (_shade(rim, FRONT) > 0.2).all()  # some ambient on the face


def test_brightness_calibration():
    neutral = torch.zeros(9, 3)
    neutral[0] = math.sqrt(4 * math.pi)
    assert torch.allclose(mean_frontal_shading(neutral), torch.ones(3), atol=1e-6)
    b = {n: float(mean_frontal_shading(light_preset(n)).mean()) for n in LIGHT_PRESET_NAMES}
    assert b["front"] == pytest.approx(1.0, abs=1e-5)
    assert b["dim"] == pytest.approx(0.5 ** (1 / 2.2), abs=1e-3)  # half the physical light, in pixel values
    assert 0.3 < b["rim"] < b["left"] < 1.0
    assert torch.allclose(directional(0, 15), light_preset("front"))
    # directional: azimuth > 0 = from image right; colour tints the key light
    d = directional(90, 0, color=(1.0, 0.5, 0.5))
    s = _shade(d, RIGHT)
    assert s[0] > s[1] and s[1] == pytest.approx(float(s[2]))


def test_set_light_and_keep_brightness(model, make):
    p = make(b=2)
    p = p.replace(light=p.light * torch.tensor([1.0, 0.6])[:, None, None])  # two exposures
    q = set_light(p, "left")
    assert torch.allclose(q.light, light_preset("left").expand(2, -1, -1))
    old = mean_frontal_shading(p.light).mean(-1)
    kept = set_light(p, "front", keep_brightness=True)
    assert torch.allclose(mean_frontal_shading(kept.light).mean(-1), old, atol=1e-5)
    dim = set_light(p, "dim", keep_brightness=True)
    assert torch.allclose(mean_frontal_shading(dim.light).mean(-1), 0.5 * old, atol=1e-5)
    r = relight_keep_brightness(p, light_preset("right", intensity=3.0))
    assert torch.allclose(mean_frontal_shading(r.light).mean(-1), old, atol=1e-5)
    assert (_shade(r.light[0], RIGHT) > _shade(r.light[0], LEFT)).all()
    twice = set_light(p, "top", intensity=2.0)
    assert torch.allclose(twice.light, 2 * light_preset("top").expand(2, -1, -1), atol=1e-6)
    assert torch.equal(q.expression, p.expression) and torch.equal(q.rotation, p.rotation)


def test_transfer_light(make):
    p = make(b=3)
    ref = make(b=1).replace(light=light_preset("rim")[None])
    t = transfer_light(p, ref)
    assert torch.allclose(t.light, ref.light.expand(3, -1, -1))
    with pytest.raises(InvalidInput, match="reference_params"):
        transfer_light(p, make(b=2))


def test_light_validation(make):
    p = make()
    with pytest.raises(InvalidInput, match="light preset.*did you mean left"):
        set_light(p, "lef")
    with pytest.raises(InvalidInput, match="light"):
        set_light(p, torch.zeros(4, 3))
    with pytest.raises(InvalidInput, match="intensity"):
        set_light(p, "front", intensity=-1)
    with pytest.raises(InvalidInput, match="sh"):
        relight_keep_brightness(p, torch.zeros(9, 3))
    with pytest.raises(InvalidInput, match="elevation"):
        directional(0, 120)


def test_display_light_is_gamma_encoded_physical_light():
    from facerig.render.shading import directional_light_sh
    from facerig.rig.light import DISPLAY_GAMMA, display_light_sh

    phys = directional_light_sh(-60, 15, intensity=1.0, ambient=0.3, dtype=torch.float64)
    disp = display_light_sh(phys)
    g = torch.Generator().manual_seed(0)
    n = torch.randn(500, 3, generator=g, dtype=torch.float64)
    n = n / n.norm(dim=-1, keepdim=True)
    n[:, 2] = n[:, 2].abs()  # what a camera sees of a face
    want = shading(n, phys).clamp(min=0).pow(1 / DISPLAY_GAMMA)
    got = shading(n, disp)
    rel = ((got - want).abs() / want).mean()
    assert rel < 0.05, rel  # order-2 SH of the encoded irradiance: a few % off on the front
    # the contrast between the lit and the shadowed side is the physical one to the power 1/gamma
    lit, dark = torch.tensor([[-1.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    c_phys = float(shading(lit, phys)[0, 0] / shading(dark, phys)[0, 0])
    c_disp = float(shading(lit, disp)[0, 0] / shading(dark, disp)[0, 0])
    assert c_disp == pytest.approx(c_phys ** (1 / DISPLAY_GAMMA), rel=0.15)
