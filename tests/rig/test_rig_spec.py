"""EditSpec: composition order, equivalence with the individual edits, validation."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import (
    EditSpec,
    anchor_ndc,
    apply_preset,
    directional,
    light_preset,
    set_expression,
    set_light,
    set_pose,
)


def _same(a, b, atol=1e-6):
    for n in ("expression", "jaw_pose", "rotation", "camera", "light", "identity"):
        assert torch.allclose(getattr(a, n), getattr(b, n), atol=atol), n


def test_apply_equals_composition(model, make):
    p = make(b=2, seed=21)
    spec = EditSpec(preset="smile", intensity=0.7, expression={"jawOpen": 0.2}, yaw=15, pitch=-5,
                    light="left", light_keep_brightness=False)
    out = spec.apply(p, model)
    ref = apply_preset(p, "smile", 0.7, model)
    ref = set_expression(ref, {"jawOpen": 0.2}, model)
    before_pose = ref
    ref = set_pose(ref, model, yaw=15, pitch=-5)
    ref = set_light(ref, "left")
    _same(out, ref)
    # the pose step keeps the (expression-edited) face's anchor in place
    assert torch.allclose(anchor_ndc(out, model), anchor_ndc(before_pose, model), atol=1e-5)
    assert torch.equal(p.expression, make(b=2, seed=21).expression)  # input untouched


def test_take_from_reference(model, make):
    p = make(b=2, seed=22)
    ref = apply_preset(make(seed=23), "surprised", model=model)
    ref = set_pose(ref, model, yaw=-20).replace(light=light_preset("top")[None])
    out = EditSpec(take={"expression", "pose", "light"}).apply(p, model, reference=ref)
    assert torch.allclose(out.expression, ref.expression.expand(2, -1))
    assert torch.allclose(out.rotation, ref.rotation.expand(2, -1), atol=1e-6)
    assert torch.allclose(out.light, ref.light.expand(2, -1, -1))
    assert torch.allclose(anchor_ndc(out, model), anchor_ndc(p.replace(expression=out.expression), model),
                          atol=1e-5)
    with pytest.raises(InvalidInput, match="reference"):
        EditSpec(take={"pose"}).apply(p, model)


def test_text_and_directional(model, make):
    p = make(seed=24)
    out = EditSpec(text="close_eyes", light_azimuth=-45, light_elevation=20).apply(p, model)
    assert out.expression[0, model.expression_names.index("eyeBlink_L")] == pytest.approx(0.8)
    from facerig.rig import mean_frontal_shading

    want = directional(-45, 20)
    scale = mean_frontal_shading(p.light).mean() / mean_frontal_shading(light_preset("front")).mean()
    assert torch.allclose(out.light[0], want * scale, atol=1e-5)
    assert EditSpec().apply(p, model).expression.equal(p.expression)


def test_validation():
    bad = [
        dict(text="smile", preset="smile"),
        dict(preset="smiel"),
        dict(intensity=0.5),
        dict(take={"expression"}, preset="smile"),
        dict(take={"pose"}, yaw=10),
        dict(take={"light"}, light="left"),
        dict(take={"shape"}),
        dict(light="left", light_azimuth=30),
        dict(light="neon"),
        dict(yaw=float("nan")),
        dict(expression_mode="sometimes"),
        dict(preset="smile", intensity=1.5, preset_mode="blend"),
    ]
    for kw in bad:
        with pytest.raises(InvalidInput):
            EditSpec(**kw).validate()
    with pytest.raises(InvalidInput, match="edit spec"):
        EditSpec.from_dict({"smile": 1})
    s = EditSpec.from_dict({"preset": "sad", "take": "light"})
    assert s.take == frozenset({"light"})
    assert EditSpec.from_dict(s.to_dict()) == s
