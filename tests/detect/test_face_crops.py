"""Crops: the published recipes (FFHQ, DECA, ArcFace), invertibility, warping and seamless paste-back."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.detect import landmark_sets as L
from facerig.detect.crops import (
    ARCFACE_TEMPLATE_112,
    crop_landmarks,
    deca_crop,
    ffhq_crop,
    insightface_crop,
    paste_back,
    square_crop,
    umeyama_similarity,
    warp_to_crop,
)
from facerig.errors import InvalidInput
from facerig.types import CropTransform

ALL_CROPS = {
    "ffhq": lambda f: ffhq_crop(f, 256),
    "ffhq512": lambda f: ffhq_crop(f, 512),
    "deca": lambda f: deca_crop(f),
    "insightface": lambda f: insightface_crop(f),
    "square": lambda f: square_crop(f, 256, 1.5),
}


def _synthetic68() -> np.ndarray:
    """iBUG-68 points with known eyes (100,100)/(160,100) and mouth corners (110,170)/(150,170)."""
    p = np.zeros((68, 2))
    p[:17] = np.stack([np.linspace(60, 200, 17), 120 + 80 * np.sin(np.linspace(0, np.pi, 17))], 1)
    p[17:27] = np.stack([np.linspace(80, 180, 10), np.full(10, 80.0)], 1)
    p[27:36] = np.stack([np.full(9, 130.0), np.linspace(100, 150, 9)], 1)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False))], 1)
    p[36:42] = (100, 100) + 8 * ring  # mean (100, 100)
    p[42:48] = (160, 100) + 8 * ring
    p[48:68] = (130, 170) + np.stack([np.linspace(-20, 20, 20), np.zeros(20)], 1)
    p[48], p[54] = (110, 170), (150, 170)
    return p


def _psnr(a, b, m):
    d = (a.astype(np.float64) - b.astype(np.float64))[m]
    return 10 * np.log10(255.0**2 / np.mean(d**2))


# ---- recipes ---------------------------------------------------------------------------------


def test_ffhq_synthetic_eyes_where_the_recipe_puts_them():
    c = ffhq_crop(_synthetic68(), 256, frame_size=(300, 300))
    # by hand: eye_to_eye (60, 0), eye_to_mouth (0, 70) -> x = (130, 0) normalised * max(120, 126) = 126,
    # centre = (130, 100) + 0.1 * (0, 70) = (130, 107), crop square [4, 256] x [-19, 233] (side 252)
    k = 256 / 252
    np.testing.assert_allclose(c.apply(np.array([[100.0, 100.0]])), [[(100 - 4) * k, (100 + 19) * k]], atol=1e-9)
    np.testing.assert_allclose(c.apply(np.array([[160.0, 100.0]])), [[(160 - 4) * k, (100 + 19) * k]], atol=1e-9)
    assert c.kind == "ffhq" and c.size == 256 and c.scale == pytest.approx(k)


def test_ffhq_follows_head_roll():
    p = _synthetic68()
    ang = np.deg2rad(20)
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    rolled = (p - 130) @ r.T + 130
    c0 = ffhq_crop(p, 256, frame_size=(300, 300))
    c1 = ffhq_crop(rolled, 256, frame_size=(300, 300))
    np.testing.assert_allclose(c1.apply(rolled), c0.apply(p), atol=1e-8)


@pytest.mark.parametrize("which", ["astronaut_face", "grace_face"])
def test_ffhq_on_real_photos(which, request):
    f = request.getfixturevalue(which)
    c = ffhq_crop(f, 1024)
    q = crop_landmarks(f, c).xy
    e_l = q[list(L.IBUG68[36:42])].mean(0) / 1024
    e_r = q[list(L.IBUG68[42:48])].mean(0) / 1024
    # FFHQ's aligned faces have their eyes near (0.38, 0.48) and (0.62, 0.48) of the image
    np.testing.assert_allclose(e_l, (0.38, 0.48), atol=0.03)
    np.testing.assert_allclose(e_r, (0.62, 0.48), atol=0.03)
    assert abs(e_l[1] - e_r[1]) < 0.01  # nearly level (the recipe also uses the eye-mouth axis)


def test_deca_matches_decas_skimage_transform(astronaut_face):
    from skimage.transform import estimate_transform

    c = deca_crop(astronaut_face, 224, 1.25)
    # DECA's own computation, in skimage's pixel-index convention (centre of pixel 0 at 0)
    p68 = astronaut_face.xy[list(L.IBUG68)].astype(np.float64) - 0.5
    left, top = p68.min(0)
    right, bottom = p68.max(0)
    old_size = (right - left + bottom - top) / 2 * 1.1
    center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
    size = int(old_size * 1.25)
    src = np.array([[center[0] - size / 2, center[1] - size / 2], [center[0] - size / 2, center[1] + size / 2],
                    [center[0] + size / 2, center[1] - size / 2]])
    dst = np.array([[0, 0], [0, 223], [223, 0]])
    tform = estimate_transform("similarity", src, dst)
    pts = astronaut_face.xy.astype(np.float64)
    ref = tform(pts - 0.5) + 0.5
    np.testing.assert_allclose(c.apply(pts), ref, atol=1e-6)
    assert c.kind == "deca"


def test_insightface_maps_template_points_onto_the_template():
    pts = np.zeros((478, 2))
    frame_pts = (ARCFACE_TEMPLATE_112 + 0.5) * 2.5 + (40, 30)
    pts[list(L.FIVE_POINTS)] = frame_pts
    c = insightface_crop(pts, 112, frame_size=(400, 400))
    np.testing.assert_allclose(c.apply(frame_pts), ARCFACE_TEMPLATE_112 + 0.5, atol=1e-9)
    assert c.scale == pytest.approx(1 / 2.5)
    c128 = insightface_crop(pts, 128, frame_size=(400, 400))
    np.testing.assert_allclose(c128.apply(frame_pts)[:, 0], ARCFACE_TEMPLATE_112[:, 0] + 8 + 0.5, atol=1e-9)


def test_umeyama_matches_skimage():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(1)
    src = rng.normal(size=(5, 2)) * 30 + 100
    dst = rng.normal(size=(5, 2)) * 20 + 50
    t = SimilarityTransform.from_estimate(src, dst)
    np.testing.assert_allclose(umeyama_similarity(src, dst), t.params[:2], atol=1e-9)


def test_insightface_on_real_photo(astronaut_face, astronaut):
    c = insightface_crop(astronaut_face)
    q = c.apply(astronaut_face.xy[list(L.FIVE_POINTS)])
    assert np.abs(q - (ARCFACE_TEMPLATE_112 + 0.5)).max() < 8  # a frontal (smiling) face fits it well
    assert warp_to_crop(astronaut, c).shape == (112, 112, 3)


def test_square_crop_centres_the_box(astronaut_face):
    c = square_crop(astronaut_face, 200, 1.5)
    x0, y0, x1, y1 = astronaut_face.box
    np.testing.assert_allclose(c.apply(np.array([[(x0 + x1) / 2, (y0 + y1) / 2]])), [[100, 100]], atol=1e-9)
    assert c.scale == pytest.approx(200 / (1.5 * max(x1 - x0, y1 - y0)))


@pytest.mark.parametrize("name", list(ALL_CROPS))
def test_round_trip_points(name, astronaut_face):
    c = ALL_CROPS[name](astronaut_face)
    assert isinstance(c, CropTransform) and c.frame_size == (512, 512)
    p = astronaut_face.points.astype(np.float64)
    np.testing.assert_allclose(c.invert(c.apply(p)), p, atol=1e-9)
    rng = np.random.default_rng(0)
    q = rng.uniform(-50, 600, size=(100, 2))
    np.testing.assert_allclose(c.invert(c.apply(q)), q, atol=1e-9)
    d = CropTransform.from_dict(c.to_dict())
    np.testing.assert_allclose(d.apply(q), c.apply(q))


def test_crop_inputs_validated():
    with pytest.raises(InvalidInput, match="frame_size"):
        ffhq_crop(_synthetic68())
    with pytest.raises(InvalidInput):
        ffhq_crop(np.zeros((10, 2)), frame_size=(100, 100))
    with pytest.raises(InvalidInput):
        deca_crop(np.zeros((68, 2)), frame_size=(100, 100))


# ---- warping ---------------------------------------------------------------------------------


def test_warp_translation_is_an_exact_copy():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
    c = CropTransform(np.array([[1.0, 0, -10], [0, 1.0, -20]]), 50, (100, 120))
    np.testing.assert_array_equal(warp_to_crop(img, c), img[20:70, 10:60])
    np.testing.assert_array_equal(warp_to_crop(img, c, interpolation="linear"), img[20:70, 10:60])
    gray = img[..., 0]
    np.testing.assert_array_equal(warp_to_crop(gray, c), gray[20:70, 10:60])
    many = rng.random((100, 120, 6)).astype(np.float32)
    out = warp_to_crop(many, c)
    assert out.dtype == np.float32 and out.shape == (50, 50, 6)
    np.testing.assert_allclose(out, many[20:70, 10:60], atol=1e-6)
    with pytest.raises(InvalidInput):
        warp_to_crop(img[:50], c)
    with pytest.raises(InvalidInput):
        warp_to_crop(img, c, border="wrap")


def test_warp_borders():
    img = np.full((40, 40, 3), 200, np.uint8)
    c = CropTransform(np.array([[1.0, 0, 20], [0, 1.0, 20]]), 40, (40, 40))  # frame sits at the bottom right
    assert warp_to_crop(img, c, border="constant")[0, 0].tolist() == [0, 0, 0]
    assert warp_to_crop(img, c, border="replicate")[0, 0].tolist() == [200, 200, 200]


def test_strong_shrink_is_area_filtered(astronaut, astronaut_face):
    import cv2

    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    c_small = ffhq_crop(astronaut_face, 128)
    s = np.diag([0.25, 0.25, 1.0])
    c_big = CropTransform(c_small.matrix @ s, 128, (2048, 2048))  # the same crop of the 4x frame
    assert c_big.scale < 0.5
    reference = cv2.resize(warp_to_crop(astronaut, ffhq_crop(astronaut_face, 512)), (128, 128),
                           interpolation=cv2.INTER_AREA)
    out = warp_to_crop(big, c_big)
    m = np.zeros((128, 128), bool)
    m[4:-4, 4:-4] = True
    assert _psnr(reference, out, m) > 38


@pytest.mark.parametrize("name", ["ffhq", "ffhq512", "deca", "square"])
def test_paste_back_of_unchanged_crop_reproduces_frame(name, astronaut, astronaut_face):
    c = ALL_CROPS[name](astronaut_face)
    assert c.scale >= 1.0
    crop = warp_to_crop(astronaut, c)
    back = paste_back(astronaut, crop, c)
    assert back.dtype == np.uint8 and back.shape == astronaut.shape
    yy, xx = np.mgrid[0:512, 0:512]
    q = c.apply(np.stack([xx + 0.5, yy + 0.5], -1).reshape(-1, 2)).reshape(512, 512, 2)
    inside = (q.min(-1) > 0) & (q.max(-1) < c.size)
    assert _psnr(astronaut, back, inside) > 40
    far = (q.min(-1) < -3) | (q.max(-1) > c.size + 3)
    np.testing.assert_array_equal(back[far], astronaut[far])  # untouched outside the crop


def test_paste_back_is_seamless(astronaut_face):
    frame = np.zeros((512, 512, 3), np.uint8)
    c = square_crop(astronaut_face, 256, 1.5)
    white = np.full((256, 256, 3), 255, np.uint8)
    out = paste_back(frame, white, c, feather_px=16)
    # along a horizontal line through the face centre: a smooth ramp, no jump
    row = out[int((astronaut_face.box[1] + astronaut_face.box[3]) / 2), :, 0].astype(int)
    assert row.max() == 255 and row.min() == 0
    assert np.abs(np.diff(row)).max() <= 40
    centre = c.invert(np.array([[128.0, 128.0]]))[0].astype(int)
    assert out[centre[1], centre[0], 0] == 255


def test_paste_back_with_mask(astronaut, astronaut_face):
    c = ffhq_crop(astronaut_face, 256)
    crop = warp_to_crop(astronaut, c)
    edited = np.zeros_like(crop)
    mask = np.zeros((256, 256), np.float32)
    mask[96:160, 96:160] = 1.0
    out = paste_back(astronaut, edited, c, mask=mask, feather_px=4)
    inside = c.invert(np.array([[128.0, 128.0]]))[0].astype(int)
    outside = c.invert(np.array([[30.0, 30.0]]))[0].astype(int)
    assert out[inside[1], inside[0]].max() <= 2
    np.testing.assert_array_equal(out[outside[1], outside[0]], astronaut[outside[1], outside[0]])
    float_frame = astronaut.astype(np.float32) / 255
    out_f = paste_back(float_frame, crop.astype(np.float32) / 255, c)
    assert out_f.dtype == np.float32
    with pytest.raises(InvalidInput):
        paste_back(astronaut, crop[:100], c)
    with pytest.raises(InvalidInput):
        paste_back(astronaut, crop[..., 0], c)
