"""Presets look like what they are named: measured on the warp engine's output of a real photo
(detected landmarks, % of the inter-ocular distance), plus the recipe rules (strong smile, kept
opening, brow headroom)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.rig import apply_preset, set_expression
from facerig.rig.presets import HEADROOM, PRESETS, STRONG

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _idx(model, name):
    return model.expression_names.index(name)


def test_recipes_within_headroom(model):
    for name, recipe in {**PRESETS, **STRONG}.items():
        for k, v in recipe.items():
            assert k in model.expression_names and 0 < v <= 1, (name, k)
    assert set(HEADROOM) <= set(model.expression_names)


def test_strong_smile_parts_the_lips_mild_does_not(model, params):
    mild = apply_preset(params, "smile", 0.5, model)
    strong = apply_preset(params, "smile", 1.0, model)
    assert mild.expression[0, _idx(model, "mouthUpperUp_L")] == 0
    assert strong.expression[0, _idx(model, "mouthUpperUp_L")] > 0.2
    assert strong.expression[0, _idx(model, "jawOpen")] > 0.05


def test_smile_keeps_an_open_source_mouth_and_brows_exceed_one(model, params):
    p = set_expression(params, {"jawOpen": 0.5, "mouthLowerDown_L": 0.4}, model)
    s = apply_preset(p, "smile", 0.8, model)
    assert s.expression[0, _idx(model, "jawOpen")] == pytest.approx(0.5)
    assert s.expression[0, _idx(model, "mouthLowerDown_L")] >= 0.4
    assert apply_preset(p, "pucker", 1.0, model).expression[0, _idx(model, "jawOpen")] == 0
    r = apply_preset(params, "raise_brows", 1.0, model)
    assert r.expression[0, _idx(model, "browInnerUp")] == pytest.approx(HEADROOM["browInnerUp"])
    assert apply_preset(params, "raise_brows", 2.0, model).expression.max() <= max(HEADROOM.values())


@pytest.fixture(scope="module")
def rendered(astronaut):
    from eval_presets import detect_near

    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.fit.api import project_landmarks_to_frame
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    model = load_face_model("builtin")
    params = _fit_one(astronaut, model, "largest", "astronaut")
    eng = get_engine("warp")
    state = eng.prepare(astronaut, params, model)
    centre = np.asarray(project_landmarks_to_frame(model, params)[0])[:, :2].mean(0)
    src = detect_near(astronaut, centre)
    assert src is not None

    def motion(raw=False, **kw):
        from eval_presets import motions

        out = eng.render_frame(state, EditSpec(**kw).apply(params, model))
        det = detect_near(out, centre)
        assert det is not None
        return (src, det) if raw else motions(src, det)

    return motion


def test_text_raising_brow_lifts_the_detected_brows(rendered):
    # before the brow headroom the text lifted the detected brows by 4-8 % of the eye distance (3.7
    # here: the astronaut's brows are already raised in the photo; 7.9 with it)
    m = rendered(text="a person who is raising brow")
    assert m["brow"] > 6.0
    assert rendered(preset="frown_brows")["brow"] < -3.0


def test_smile_preset_raises_and_widens_the_corners(rendered):
    # the astronaut already smiles with parted lips: before, the preset closed them (opening -3.6 %
    # IOD, a squeezed grimace) and moved the corners +3.2 up / +1.3 out; now 3.6 / 2.9, lips kept apart
    # (4.3 up while presets dropped her fitted look up: the lowered lids shifted the eye reference)
    m = rendered(preset="smile")
    assert m["corner_up"] > 3.4 and m["corner_out"] > 1.8 and m["cheek"] > 1.0
    assert m["open"] > -1.5
    sad = rendered(preset="sad")
    assert sad["corner_up"] < -2.0
    su = rendered(preset="surprised")
    assert su["brow"] > 6.0 and su["open"] > 10.0


def _iris_shift(src, det):
    """Iris centres (468, 473) moved relative to their eye corners, % IOD (x, y image axes)."""
    iod = float(np.linalg.norm(src[33] - src[263]))
    out = []
    for iris, corners in ((468, (33, 133)), (473, (263, 362))):
        rel_s = src[iris] - src[list(corners)].mean(0)
        rel_d = det[iris] - det[list(corners)].mean(0)
        out.append((rel_d - rel_s) / iod * 100.0)
    return np.mean(out, axis=0)


def test_gaze_controls_move_the_detected_irises(rendered):
    right = _iris_shift(*rendered(raw=True, controls={"gaze_x": 1.0}))
    left = _iris_shift(*rendered(raw=True, controls={"gaze_x": -1.0}))
    up = _iris_shift(*rendered(raw=True, controls={"gaze_y": 1.0}))
    # the builtin eyeLook shapes move the irises by ~2 % of the eye distance at 1 (the detector sees
    # about half): subtle, but in the named direction; beyond 1 they drag the lids along (not offered)
    assert right[0] > 0.5 and left[0] < -0.4, (right, left)
    assert up[1] < right[1] and up[1] < left[1], up  # image y grows downwards
    lr = _iris_shift(*rendered(raw=True, preset="look_left"))
    assert lr[0] > 0.4, lr  # the subject's left is the image's right


def test_viseme_and_wink_controls_read_as_named(rendered):
    aaa, eee, ooo = (rendered(controls={k: 1.0}) for k in ("aaa", "eee", "ooo"))
    assert aaa["open"] > 10.0 and aaa["open"] > eee["open"]
    assert eee["corner_out"] > 1.0 and ooo["corner_out"] < -1.0  # spread vs rounded lips
    src, det = rendered(raw=True, controls={"wink_left": 1.0})
    iod = float(np.linalg.norm(src[33] - src[263]))
    gap_l = (abs(det[374, 1] - det[386, 1]) - abs(src[374, 1] - src[386, 1])) / iod * 100  # subject's left
    gap_r = (abs(det[145, 1] - det[159, 1]) - abs(src[145, 1] - src[159, 1])) / iod * 100
    assert gap_l < -3.0 and abs(gap_r) < 1.5, (gap_l, gap_r)
