"""Video metrics: landmark jitter, temporal warping error, identity drift, FVD."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.eval import video


def _pts(offset: float) -> np.ndarray:
    p = np.zeros((478, 2))
    p[33] = [100, 100]
    p[263] = [200, 100]  # IOD 100
    return p + offset


def test_landmark_jitter_known_acceleration() -> None:
    steady = [_pts(2.0 * t) for t in range(5)]  # constant velocity -> zero acceleration
    assert video.landmark_jitter(landmarks=steady)["value"] == pytest.approx(0.0)
    shaky = [_pts(0), _pts(3), _pts(0), _pts(3)]  # |a| = 6 px along x and y = 6*sqrt(2)
    r = video.landmark_jitter(landmarks=[p.copy() for p in shaky])
    assert r["value"] == pytest.approx(6 * np.sqrt(2) / 100)
    r2 = video.landmark_jitter(landmarks=[_pts(0), None, _pts(0), _pts(0), _pts(0)])
    assert r2["num_failed"] == 1 and r2["num_skipped_triplets"] == 2 and r2["value"] == 0.0


def _texture(h: int = 96, w: int = 96, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    t = rng.integers(0, 255, (h // 4, w // 4, 3)).astype(np.uint8)
    return cv2.resize(t, (w + 16, h + 16), interpolation=cv2.INTER_CUBIC)


def test_temporal_warping_error() -> None:
    tex = _texture()
    src = [np.ascontiguousarray(tex[8:104, 8 + s:104 + s]) for s in (0, 2, 4)]  # panning 2 px/frame
    same = video.temporal_warping_error(src, src)
    frozen = video.temporal_warping_error(src, [src[0]] * 3)
    assert same["value"] < 0.02
    assert frozen["value"] > 2 * same["value"]
    assert "Farneback" in same["estimator"]


def test_identity_drift_and_fvd() -> None:
    e = np.zeros((4, 128))
    e[1, 0], e[2, 0], e[3] = 0.1, 0.2, np.nan
    r = video.identity_drift(embeddings=e, source_embedding=np.full(128, 0.0))
    assert r["to_first"][:3] == pytest.approx([0, 0.1, 0.2]) and r["num_failed"] == 1
    assert r["slope_per_frame"] == pytest.approx(0.1) and r["to_source_mean"] == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 16))
    assert video.fvd_from_features(f, f)["value"] == pytest.approx(0, abs=1e-6)
    out = video.fvd([1, 2], [3, 4], extractor=lambda clips: rng.normal(size=(20, 4)) + clips[0])
    assert out["metric"] == "fvd" and out["value"] > 0
