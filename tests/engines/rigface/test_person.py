"""The person region (MediaPipe selfie segmentation + face hull) and the grey-127 painting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.engines.rigface.person import GREY, face_hull_mask, paint_background, person_mask
from facerig.errors import InvalidInput


def test_paint_background_uint8_exact_grey_inside_untouched_outside(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random(astronaut.shape[:2]) > 0.6
    out = paint_background(astronaut, mask)
    assert out.dtype == np.uint8 and out.shape == astronaut.shape
    assert (out[mask] == GREY).all() and GREY == 127
    np.testing.assert_array_equal(out[~mask], astronaut[~mask])
    assert not np.shares_memory(out, astronaut)
    with pytest.raises(InvalidInput, match="mask"):
        paint_background(astronaut, mask[:10])
    with pytest.raises(InvalidInput, match="image"):
        paint_background(astronaut.astype(np.float32), mask)


def test_paint_background_tensor_same_grey_after_mapping(astronaut: np.ndarray) -> None:
    x = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 127.5 - 1
    mask = np.zeros(astronaut.shape[:2], bool)
    mask[100:300, 50:400] = True
    out = paint_background(x, mask)
    m = torch.from_numpy(mask)
    assert torch.all(out[0][:, m] == torch.tensor(127 / 127.5 - 1))
    assert torch.equal(out[0][:, ~m], x[0][:, ~m])
    # uint8 painting then mapping gives the same tensor
    ref = torch.from_numpy(paint_background(astronaut, mask)).permute(2, 0, 1)[None].float() / 127.5 - 1
    torch.testing.assert_close(out, ref)


def test_mask_cleanup_on_a_given_segmentation() -> None:
    img = np.zeros((96, 96, 3), np.uint8)
    soft = np.zeros((96, 96), np.float32)
    soft[30:96, 20:76] = 0.9      # the person
    soft[50:60, 40:50] = 0.1      # a hole (glasses lens, open mouth)
    soft[2:4, 2:4] = 0.9          # a speck far away
    m = person_mask(img, soft=soft, detect=False, grow=0)
    assert m[55, 45] and not m[3, 3]
    assert m[30:96, 20:76].all() and m.sum() == (96 - 30) * (76 - 20)
    # the face hull is added even where the segmenter saw nothing
    face = np.array([[40.0, 5.0], [60.0, 5.0], [60.0, 28.0], [40.0, 28.0]])
    m2 = person_mask(img, soft=soft, face=face, grow=0)
    assert m2[10, 50] and m2[20:29, 41:59].all()
    # dilation
    m3 = person_mask(img, soft=soft, detect=False, grow=2)
    assert m3[30:96, 18:78].all() and not m3[30:96, :16].any()
    with pytest.raises(InvalidInput, match="threshold"):
        person_mask(img, soft=soft, threshold=1.5)
    with pytest.raises(InvalidInput, match="soft"):
        person_mask(img, soft=soft[:10])


def test_face_hull_reaches_below_the_chin() -> None:
    pts = np.array([[40.0, 20.0], [80.0, 20.0], [80.0, 80.0], [40.0, 80.0]])
    m = face_hull_mask(pts, (128, 128))
    assert m[50, 60] and m[95, 60]   # neck below the chin (face height 60 -> +21 px)
    assert not m[95, 40] and not m[5, 60]


def _check_person(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from facerig.detect import FaceDetector

    pts = np.asarray(FaceDetector().detect_one(img).points)[:, :2]
    m = person_mask(img, face=pts)
    hull = face_hull_mask(pts, img.shape[:2], neck=0.0)
    assert m.dtype == np.bool_ and m.shape == img.shape[:2]
    assert m[hull].mean() > 0.999
    return m, pts


def test_astronaut_face_hair_suit_not_background(astronaut: np.ndarray) -> None:
    m, pts = _check_person(astronaut)
    assert 0.35 < m.mean() < 0.75
    top = int(pts[:, 1].min())
    cx = int(pts[:, 0].mean())
    assert m[max(top - 15, 0), cx]           # hair above the mesh's forehead
    assert m[480, 100] and m[470, 250]        # the suit
    for y, x in [(30, 480), (30, 30), (300, 480), (250, 30)]:
        assert not m[y, x], (y, x)            # wall and flag


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["deepface/img12.jpg", "pexels-unsplash/038648.jpg",
                                  "pexels-unsplash/pexels-daniel-xavier-1239291.jpg", "mica/carell.jpg"])
def test_shared_portraits(name: str) -> None:
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image

    p = shared_path("data", "portraits", *name.split("/"))
    if p is None:
        pytest.skip(f"{name} absent")
    img = load_image(p)
    m, pts = _check_person(img)
    assert 0.15 < m.mean() < 0.9
    # some background remains in the upper corners, beside the head
    h, w = m.shape
    corners = [m[: h // 10, : w // 10].mean(), m[: h // 10, -w // 10:].mean()]
    assert min(corners) < 0.5


def test_earring_band_beside_the_jaw(astronaut: np.ndarray) -> None:
    from facerig.detect import FaceDetector
    from facerig.engines.rigface.person import earring_zone

    pts = np.asarray(FaceDetector().detect_one(astronaut).points)[:, :2]
    z = earring_zone(pts, astronaut.shape[:2])
    lo, hi = pts.min(0), pts.max(0)
    fw = hi[0] - lo[0]
    ys, xs = np.nonzero(z)
    assert 0 < z.mean() < 0.03
    # on both sides, reaching outside the face's jaw, not above the ears nor below the chin by far
    assert xs.min() < pts[234, 0] - 0.05 * fw and xs.max() > pts[454, 0] + 0.05 * fw
    assert ys.min() >= pts[[234, 454], 1].min() - 2 and ys.max() <= hi[1] + 2
    # only MediaPipe point sets have the ear/jaw ids
    assert not earring_zone(pts[:68], astronaut.shape[:2]).any()
    # of the band, an "earring" joins the person, the plain background beside the jaw does not
    hull = face_hull_mask(pts, astronaut.shape[:2])
    img = astronaut.copy()
    img[~hull] = (235, 235, 230)
    band = z & ~hull
    bys, bxs = np.nonzero(band)
    left = bxs < pts[:, 0].mean()
    cy, cx = int(np.median(bys[left])), int(np.median(bxs[left]))
    img[cy - 6:cy + 6, cx - 3:cx + 3] = (120, 40, 90)
    m = person_mask(img, face=pts, soft=np.zeros(img.shape[:2], np.float32), grow=0)
    assert m[cy - 6:cy + 6, cx - 3:cx + 3].all()
    plain = band.copy()
    plain[cy - 10:cy + 10, cx - 8:cx + 8] = False
    assert m[plain].mean() < 0.05
