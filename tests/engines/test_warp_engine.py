"""Warp engine on real photos: identity, locality, edit direction (by re-fitting), mouth, relight."""

from __future__ import annotations

import cv2
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
    # a dark cavity (not stretched lips), under the photo's own teeth (the source smiles with them)
    assert np.percentile(lum[interior], 30) < 0.5 * lum[lips].mean()


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


@pytest.mark.parametrize("yaw", [-20, 20])
def test_yaw_edit_moves_landmarks_as_requested(fitted, astronaut, yaw):
    """Issue #3 pose edits: MediaPipe landmarks detected on the output moved as the edited mesh
    asks (measured 1.4-2.7 % IOD mean error for a ~40 % IOD motion on 6 photos), and the re-fitted
    yaw turns the requested way by most of the request. A 2D warp that keeps the outline continuous
    re-fits at ~0.7-0.75 of the request (docs/edit-accuracy.md): the issue's 2-degree target is NOT
    met, and this test records the figure instead of hiding it."""
    from facerig.edit import _fit_one
    from facerig.fit.api import _default_detector, project_landmarks_to_frame
    from facerig.rotations import axis_angle_to_ypr

    model, params, eng, state = fitted
    target = EditSpec(yaw=yaw, pose_anchor=eng.pose_anchor).apply(params, model)
    out = eng.render_frame(state, target)
    det = _default_detector()
    got = np.asarray(det.detect_one(out).points)[:468, :2] - np.asarray(det.detect_one(astronaut).points)[:468, :2]
    ps = np.asarray(project_landmarks_to_frame(model, params)[0])[:468, :2]
    want = np.asarray(project_landmarks_to_frame(model, target)[0])[:468, :2] - ps
    err = np.linalg.norm(got - want, axis=1).mean()
    assert err < 0.1 * np.linalg.norm(want, axis=1).mean(), (err, np.linalg.norm(want, axis=1).mean())
    refit = _fit_one(out, model, "largest", "edited")
    y0 = float(axis_angle_to_ypr(params.rotation.double())[0, 0])
    y1 = float(axis_angle_to_ypr(refit.rotation.double())[0, 0])
    assert 0.6 * abs(yaw) < (y1 - y0) * np.sign(yaw) < 1.2 * abs(yaw), (yaw, y1 - y0)


@pytest.mark.parametrize("yaw", [-20, 20])
def test_pose_edit_does_not_double_the_face_edge(fitted, astronaut, yaw):
    """No tear at the mesh boundary: pixels outside the turned face must not sample the inside of
    the source face (that shows the face's edge twice - what a motion that drops at the rim on the
    side turning away does: 244 and 330 pixels of 7681 before 2026-11-22, now 11 and 0)."""
    model, params, eng, state = fitted
    target = EditSpec(yaw=yaw, pose_anchor=eng.pose_anchor).apply(params, model)
    eng.render_frame(state, target, return_layers=True)
    fld = eng.last_layers["field"]
    vt, _ = eng._geometry(model, target, state.roi, state.k)
    fi, _ = eng._raster(vt, model.faces.long(), state.work_hw)
    outside = cv2.dilate((fi >= 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    h, w = outside.shape
    ys, xs = np.nonzero(outside)
    sx = np.clip((xs + 0.5 + fld[ys, xs, 0]).astype(int), 0, w - 1)
    sy = np.clip((ys + 0.5 + fld[ys, xs, 1]).astype(int), 0, h - 1)
    doubled = state.inner[sy, sx].sum()
    assert doubled < 0.005 * state.inner.sum(), (doubled, state.inner.sum())


def test_grace_hopper_smile_changes_face_keeps_size(grace_hopper):
    import facerig

    res = facerig.edit(grace_hopper, preset="smile", buffers=False)
    assert res.image.shape == grace_hopper.shape
    # the whole face changes (smile replaces the source expression: 24.4 dB measured) ...
    assert psnr(res.image, grace_hopper) > 22
    # ... but nothing far from it: the uniform and the flag are untouched
    h, w = grace_hopper.shape[:2]
    assert np.array_equal(res.image[int(0.8 * h):], grace_hopper[int(0.8 * h):])
    assert np.array_equal(res.image[:, : int(0.2 * w)], grace_hopper[:, : int(0.2 * w)])
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


def test_closed_eyes_meet_on_the_photos_lids(fitted, astronaut):
    """Closing the eyes: the warp puts the fitted eye contours where the photo's lids were detected
    (the blendshape fit leaves them a few pixels off, and a closed eye then kept a strip of iris and
    two lash lines) and shuts them on the photo's own lower lid; the irises are covered. The params
    keep the detections for that, and they survive a JSON round trip."""
    import json

    from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE
    from facerig.engines.warp.engine import _LID_PAIRS, _eye_openings, _target_lid_delta
    from facerig.types import FaceParams

    model, params, eng, state = fitted
    pts = np.asarray(params.meta["landmarks_px"])
    assert pts.shape == (478, 2)
    assert FaceParams.from_json_dict(json.loads(params.to_json())).meta["landmarks_px"][0] == list(pts[0])
    # source eye contours on the detections (work grid)
    x0, y0 = state.roi[:2]
    ids = list(RIGHT_EYE) + list(LEFT_EYE)
    det_w = (pts[ids] - np.array([x0, y0])) / state.k
    assert np.abs(state.verts[ids, :2] - det_w).max() < 1e-6
    # shut lids meet (< 0.5 work px) where the photo's lower lid is
    target = EditSpec(preset="close_eyes").apply(params, model)
    vt = eng._geometry(model, target, state.roi, state.k)[0][:, :2]
    vt = vt + _target_lid_delta(state.lid_delta, state.verts[:, :2] - state.lid_delta, vt)
    gaps = [np.linalg.norm(vt[u] - vt[lo]) for u, lo in _LID_PAIRS]
    assert max(gaps) < 0.5, gaps
    # an edit that does not move the lids keeps them on the detections
    vs = eng._geometry(model, EditSpec(light="left").apply(params, model), state.roi, state.k)[0][:, :2]
    vs = vs + _target_lid_delta(state.lid_delta, state.verts[:, :2] - state.lid_delta, vs)
    assert np.abs(vs[ids] - det_w).max() < 1e-6
    # the irises (a disk around each detected iris centre) are covered by lid skin
    out = eng.render_frame(state, target)
    lum_in, lum_out = astronaut.astype(np.float64).mean(2), out.astype(np.float64).mean(2)
    yy, xx = np.mgrid[0:astronaut.shape[0], 0:astronaut.shape[1]]
    for c, ring in ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477))):
        r = np.linalg.norm(pts[list(ring)] - pts[c], axis=1).mean()
        m = (xx - pts[c, 0]) ** 2 + (yy - pts[c, 1]) ** 2 < (0.6 * r) ** 2
        assert m.sum() >= 8 and lum_out[m].mean() > lum_in[m].mean() + 60
    # the openings' labels on the work grid: 1 = subject's right eye (image left), 2 = left
    eo = _eye_openings(params, (x0, y0), state.k, state.work_hw)
    assert eo is not None and set(np.unique(eo)) == {0, 1, 2}
    assert np.nonzero(eo == 1)[1].mean() < np.nonzero(eo == 2)[1].mean()
    assert _eye_openings(params.replace(meta={}), (x0, y0), state.k, state.work_hw) is None


def _shared_portrait(folder: str, name: str):
    """A shared portrait at most 768 px, its fit, the builtin model, a warp engine and its state."""
    from facerig.edit import _fit_one
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model

    img = load_image(shared_path("data", "portraits", folder, name))
    s = max(img.shape[:2]) / 768
    if s > 1:
        img = cv2.resize(img, (round(img.shape[1] / s), round(img.shape[0] / s)), interpolation=cv2.INTER_AREA)
    model = load_face_model("builtin")
    params = _fit_one(img, model, "largest", name)
    eng = get_engine("warp")
    return img, params, model, eng, eng.prepare(img, params, model)


@pytest.mark.shared_data
def test_wider_eyes_keep_the_iris_round():
    """Opening the eyes wider moves the photo's eye rigidly with the iris and shows the white of the
    eye where the lids now open, instead of stretching the iris with the lids (measured: the iris
    patch correlates 0.82 with the source's, 0.70-0.76 when stretched)."""
    from facerig.fit.api import project_landmarks_to_frame

    img, params, model, eng, state = _shared_portrait("mica", "connelly.jpg")
    target = EditSpec(expression={"eyeWide_L": 1.0, "eyeWide_R": 1.0}).apply(params, model)
    out = eng.render_frame(state, target)
    pts = np.asarray(params.meta["landmarks_px"])
    ps, pt = project_landmarks_to_frame(model, params)[0], project_landmarks_to_frame(model, target)[0]
    for c, ring in ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477))):
        r = int(round(0.9 * np.linalg.norm(pts[list(ring)] - pts[c], axis=1).mean()))
        assert r >= 5

        a, b = _patch(img, pts[c], r), _patch(out, pts[c] + (pt[c] - ps[c]), r)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.79


def _patch(im: np.ndarray, cxy: np.ndarray, r: int) -> np.ndarray:
    """Grey (2r+1)^2 patch of ``im`` centred on ``cxy`` (sub-pixel)."""
    m = np.float32([[1, 0, r - cxy[0]], [0, 1, r - cxy[1]]])
    return cv2.warpAffine(im.astype(np.float32).mean(2), m, (2 * r + 1, 2 * r + 1), flags=cv2.INTER_LINEAR)


# ---- issue 10: turns fill from the face, glasses stay rigid ------------------------------------


@pytest.mark.parametrize("yaw", [-20, 20])
def test_turn_fills_revealed_cheek_from_the_face(fitted, yaw):
    """What a turn reveals is filled from the face, not the background or hair: the tearing measure
    (share of the revealed pixels whose colour comes from outside the source face) stays low."""
    from facerig.engines.warp.fill import tearing_fraction

    model, params, eng, state = fitted
    eng.render_frame(state, EditSpec(yaw=yaw, pose_anchor=eng.pose_anchor).apply(params, model), return_layers=True)
    lay = eng.last_layers
    assert lay["revealed"].shape == state.work_hw and lay["colour_source"].shape == (*state.work_hw, 2)
    assert tearing_fraction(lay) < 0.05


def test_tearing_fraction_counts_sources_outside_the_face():
    """The measure itself: revealed pixels whose colour source is off the face count, others not."""
    from facerig.engines.warp.fill import colour_sources, tearing_fraction

    face = np.zeros((20, 20), bool)
    face[5:15, 5:15] = True
    rev = np.zeros((20, 20), bool)
    rev[8:10, 8:12] = True  # 8 pixels
    src = np.full((20, 20, 2), np.nan, np.float32)
    src[8, 8:12] = (10.5, 10.5)   # on the face
    src[9, 8:12] = (1.5, 1.5)     # background
    pos = colour_sources(rev, src, np.zeros((20, 20, 2), np.float32))
    assert tearing_fraction({"revealed": rev, "source_face": face, "colour_source": pos}) == pytest.approx(0.5)
    assert tearing_fraction({"revealed": np.zeros_like(rev), "source_face": face, "colour_source": pos}) == 0.0


@pytest.mark.shared_data
def test_three_quarter_turn_is_not_torn():
    """A 3/4 portrait turned by -20 degrees: the cheek that turns into view took background and
    hair colours (tearing 0.30 before issue 10); it is filled with the face's own colours now."""
    from facerig.engines.warp.fill import tearing_fraction

    img, params, model, eng, state = _shared_portrait("deepface", "img5.jpg")
    eng.render_frame(state, EditSpec(yaw=-20, pose_anchor=eng.pose_anchor).apply(params, model), return_layers=True)
    lay = eng.last_layers
    assert lay["revealed"].sum() > 100
    assert tearing_fraction(lay) < 0.05
    # the revealed pixels' colours are nearer the face's skin than the background's
    fill = lay["fill"][lay["revealed"]]
    bg = state.image[state.person < 0.2]
    d_skin = np.linalg.norm(fill.mean(0) - state.skin_rgb)
    d_bg = np.linalg.norm(fill.mean(0) - bg.mean(0))
    assert d_skin < d_bg


def _draw_glasses(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """A photo with a thick dark frame drawn: a lens around each eye and a bar across the bridge."""
    out = img.copy()
    iod = float(np.linalg.norm(pts[33] - pts[263]))
    t = max(2, int(round(0.05 * iod)))
    ends = []
    for a, b in ((33, 133), (362, 263)):
        c = (pts[a] + pts[b]) / 2 + [0, 0.03 * iod]
        half = np.array([0.2 * iod, 0.15 * iod])
        p0, p1 = np.round(c - half).astype(int), np.round(c + half).astype(int)
        cv2.rectangle(out, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), (25, 20, 20), t, cv2.LINE_AA)
        ends.append(c)
    mid = (ends[0] + ends[1]) / 2
    x0, x1 = sorted((ends[0][0], ends[1][0]))
    y = int(round(mid[1] - 0.05 * iod))
    cv2.line(out, (int(round(x0 + 0.2 * iod)), y), (int(round(x1 - 0.2 * iod)), y), (25, 20, 20), t, cv2.LINE_AA)
    return out


def test_glasses_detected_on_drawn_frames_not_on_bare_face(fitted, astronaut):
    from facerig.engines.warp.glasses import detect_glasses

    _, params, _, _ = fitted
    pts = np.asarray(params.meta["landmarks_px"], np.float64)
    bare = detect_glasses(astronaut.astype(np.float32) / 255, pts)
    worn = detect_glasses(_draw_glasses(astronaut, pts).astype(np.float32) / 255, pts)
    assert not bare.present and not bare.frame.any()
    assert worn.present and worn.score > bare.score
    # the frame mask lies on the drawn frame (dark), not on the eyes
    on = worn.frame > 0.5
    assert on.sum() > 200
    assert astronaut[on].mean() > _draw_glasses(astronaut, pts)[on].mean() + 40


def test_glasses_frame_stays_rigid_under_a_brow_raise(astronaut):
    """With glasses on, raising the brows moves the brows but not the frame (it bent with the brows)."""
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    p0 = _fit_one(astronaut, model, "largest", "astronaut")
    img = _draw_glasses(astronaut, np.asarray(p0.meta["landmarks_px"], np.float64))
    params = _fit_one(img, model, "largest", "astronaut with glasses")
    target = EditSpec(expression={"browInnerUp": 1.0, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0}).apply(params, model)
    moved = {}
    for on in (True, False):
        eng = get_engine("warp", glasses=on)
        state = eng.prepare(img, params, model)
        assert state.glasses is None or state.glasses.present == on
        eng.render_frame(state, target, return_layers=True)
        moved[on] = eng.last_layers["field"][..., :2]
    eng = get_engine("warp")
    state = eng.prepare(img, params, model)
    frame = state.glasses.frame > 0.5
    top = frame & (np.arange(frame.shape[0])[:, None] < np.percentile(np.nonzero(frame)[0], 35))
    rigid = np.linalg.norm(moved[True][top], axis=1)
    bent = np.linalg.norm(moved[False][top], axis=1)
    assert np.median(bent) > 1.0            # without the rule the frame's top bar follows the brows
    assert np.median(rigid) < 0.3 * np.median(bent)


def test_glasses_taper_samples_stay_off_the_frame_and_never_repeat():
    """Skin above a rigid bar whose motion points at it (raised brows) is stretched: every sample
    lands off the bar and samples move monotonically down each column (a clamp to the nearest
    skin pixel repeated one row: streaks). Offsets away from the bar are kept whole."""
    from facerig.engines.warp.glasses import glasses_taper

    h, w = 80, 40
    frame = np.zeros((h, w), np.float32)
    frame[50:56] = 1.0
    for d in (3.0, 8.0, 15.0):
        off = np.zeros((h, w, 2), np.float32)
        off[..., 1] = d                      # every pixel samples d px below itself
        lam = glasses_taper(frame, off)
        ys = np.arange(h, dtype=np.float32)[:, None] + 0.5 + lam * d
        above = slice(0, 50)
        assert (ys[above] < 50.0).all()      # never on the bar
        step = np.diff(ys[above], axis=0)
        assert step.min() > 0.4              # monotone: no row is drawn twice
        assert lam[:50 - int(2 * d) - 2].min() == 1.0  # far from the bar the motion is whole
        assert (lam[50:56] == 0).all()       # the bar itself is rigid
    off = np.zeros((h, w, 2), np.float32)
    off[..., 1] = -8.0                       # skin moving towards the bar (lowered brows)
    assert glasses_taper(frame, off)[:48].min() == 1.0
    with pytest.raises(ValueError, match="stretch"):
        glasses_taper(frame, off, stretch=1.0)


def test_raised_brows_above_glasses_do_not_sample_the_frame(astronaut):
    """Rendered: the pixels above the drawn frame's top bar take no colour from the frame after a
    brow raise, and their sample rows move monotonically (the streak test on a real photo)."""
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    p0 = _fit_one(astronaut, model, "largest", "astronaut")
    img = _draw_glasses(astronaut, np.asarray(p0.meta["landmarks_px"], np.float64))
    params = _fit_one(img, model, "largest", "astronaut with glasses")
    target = EditSpec(expression={"browInnerUp": 1.0, "browOuterUp_L": 1.0, "browOuterUp_R": 1.0}).apply(params, model)
    eng = get_engine("warp")
    state = eng.prepare(img, params, model)
    eng.render_frame(state, target, return_layers=True)
    fld = eng.last_layers["field"][..., :2]
    g = state.glasses.frame
    h, w = g.shape
    ys, xs = np.mgrid[0:h, 0:w]
    sx = np.clip(np.floor(xs + 0.5 + fld[..., 0]).astype(int), 0, w - 1)
    sy = np.clip(np.floor(ys + 0.5 + fld[..., 1]).astype(int), 0, h - 1)
    fy, fx = np.nonzero(g > 0.5)
    top = int(np.percentile(fy, 2))
    band = np.zeros((h, w), bool)
    band[max(0, top - int(0.08 * state.face_px)):top - 2, int(np.percentile(fx, 10)):int(np.percentile(fx, 90))] = True
    band &= cv2.dilate((g > 0.05).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    moved = band & (np.abs(fld[..., 1]) > 0.5)
    assert moved.sum() > 50                  # the brows above the bar do move
    assert (g[sy, sx][band] > 0.3).mean() < 0.01
    dy = np.diff(ys + fld[..., 1], axis=0)[band[1:] & band[:-1]]
    assert np.percentile(dy, 1) > 0.3        # no run of repeated sample rows


@pytest.mark.shared_data
def test_wider_eyes_do_not_paint_white_over_the_iris():
    """The top of the iris that the photo's upper lid covered is iris after widening the eyes, not
    the white of the eye (it painted a white wedge over the iris). Measured on this photo: the
    left iris's top cap was 19 grey levels brighter than its middle, 7 now (the right one is dark
    either way: -11 / -10)."""
    photo = ("deepface", "img5.jpg")
    from facerig.fit.api import project_landmarks_to_frame

    img, params, model, eng, state = _shared_portrait(*photo)
    target = EditSpec(expression={"eyeWide_L": 1.0, "eyeWide_R": 1.0}).apply(params, model)
    out = eng.render_frame(state, target).astype(np.float32).mean(2)
    ps, pt = project_landmarks_to_frame(model, params)[0], project_landmarks_to_frame(model, target)[0]
    pts = np.asarray(params.meta["landmarks_px"])
    for c, ring in ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477))):
        r = float(np.linalg.norm(pts[list(ring)] - pts[c], axis=1).mean())
        ctr = pts[c] + (pt[c] - ps[c])
        ys, xs = np.mgrid[0:out.shape[0], 0:out.shape[1]]
        d = np.hypot(xs + 0.5 - ctr[0], ys + 0.5 - ctr[1])
        top = (d < 0.85 * r) & (ys + 0.5 < ctr[1] - 0.45 * r)   # the iris's top cap
        mid = (d < 0.85 * r) & (np.abs(ys + 0.5 - ctr[1]) < 0.3 * r)
        assert top.sum() > 5
        # as dark as the iris's middle, not as bright as the white
        assert out[top].mean() < out[mid].mean() + 12, (out[top].mean(), out[mid].mean())
