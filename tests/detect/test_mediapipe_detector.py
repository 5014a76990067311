"""FaceDetector on real package photos, resized and composed images, bad inputs and a video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerig.detect import landmark_sets as L
from facerig.errors import FaceTooSmall, ImageTooSmall, NoFaceFound
from facerig.io.assets import shared_path
from facerig.types import FaceLandmarks


def _check_face(f: FaceLandmarks, hw):
    h, w = hw
    assert isinstance(f, FaceLandmarks)
    assert f.points.shape == (478, 3) and f.points.dtype == np.float32
    assert f.frame_size == (h, w)
    x, y = f.points[:, 0], f.points[:, 1]
    assert (x >= 0).all() and (x < w).all() and (y >= 0).all() and (y < h).all()
    x0, y0, x1, y1 = f.box
    assert x0 == pytest.approx(x.min()) and y1 == pytest.approx(y.max())
    assert 0.5 <= f.score <= 1.0
    assert np.abs(f.points[:, 2]).max() < f.size  # z in pixels, same order as the face size


def test_astronaut(astronaut_face, astronaut):
    f = astronaut_face
    _check_face(f, astronaut.shape[:2])
    # eye corners where they are in the photo (measured once; a few px of tolerance)
    np.testing.assert_allclose(f.xy[L.RIGHT_EYE_OUTER], (195, 101), atol=6)
    np.testing.assert_allclose(f.xy[L.LEFT_EYE_OUTER], (256, 104), atol=6)
    np.testing.assert_allclose(f.xy[L.CHIN], (221, 177), atol=8)
    assert 80 < f.size < 130


def test_grace_hopper(grace_face, grace_hopper):
    f = grace_face
    _check_face(f, grace_hopper.shape[:2])
    eye_dist = np.linalg.norm(f.xy[L.LEFT_EYE_OUTER] - f.xy[L.RIGHT_EYE_OUTER])
    assert 0.35 < eye_dist / f.size < 0.8
    assert f.xy[L.NOSE_TIP, 0] == pytest.approx(grace_hopper.shape[1] / 2, abs=60)


def test_blank_wall_has_no_face(detector, blank_wall):
    assert detector.detect(blank_wall) == []
    with pytest.raises(NoFaceFound, match="wall.png"):
        detector.detect_one(blank_wall, source="wall.png")


def test_too_small_image_is_refused_before_detection(detector):
    with pytest.raises(ImageTooSmall):
        detector.detect(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageTooSmall):
        detector.detect_one(np.zeros((10, 300, 3), np.uint8))


def test_face_too_small_raises(astronaut):
    from facerig.detect.mediapipe import FaceDetector

    with FaceDetector(min_face_px=500) as det:
        with pytest.raises(FaceTooSmall, match="500"):
            det.detect_one(astronaut, source="astronaut")
        with pytest.raises(NoFaceFound, match="face 3"):
            det.detect_one(astronaut, select=3)


def test_small_image_upscaled_and_mapped_back(detector, astronaut, astronaut_face):
    s = 200 / 512
    small = cv2.resize(astronaut, (200, 200), interpolation=cv2.INTER_AREA)  # face ~38 px
    f = detector.detect(small)[0]
    assert f.frame_size == (200, 200)
    err = np.abs(f.xy / s - astronaut_face.xy).mean() / astronaut_face.size
    assert err < 0.02, err


def test_large_image_downscaled_and_mapped_back(astronaut, astronaut_face):
    from facerig.detect.mediapipe import FaceDetector

    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_CUBIC)
    with FaceDetector(max_side=1024) as det:  # 2560 > max_side: detected on a 1024 px copy
        f = det.detect_one(big, source="big")
    assert f.frame_size == (2560, 2560)
    err = np.abs(f.xy / 5.0 - astronaut_face.xy).mean() / astronaut_face.size
    assert err < 0.01, err
    assert f.points[:, 2].std() == pytest.approx(astronaut_face.points[:, 2].std() * 5, rel=0.1)


def test_two_faces_sorted_largest_first(detector, astronaut, grace_hopper):
    g = cv2.resize(grace_hopper, (320, 375), interpolation=cv2.INTER_AREA)  # face ~123 px
    canvas = np.full((400, 360 + 320, 3), 255, np.uint8)
    canvas[:, :360] = astronaut[:400, 60:420]  # face ~100 px
    canvas[:375, 360:] = g
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].size >= faces[1].size
    assert faces[0].box[0] > 360  # Grace Hopper's (larger) face is on the right
    second = detector.detect_one(canvas, select=1)
    assert second.box[2] < 360
    assert detector.detect_one(canvas, select=-1).box == second.box


def test_detect_batch_and_paths(detector, astronaut, grace_hopper, blank_wall, tmp_path):
    from facerig.io.image import save_image

    p = save_image(tmp_path / "astro.png", astronaut)
    res = detector.detect_batch([p, blank_wall, grace_hopper])
    assert [len(r) for r in res] == [1, 0, 1]
    assert res[2][0].frame_index == 2


def test_detect_video_tracks_and_gives_none_without_face(detector, astronaut, blank_wall):
    frames = []
    for i in range(8):
        m = np.float32([[1, 0, 3 * i], [0, 1, 2 * i]])
        frames.append(cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REPLICATE))
    frames[4] = cv2.resize(blank_wall, (512, 512))
    out = detector.detect_video(frames)
    assert len(out) == 8 and out[4] is None
    assert all(o is not None for i, o in enumerate(out) if i != 4)
    base = out[0].xy[L.NOSE_TIP]
    for i in (1, 3, 5, 7):
        np.testing.assert_allclose(out[i].xy[L.NOSE_TIP] - base, (3 * i, 2 * i), atol=2.5)
        assert out[i].frame_index == i


@pytest.mark.shared_data
def test_real_video_clip(detector):
    p = shared_path("data", "videos", "mead", "W009_front_neutral_level1_001.mp4")
    if p is None:
        pytest.skip("clip not in ../shared/data/videos/mead")
    from facerig.io.video import iter_frames

    out = detector.detect_video(iter_frames(p, max_frames=20))
    assert len(out) == 20 and sum(o is not None for o in out) >= 18
    nose = np.array([o.xy[L.NOSE_TIP] for o in out if o is not None])
    assert np.abs(np.diff(nose, axis=0)).max() < 10  # a steady talking head: no jumps
