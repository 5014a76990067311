"""Closed eyes show no eye white: the white along the lid line (outside the detected contour's
eroded core) belongs to the opening the closing lid covers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE


def _white_in_closed_eyes(name: str) -> float:
    """97th percentile of the luminance inside the photo's eye contours after close_eyes, over the
    median of a ring of skin around them (the brighter eye): ~1 when the lid is plain skin."""
    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    img = load_image(shared_dir() / "data" / "portraits" / "pexels-unsplash" / name)
    s = 768 / max(img.shape[:2])
    img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    model = load_face_model("builtin")
    eng = get_engine("warp")
    params = _fit_one(img, model, "largest", name)
    out = eng.render_frame(eng.prepare(img, params, model), EditSpec(preset="close_eyes").apply(params, model))
    lum = out.astype(np.float32).mean(2)
    p = np.asarray(params.meta["landmarks_px"])[:, :2]
    ratios = []
    for loop in (LEFT_EYE, RIGHT_EYE):
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(p[list(loop)]).astype(np.int32)], 1)
        m = cv2.dilate(m, np.ones((3, 3), np.uint8))
        ring = cv2.dilate(m, np.ones((15, 15), np.uint8)) - cv2.dilate(m, np.ones((7, 7), np.uint8))
        ratios.append(float(np.percentile(lum[m > 0], 97) / np.median(lum[ring > 0])))
    return max(ratios)


@pytest.mark.shared_data
@pytest.mark.parametrize("name, limit", [("077559.jpg", 1.6), ("038648.jpg", 1.15), ("yRpe13BHdKw.jpg", 1.22)])
def test_closed_lids_keep_no_white_sliver(name, limit):
    # before the bright rim joined the opening: 2.26 and 1.46 (a white line under the closed lid);
    # yRpe13BHdKw 1.35 before the smoothed field's own sample points were checked too (the photo's
    # white under the shut lashes as a light crescent), 1.08 after
    assert _white_in_closed_eyes(name) < limit


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_gaze_moves_the_iris_within_the_eye(photo, request):
    """A full look to either side moves the photo's iris rigidly within its opening: the irises
    MediaPipe re-detects on the output move >= 4.5 % of the eye distance (measured: astronaut
    +5.2 / -5.7 %, Grace Hopper +5.3 / -6.2 %; before the rigid iris move the mesh alone gave
    +2.7 / -3.4 % and +2.7 / -4.0 %), and half a look moves them less than a full one."""
    import facerig
    from facerig.detect.mediapipe import FaceDetector

    img = request.getfixturevalue(photo)
    det = FaceDetector(max_faces=1)

    def irises(a):
        f = det.detect(a)[0].points
        return f[[468, 473], :2], float(np.linalg.norm(f[468, :2] - f[473, :2]))

    c0, iod = irises(img)
    dx = {}
    for g in (1.0, -1.0, 0.5):
        c1, _ = irises(facerig.edit(img, gaze=(g, 0.0)).image)
        dx[g] = float((c1 - c0)[:, 0].mean()) / iod * 100
    assert dx[1.0] > 4.5 and dx[-1.0] < -4.5, dx
    assert 0.5 < dx[0.5] < dx[1.0], dx


def test_looking_down_lowers_the_lids_without_half_closing(astronaut):
    """A full look down: the model's eyeLookDown shapes lower the upper lid twice as far as the iris
    (its lid gap 38 % of the open one); the warp keeps half of the lids' motion and all of the
    iris's. MediaPipe's lid gaps re-detected on the output over the photo's (mean of the two eyes):
    0.66 before, 0.87 now (a full blink: < 0.3), and the irises still move down within the eyes."""
    import facerig
    from facerig.detect.mediapipe import FaceDetector

    det = FaceDetector(max_faces=1)

    def measure(a):
        f = det.detect(a)[0].points
        iod = float(np.linalg.norm(f[33, :2] - f[263, :2]))
        gap = (np.linalg.norm(f[159, :2] - f[145, :2]) + np.linalg.norm(f[386, :2] - f[374, :2])) / 2 / iod
        iris_dy = (f[[468, 473], 1].mean() - f[[33, 133, 263, 362], 1].mean()) / iod
        return gap, iris_dy

    g0, i0 = measure(astronaut)
    g1, i1 = measure(facerig.edit(astronaut, gaze=(0.0, -1.0)).image)
    assert 0.78 < g1 / g0 < 1.02, g1 / g0
    assert i1 - i0 > 0.006, i1 - i0


_LOWER_LIDS = ([7, 163, 144, 145, 153, 154, 155], [382, 381, 380, 374, 373, 390, 249])


@pytest.mark.shared_data
def test_looking_up_draws_no_pale_line_along_the_lower_lid():
    """A look up raises the iris more than the lower lid: the photo's eye moved with the iris left a
    strip under it that was painted as eye white only where the mean-moved contour left it (a thin
    pale line along the lower lid, over the hair at person-lexi's far eye corner). Below the iris the
    lower lid's own warp is kept. Measured: the white top-hat (thin light lines, 5 px) of luminance
    in a band along the photo's lower lids, output over photo, the larger eye: 1.22 before, 0.23."""
    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    path = shared_dir() / "data" / "portraits" / "human" / "person-lexi.jpg"
    img = load_image(path)
    s = 768 / max(img.shape[:2])
    if s < 1:
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    model = load_face_model("builtin")
    eng = get_engine("warp")
    params = _fit_one(img, model, "largest", str(path))
    out = eng.render_frame(eng.prepare(img, params, model), EditSpec(controls={"gaze_y": 1.0}).apply(params, model))
    p = np.asarray(params.meta["landmarks_px"])[:, :2]
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (1, 5))
    ratios = []
    for lids, (a, b) in zip(_LOWER_LIDS, ((33, 133), (362, 263)), strict=True):
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.polylines(m, [np.round(p[lids]).astype(np.int32)], False, 1,
                      thickness=max(3, int(0.16 * np.linalg.norm(p[a] - p[b]))))
        th = [cv2.morphologyEx(x.astype(np.float32).mean(2), cv2.MORPH_TOPHAT, k)[m > 0].mean() for x in (img, out)]
        ratios.append(th[1] / max(th[0], 1e-3))
    assert max(ratios) < 0.8, ratios


def test_bare_eye_fills_the_iris_with_the_white_round_it():
    """Where a look aside moves the iris away, the photo's eye with its iris inpainted is shown: on
    a synthetic eye (a dark disc on a white that darkens towards one corner, inside an opening)
    the disc takes the white's own shading (it painted the white's one flat colour before, a pale
    patch in a shadowed corner), and nothing outside the disc changes."""
    from types import SimpleNamespace

    from facerig.engines.warp.engine import WarpEngine

    h, w = 60, 90
    x = np.linspace(0.35, 0.85, w, dtype=np.float32)
    img = np.repeat(np.repeat(x[None, :, None], h, 0), 3, 2).copy()
    yy, xx = np.mgrid[:h, :w]
    disc = np.hypot(xx + 0.5 - 45, yy + 0.5 - 30) < 10
    img[disc] = 0.1
    eye_full = np.zeros((h, w), np.uint8)
    eye_full[15:45, 10:80] = 1
    st = SimpleNamespace(work_hw=(h, w), image=img, eye_full=eye_full, fill_cache={})
    bare = WarpEngine._bare_eye(st, 1, np.array([45.0, 30.0]), 10.0)
    inner = np.hypot(xx + 0.5 - 45, yy + 0.5 - 30) < 8
    white = np.repeat(x[None], h, 0)
    assert np.abs(bare[inner].mean(1) - white[inner]).max() < 0.12
    # the white's gradient carries on across the disc (left darker than right)
    assert bare[30, 38].mean() < bare[30, 52].mean()
    far = np.hypot(xx + 0.5 - 45, yy + 0.5 - 30) > 14
    assert np.array_equal(bare[far], img[far])
    assert ("bare_eye", 1) in st.fill_cache


@pytest.mark.shared_data
def test_raised_brows_paint_no_white_band_over_a_deep_set_eye():
    """raise_brows used to reset the eye part, so the fitted look down of 077559 (eyeLookDown
    0.3-0.5, its shadowed lids) and its squint were dropped and the lids rose: a band of white above
    the iris. Presets now keep the gaze and only accent the lids (and the lids keep half of any
    eyeLookDown change). Measured: the 90th luminance percentile in a band 0.25 eye widths above the
    photo's upper lids, output over photo: 1.93 before, 0.59 with the halving alone, 0.85/0.84 now."""
    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    torch.set_grad_enabled(False)
    img = load_image(shared_dir() / "data" / "portraits" / "pexels-unsplash" / "077559.jpg")
    s = 768 / max(img.shape[:2])
    img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    model = load_face_model("builtin")
    eng = get_engine("warp")
    params = _fit_one(img, model, "largest", "077559.jpg")
    out = eng.render_frame(eng.prepare(img, params, model), EditSpec(preset="raise_brows").apply(params, model))
    p = np.asarray(params.meta["landmarks_px"])[:, :2]
    ratios = []
    for upper, (a, b) in (([246, 161, 160, 159, 158, 157, 173], (33, 133)),
                          ([398, 384, 385, 386, 387, 388, 466], (362, 263))):
        wd = float(np.linalg.norm(p[a] - p[b]))
        m = np.zeros(img.shape[:2], np.uint8)
        pts = p[upper]
        cv2.fillPoly(m, [np.round(np.concatenate([pts, pts[::-1] - [0, 0.25 * wd]])).astype(np.int32)], 1)
        lum = [x.astype(np.float32).mean(2)[m > 0] for x in (img, out)]
        ratios.append(np.percentile(lum[1], 90) / np.percentile(lum[0], 90))
    assert max(ratios) < 1.3, ratios
