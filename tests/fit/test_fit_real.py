"""Real photos: detection succeeds and the builtin model's landmark reprojection error stays low."""

from __future__ import annotations

import numpy as np
import pytest

from facerig.fit.api import FitConfig, fit_image, fit_video
from facerig.io.assets import shared_path

MEDIAN_LIMIT = 3.0  # % of the inter-ocular distance, issue 2


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_package_photos(name, request):
    image = request.getfixturevalue(name)
    r = fit_image(image)
    err = r.report["landmark_error"]
    assert err["median_pct_iod"] < MEDIAN_LIMIT
    assert err["p90_pct_iod"] < 2 * MEDIAN_LIMIT
    photo = r.report["photometric"]["summary"]
    assert photo["mae_vertex_albedo_255"] < 25
    assert photo["shading_r2"] > 0.1  # the fitted light explains part of the skin's shading
    assert r.params.albedo.shape == (1, 478, 3)


@pytest.mark.shared_data
def test_shared_portraits():
    root = shared_path("data", "portraits", "deepface")
    files = sorted(root.glob("img*.jpg"))[:10]
    meds = [fit_image(str(f), config=FitConfig(photometric=False)).report["landmark_error"]["median_pct_iod"]
            for f in files]
    assert np.median(meds) < MEDIAN_LIMIT and max(meds) < 2 * MEDIAN_LIMIT


@pytest.mark.shared_data
def test_shared_video_clip():
    clips = sorted(shared_path("data", "videos").rglob("*.mp4"))
    r = fit_video(str(clips[0]), max_frames=24, config=FitConfig(photometric=False))
    assert r.params.batch_size == 24
    assert r.report["landmark_error"]["median_pct_iod"] < MEDIAN_LIMIT
    ypr_jumps = np.abs(np.diff(r.params.rotation.numpy(), axis=0)).max()
    assert ypr_jumps < 0.05  # radians between consecutive frames: smooth
