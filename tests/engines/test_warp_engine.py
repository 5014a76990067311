"""Warp engine on real photos: identity, locality, edit direction (by re-fitting), mouth, relight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.engines import available_engines, get_engine
from facerig.engines.base import Engine
from facerig.errors import InvalidInput
from facerig.rig import EditSpec


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d[mask].mean() if mask is not None else d.mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    params = _fit_one(astronaut, model, "largest", "astronaut")
    eng = get_engine("warp")
    state = eng.prepare(astronaut, params, model)
    return model, params, eng, state


def head_mask(model, params, image_hw, dilate_frac=0.45):
    """Frame-space mask of the face mesh, dilated by a fraction of the face size."""
    import cv2

    from facerig.fit.api import project_landmarks_to_frame

    pts = project_landmarks_to_frame(model, params)[0]
    hull = cv2.convexHull(pts.astype(np.float32)).astype(np.int32)
    m = np.zeros(image_hw, np.uint8)
    cv2.fillConvexPoly(m, hull, 1)
    size = float(np.mean(pts.max(0) - pts.min(0)))
    r = int(dilate_frac * size)
    return cv2.dilate(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0, pts


def test_registry():
    assert "warp" in available_engines()
    eng = get_engine("warp")
    assert isinstance(eng, Engine) and eng.name == "warp" and not eng.requires_weights
    with pytest.raises(InvalidInput, match="did you mean 'warp'"):
        get_engine("wrap")
    with pytest.raises(InvalidInput):
        get_engine("warp", no_such_option=1)


def test_identity_edit_reproduces_input(fitted, astronaut):
    model, params, eng, state = fitted
    out = eng.render_frame(state, params)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert psnr(out, astronaut) > 35


def test_expression_edit_is_local(fitted, astronaut):
    model, params, eng, state = fitted
    target = EditSpec(preset="open_mouth").apply(params, model)
    out = eng.render_frame(state, target)
    assert out.shape == astronaut.shape
    near, pts = head_mask(model, params, astronaut.shape[:2], 0.6)
    assert psnr(out, astronaut, ~near) > 35  # background kept
    # the mouth region changed
    mouth = np.zeros(astronaut.shape[:2], bool)
    c = pts[[13, 14]].mean(0).astype(int)
    mouth[c[1] - 8:c[1] + 8, c[0] - 10:c[0] + 10] = True
    assert psnr(out, astronaut, mouth) < 25


def test_open_mouth_is_dark_inside(fitted, astronaut):
    from facerig.render.buffers import render_buffers

    model, params, eng, state = fitted
    target = EditSpec(expression={"jawOpen": 0.7}).apply(params, model)
    out = eng.render_frame(state, target)
    with torch.no_grad():
        buf = render_buffers(model, target, space="frame")
    names = list(buf.region_names)
    interior = buf.regions[0, names.index("mouth_interior")].numpy() > 0.5
    lips = buf.regions[0, names.index("lips")].numpy() > 0.5
    lum = out.astype(np.float64).mean(2)
    assert interior.sum() > 50
    assert lum[interior].mean() < 0.75 * lum[lips].mean()


def test_relight_left_brightens_image_left(fitted, astronaut):
    model, params, eng, state = fitted
    _, pts = head_mask(model, params, astronaut.shape[:2])
    outs = {}
    for side in ("left", "right"):
        outs[side] = eng.render_frame(state, EditSpec(light=side).apply(params, model)).astype(np.float64).mean(2)
    cx = int(pts[1, 0])
    y0, y1 = int(pts[[33, 263], 1].mean()), int(pts[152, 1])
    lx0, rx1 = int(pts[:, 0].min()), int(pts[:, 0].max())
    ratio = {s: o[y0:y1, lx0:cx].mean() / o[y0:y1, cx:rx1].mean() for s, o in outs.items()}
    assert ratio["left"] > ratio["right"] * 1.1


def test_refit_jaw_open_moves_up(fitted, astronaut):
    from facerig.edit import _fit_one

    model, params, eng, state = fitted
    target = EditSpec(expression={"jawOpen": 0.6}).apply(params, model)
    out = eng.render_frame(state, target)
    refit = _fit_one(out, model, "largest", "edited")
    j = list(model.expression_names).index("jawOpen")
    assert float(refit.expression[0, j]) > float(params.expression[0, j]) + 0.2


@pytest.mark.parametrize("yaw", [-20, -10, 10, 20])
def test_refit_yaw_matches_request(fitted, astronaut, yaw):
    """Issue #3: re-fitting the output gives the requested yaw (target: within 2 degrees up to 20;
    this check allows 2.5 on one photo, docs/edit-accuracy.md has the means over many photos).
    The warp engine turns the head about its centre (Engine.pose_anchor = "head"); turned about the
    eye-mouth centre the same warp re-fits at about half the request."""
    from facerig.edit import _fit_one
    from facerig.rotations import axis_angle_to_ypr

    model, params, eng, state = fitted
    target = EditSpec(yaw=yaw, pose_anchor=eng.pose_anchor).apply(params, model)
    out = eng.render_frame(state, target)
    refit = _fit_one(out, model, "largest", "edited")
    y0 = float(axis_angle_to_ypr(params.rotation.double())[0, 0])
    y1 = float(axis_angle_to_ypr(refit.rotation.double())[0, 0])
    assert abs((y1 - y0) - yaw) < 2.5, (yaw, y1 - y0)


def test_grace_hopper_smile_changes_face_keeps_size(grace_hopper):
    import facerig

    res = facerig.edit(grace_hopper, preset="smile", buffers=False)
    assert res.image.shape == grace_hopper.shape
    assert psnr(res.image, grace_hopper) > 25  # local change only
    assert not np.array_equal(res.image, grace_hopper)


def test_numpy_barycentrics_match_rasteriser(fitted):
    from facerig.render.raster import rasterize

    model, params, eng, state = fitted
    vt, _ = eng._geometry(model, EditSpec(yaw=10).apply(params, model), state.roi, state.k)
    fi, bary = eng._raster(vt, model.faces.long(), state.work_hw)
    ref = rasterize(torch.from_numpy(vt[None]).float(), model.faces.long(), *state.work_hw)
    assert np.array_equal(ref.face_index[0].numpy(), fi)
    assert np.abs(ref.bary[0].numpy() - bary).max() < 1e-5


def test_head_proxy_option(fitted, astronaut):
    model, params, _, _ = fitted
    eng = get_engine("warp", head_proxy=True)
    state = eng.prepare(astronaut, params, model)
    assert state.head is not None and np.all(state.head.radii > 0)
    assert psnr(eng.render_frame(state, params), astronaut) > 35  # no pose change: no proxy motion
    out = eng.render_frame(state, EditSpec(yaw=15).apply(params, model))
    near, _ = head_mask(model, params, astronaut.shape[:2], 0.6)
    assert psnr(out, astronaut, near) < 35 and psnr(out, astronaut, ~near) > 28
