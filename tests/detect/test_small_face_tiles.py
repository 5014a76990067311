"""A small face in a large photo: found by the tiled pass, or a "no face" message that says to crop."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.errors import NoFaceFound


def _canvas(face: np.ndarray, shape=(3000, 4000)) -> np.ndarray:
    rng = np.random.default_rng(0)
    c = np.clip(120 + rng.normal(0, 10, (*shape, 3)), 0, 255).astype(np.uint8)
    c[1700:1700 + face.shape[0], 2500:2500 + face.shape[1]] = face
    return c


def test_90px_face_in_a_4000x3000_photo_is_found(astronaut):
    import cv2

    from facerig.fit.api import _default_detector

    det = _default_detector()
    s = 90 / det.detect_one(astronaut).size
    small = cv2.resize(astronaut, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    f = det.detect_one(_canvas(small))
    assert 70 < f.size < 110
    assert 2500 < f.box[0] < 2500 + small.shape[1] and 1700 < f.box[1] < 1700 + small.shape[0]


def test_no_face_in_a_large_photo_suggests_cropping():
    from facerig.fit.api import _default_detector

    with pytest.raises(NoFaceFound, match="crop"):
        _default_detector().detect_one(_canvas(np.full((50, 50, 3), 90, np.uint8)))
