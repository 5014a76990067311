"""Expression edits: named values, presets (geometry checked through the builtin model), transfer."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import (
    PRESET_NAMES,
    PRESETS,
    apply_preset,
    interpolate_expression,
    preset_recipe,
    set_expression,
    transfer_expression,
)


def _idx(model, name):
    return model.expression_names.index(name)


def test_set_expression_absolute_add_alias_and_clamp(model, params):
    e = set_expression(params, {"jawOpen": 0.5, "mouthSmile": 0.3}, model)
    assert e.expression[0, _idx(model, "jawOpen")] == pytest.approx(0.5)
    assert e.expression[0, _idx(model, "mouthSmile_L")] == pytest.approx(0.3)
    assert e.expression[0, _idx(model, "mouthSmile_R")] == pytest.approx(0.3)
    assert params.expression.abs().sum() == 0  # input untouched
    e2 = set_expression(e, {"jawOpen": 0.7}, model, mode="add")
    assert e2.expression[0, _idx(model, "jawOpen")] == pytest.approx(1.0)  # clamped to the range
    e3 = set_expression(e2, {"jawopen": -2}, model, mode="add")  # case-insensitive name
    assert e3.expression[0, _idx(model, "jawOpen")] == pytest.approx(0.0)
    assert e3.expression[0, _idx(model, "mouthSmile_L")] == pytest.approx(0.3)


def test_set_expression_unknown_name_suggests(model, params):
    with pytest.raises(InvalidInput, match=r"values\['jawOpn'\].*did you mean jawOpen"):
        set_expression(params, {"jawOpn": 0.5}, model)
    with pytest.raises(InvalidInput, match="mode"):
        set_expression(params, {"jawOpen": 0.5}, model, mode="relative")
    with pytest.raises(InvalidInput, match="jawOpen"):
        set_expression(params, {"jawOpen": float("nan")}, model)


def test_all_presets_use_model_names_and_range(model):
    assert {"smile", "angry", "sad", "surprised", "close_eyes", "raise_brows", "frown_brows",
            "open_mouth", "pucker", "neutral", "disgust", "fear", "wink_left", "wink_right", "squint",
            "smirk"} <= set(PRESET_NAMES)
    for name, recipe in PRESETS.items():
        for k, v in recipe.items():
            assert k in model.expression_names, (name, k)
            assert 0 < v <= 1, (name, k)


def test_preset_geometry(model, params, head):
    base = head(params, model)[0]

    def lm(name, intensity=1.0):
        return head(apply_preset(params, name, intensity, model), model)[0]

    def lid_gap(p, up, low):
        return float((p[up] - p[low]).norm())

    s = lm("smile")  # y up in model space: mouth corners rise
    assert s[61, 1] - base[61, 1] > 0.5 and s[291, 1] - base[291, 1] > 0.5
    assert s[291, 0] - s[61, 0] > base[291, 0] - base[61, 0]  # and widen
    o = lm("open_mouth")
    assert o[152, 1] - base[152, 1] < -1.0  # chin drops
    c = lm("close_eyes")
    for up, low in ((159, 145), (386, 374)):
        assert lid_gap(c, up, low) < 0.1 * lid_gap(base, up, low)
    w = lm("wink_left")  # subject's left eye = landmarks 386/374
    assert lid_gap(w, 386, 374) < 0.1 * lid_gap(base, 386, 374)
    assert lid_gap(w, 159, 145) > 0.8 * lid_gap(base, 159, 145)
    r = lm("raise_brows")
    assert r[105, 1] - base[105, 1] > 0.5 and r[334, 1] - base[334, 1] > 0.5
    f = lm("frown_brows")
    assert f[105, 1] < base[105, 1] - 0.2 and f[334, 1] < base[334, 1] - 0.2
    su = lm("surprised")
    assert su[105, 1] > base[105, 1] + 0.5 and su[152, 1] < base[152, 1] - 0.8
    assert lid_gap(su, 159, 145) > lid_gap(base, 159, 145)
    sad = lm("sad")
    assert sad[61, 1] < base[61, 1] - 0.2 and sad[55, 1] > base[55, 1]  # corners down, inner brow up
    a = lm("angry")
    assert a[105, 1] < base[105, 1] - 0.2 and a[61, 1] < base[61, 1] + 0.1
    pk = lm("pucker")
    assert pk[291, 0] - pk[61, 0] < 0.8 * (base[291, 0] - base[61, 0])  # lips narrow
    half = lm("smile", 0.5)
    assert 0.3 < float((half[61, 1] - base[61, 1]) / (s[61, 1] - base[61, 1])) < 0.7


def test_preset_modes(model, params):
    p = set_expression(params, {"jawOpen": 0.6}, model)
    r = apply_preset(p, "pucker", 0.5, model)  # the pucker moves the mouth: the old jawOpen is gone
    assert r.expression[0, _idx(model, "jawOpen")] == 0
    r = apply_preset(p, "smile", 0.5, model)  # a smile keeps an open mouth open (no squeezed grimace)
    assert r.expression[0, _idx(model, "jawOpen")] == pytest.approx(0.6)
    assert r.expression[0, _idx(model, "mouthSmile_L")] == pytest.approx(0.45)
    b = apply_preset(p, "smile", 0.5, model, mode="blend")
    assert b.expression[0, _idx(model, "jawOpen")] == pytest.approx(0.3 + 0.5 * 0.12)
    assert b.expression[0, _idx(model, "mouthSmile_L")] == pytest.approx(0.45)
    n = apply_preset(p, "neutral", model=model)
    assert n.expression.abs().sum() == 0
    assert apply_preset(p, "Close Eyes", model=model).expression[0, _idx(model, "eyeBlink_L")] == 1
    big = apply_preset(p, "smile", 2.0, model)
    assert big.expression.max() <= 1.0


def test_preset_validation(model, params):
    with pytest.raises(InvalidInput, match="did you mean smile"):
        apply_preset(params, "smiel", model=model)
    with pytest.raises(InvalidInput, match="intensity"):
        apply_preset(params, "smile", 1.5, model, mode="blend")
    with pytest.raises(InvalidInput, match="intensity"):
        apply_preset(params, "smile", -0.1, model)
    with pytest.raises(InvalidInput, match="model"):
        apply_preset(params, "smile", 1.0, None)
    with pytest.raises(InvalidInput, match="preset"):
        preset_recipe("nope")


def test_presets_refused_for_pca_models(model, params):
    class FakeFlame:  # the attributes presets look at, as FLAMEFaceModel has them
        name = "flame"
        expression_range = None
        expression_names = model.expression_names
        n_expression = model.n_expression

        def check_params(self, model_id):
            pass

    p = params.replace(model="flame")
    with pytest.raises(InvalidInput, match="ARKit"):
        apply_preset(p, "smile", 1.0, FakeFlame())


def test_wrong_model_params_rejected(model, params):
    with pytest.raises(InvalidInput, match="params"):
        set_expression(params.replace(model="ict"), {"jawOpen": 1}, model)


def test_transfer_and_interpolate(model, make):
    src = make(b=3, seed=1)
    ref = apply_preset(make(b=1, seed=2), "surprised", model=model)
    ref = ref.replace(jaw_pose=torch.tensor([[0.2, 0.0, 0.0]]))
    t = transfer_expression(src, ref)
    assert t.batch_size == 3
    assert torch.equal(t.expression, ref.expression.expand(3, -1))
    assert torch.allclose(t.jaw_pose, ref.jaw_pose.expand(3, -1))
    assert torch.equal(t.identity, src.identity) and torch.equal(t.rotation, src.rotation)
    with pytest.raises(InvalidInput, match="reference_params"):
        transfer_expression(src, make(b=2))
    mid = interpolate_expression(src, t, 0.5)
    assert torch.allclose(mid.expression, 0.5 * t.expression)
    assert torch.allclose(mid.jaw_pose, 0.5 * t.jaw_pose, atol=1e-6)
    per = interpolate_expression(src, t, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(per.expression[2], t.expression[2]) and per.expression[0].abs().sum() == 0
    with pytest.raises(InvalidInput, match="t"):
        interpolate_expression(src, t, 5.0)


def test_no_preset_crosses_the_eyelids(model, params, head):
    """Combined shapes must not push an upper lid through the lower one (lid gap >= 0)."""
    for name in PRESET_NAMES:
        p = head(apply_preset(params, name, 1.0, model), model)[0]
        for up, low in ((159, 145), (386, 374)):
            assert float(p[up, 1] - p[low, 1]) > -0.02, name


def test_preset_parts_mode_keeps_the_other_parts(model, params):
    """The default mode replaces only the face parts a preset moves: closing the eyes keeps a smile,
    a smile keeps raised brows; "replace" neutralises everything; "neutral" always does."""
    from facerig.rig.expression import expression_part

    assert [expression_part(n) for n in ("eyeBlink_L", "browInnerUp", "noseSneer_R", "jawOpen", "cheekSquint_L",
                                         "mouthSmile_R", "eyeLookDown_L")] == ["eyes", "brows", "nose", "mouth", "mouth",
                                                                                "mouth", "gaze"]
    p = set_expression(params, {"mouthSmile_L": 0.7, "mouthSmile_R": 0.7, "browInnerUp": 0.6, "eyeBlink_L": 0.3}, model)
    c = apply_preset(p, "close_eyes", model=model)
    assert c.expression[0, _idx(model, "mouthSmile_L")] == pytest.approx(0.7)
    assert c.expression[0, _idx(model, "browInnerUp")] == pytest.approx(0.6)
    assert c.expression[0, _idx(model, "eyeBlink_L")] == 1 and c.expression[0, _idx(model, "eyeBlink_R")] == 1
    s = apply_preset(p, "smile", model=model)
    assert s.expression[0, _idx(model, "browInnerUp")] == pytest.approx(0.6)
    assert s.expression[0, _idx(model, "eyeBlink_L")] == 0  # the smile's eyeSquint: the eyes are replaced
    r = apply_preset(p, "close_eyes", model=model, mode="replace")
    assert r.expression[0, _idx(model, "mouthSmile_L")] == 0
    assert apply_preset(p, "neutral", model=model).expression.abs().sum() == 0
    with pytest.raises(InvalidInput, match="mode"):
        apply_preset(p, "smile", model=model, mode="part")


def test_preset_keeps_the_photos_gaze(model, params):
    """Presets that move the lids keep the fitted look (a dropped look down raised deep-set lids into
    a white band under raise_brows); a look preset replaces it."""
    p = set_expression(params, {"eyeLookDown_L": 0.4, "eyeLookDown_R": 0.4, "eyeSquint_L": 0.2}, model)
    for name in ("raise_brows", "smile", "surprised", "close_eyes", "angry"):
        e = apply_preset(p, name, model=model).expression[0]
        assert e[_idx(model, "eyeLookDown_L")] == pytest.approx(0.4), name
    r = apply_preset(p, "raise_brows", model=model).expression[0]
    # raise_brows only accents the lids (eyeWide 0.15 < ACCENT): the photo's squint stays, the accent adds
    assert r[_idx(model, "eyeSquint_L")] == pytest.approx(0.2)
    assert r[_idx(model, "eyeWide_L")] == pytest.approx(0.15)
    s = apply_preset(p, "smile", model=model).expression[0]
    assert s[_idx(model, "eyeSquint_L")] == pytest.approx(0.3)  # the smile's squint 0.3 replaces the eyes
    u = apply_preset(p, "look_up", model=model).expression[0]
    assert u[_idx(model, "eyeLookDown_L")] == 0 and u[_idx(model, "eyeLookUp_L")] > 0
