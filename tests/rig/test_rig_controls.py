"""Slider controls (facerig.rig.controls): relative to the photo, signed, clamped, validated."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import EditSpec, set_expression
from facerig.rig.controls import CONTROLS, apply_controls, check_controls, parse_control_args, parse_gaze
from facerig.rig.presets import HEADROOM


def _v(model, p, name):
    return float(p.expression[0, model.expression_names.index(name)])


def test_every_control_uses_model_shapes(model):
    known = set(model.expression_names) | {"mouthClose"}
    for name, c in CONTROLS.items():
        assert c.low < c.high and c.positive, name
        assert set(c.positive) | set(c.negative) <= known, name
        assert (c.low < 0) == bool(c.negative), name  # signed controls have a negative direction


def test_zero_is_the_photo_and_values_add_to_it(model, params):
    p = set_expression(params, {"mouthSmile": 0.4, "eyeBlink": 0.2}, model)
    assert torch.equal(apply_controls(p, {"smile": 0.0, "blink": 0.0}, model).expression, p.expression)
    more = apply_controls(p, {"smile": 0.5}, model)
    assert _v(model, more, "mouthSmile_L") == pytest.approx(0.4 + 0.45)
    less = apply_controls(p, {"smile": -0.25}, model)
    assert _v(model, less, "mouthSmile_L") == pytest.approx(0.15)
    assert _v(model, less, "mouthFrown_L") == pytest.approx(0.225)
    # other parts keep their values
    assert _v(model, more, "eyeBlink_L") == pytest.approx(0.2)


def test_opposite_shapes_do_not_fight_and_results_are_clamped(model, params):
    p = set_expression(params, {"eyeLookIn_L": 0.6, "eyeLookOut_R": 0.6}, model)
    r = apply_controls(p, {"gaze_x": 1.0}, model)  # towards the image's right
    assert _v(model, r, "eyeLookOut_L") == 1.0 and _v(model, r, "eyeLookIn_L") == 0.0
    assert _v(model, r, "eyeLookIn_R") == 1.0 and _v(model, r, "eyeLookOut_R") == 0.0
    b = apply_controls(params, {"brows": 1.0}, model)
    assert _v(model, b, "browInnerUp") == pytest.approx(HEADROOM["browInnerUp"])  # like raise_brows
    assert apply_controls(b, {"brows": 1.0}, model).expression.max() <= max(HEADROOM.values())
    w = apply_controls(params, {"wink_left": 1.0}, model)
    assert _v(model, w, "eyeBlink_L") == 1.0 and _v(model, w, "eyeBlink_R") == 0.0


def test_bad_controls_name_argument_and_value():
    with pytest.raises(InvalidInput, match="gaze_x"):
        check_controls({"gaze_xx": 0.5})
    with pytest.raises(InvalidInput, match="wink_left"):
        check_controls({"wink_left": -0.5})  # one-sided: 0..1
    with pytest.raises(InvalidInput, match="smile"):
        check_controls({"smile": float("nan")})
    with pytest.raises(InvalidInput, match="--control"):
        parse_control_args(["smile"])
    assert parse_control_args(["Gaze-X=0.5", "blink=1"]) == {"gaze_x": 0.5, "blink": 1.0}
    assert parse_gaze("0.5, -0.2") == (0.5, -0.2)
    for bad in ("0.5", "a,b", "2,0"):
        with pytest.raises(InvalidInput, match="--gaze"):
            parse_gaze(bad)


def test_spec_and_build_spec_carry_controls(model, params):
    from facerig.edit import build_spec

    es = build_spec(gaze="0.5,0.25", controls=["aaa=1"])
    assert es.controls == {"gaze_x": 0.5, "gaze_y": 0.25, "aaa": 1.0}
    out = es.apply(params, model)
    assert _v(model, out, "jawOpen") > 0.5 and _v(model, out, "eyeLookUp_L") == pytest.approx(0.25)
    # a preset first, the controls on top
    s = EditSpec(preset="smile", controls={"blink": 1.0}).apply(params, model)
    assert _v(model, s, "mouthSmile_L") > 0.8 and _v(model, s, "eyeBlink_L") == 1.0
    assert EditSpec(controls={"smile": 0.0}).is_empty and not EditSpec(controls={"smile": 0.1}).is_empty
    with pytest.raises(InvalidInput, match="controls"):
        EditSpec(controls={"frown": 1.0}).validate()


def test_models_without_arkit_shapes_refuse_controls_with_a_reason(model, params):
    from facerig.rig.controls import control_vector

    class PCA:  # like FLAME: no expression_range, no ARKit names
        name = "flame"
        expression_range = None

    with pytest.raises(InvalidInput, match="blendshape"):
        control_vector({"smile": 0.5}, PCA())
