"""Fixtures for the detection tests: one MediaPipe detector per session (building graphs is slow)."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.detect.mediapipe import FaceDetector


@pytest.fixture(scope="session")
def detector():
    det = FaceDetector(max_faces=4)
    yield det
    det.close()


@pytest.fixture(scope="session")
def astronaut_face(detector, astronaut):
    return detector.detect_one(astronaut, source="astronaut")


@pytest.fixture(scope="session")
def grace_face(detector, grace_hopper):
    return detector.detect_one(grace_hopper, source="grace_hopper")


@pytest.fixture(scope="session")
def blank_wall() -> np.ndarray:
    """A plain, slightly noisy beige wall."""
    rng = np.random.default_rng(0)
    img = np.full((480, 640, 3), (200, 190, 170), np.float32) + rng.normal(0, 3, (480, 640, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
