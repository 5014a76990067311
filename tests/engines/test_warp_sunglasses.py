"""Dark sunglasses lenses (issue 10): found on a real photo, kept rigid under expression edits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerig.engines.warp.glasses import _dark_lenses


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _synthetic_face(lenses: bool):
    """A flat skin face (MediaPipe-like landmarks only where the detector reads them) with or
    without two dark elliptical lenses over the eyes."""
    from facerig.engines.warp import glasses as G

    h, w = 200, 240
    img = np.full((h, w, 3), (0.8, 0.62, 0.52), np.float32)
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)
    pts = np.zeros((478, 2), np.float64)
    pts[:] = (120.0, 120.0)
    for eye, cx in ((G._R_EYE, 80.0), (G._L_EYE, 160.0)):
        t = np.linspace(0, 2 * np.pi, len(eye), endpoint=False)
        pts[list(eye)] = np.stack([cx - 14 * np.cos(t), 90 + 5 * np.sin(t)], 1)
        cv2.ellipse(img, (int(cx), 90), (14, 5), 0, 0, 360, (0.3, 0.25, 0.25), -1)  # the eye itself
        if lenses:
            cv2.ellipse(img, (int(cx), 92), (30, 17), 0, 0, 360, (0.12, 0.08, 0.07), -1)
    pts[G._R_OUT], pts[G._R_IN], pts[G._L_IN], pts[G._L_OUT] = (66, 90), (94, 90), (146, 90), (174, 90)
    pts[G._R_LOW], pts[G._L_LOW] = (80, 95), (160, 95)
    return img, pts


def test_dark_lenses_synthetic():
    img, pts = _synthetic_face(True)
    m = _dark_lenses(img, pts)
    assert m is not None
    # both lenses covered (eye openings included: the eyes do not show), the cheek not
    assert m[92, 80] > 0.9 and m[92, 160] > 0.9 and m[105, 80] > 0.9
    assert m[150, 80] == 0 and m[92, 120] < 0.5
    bare, pts = _synthetic_face(False)
    assert _dark_lenses(bare, pts) is None


@pytest.mark.shared_data
def test_vlado5_sunglasses_found_and_rigid():
    """person-vlado5's dark sunglasses (41 px IOD at 768 px): detected (missed before 2026-12-03),
    and under raised brows / surprised the lens pixels keep the head's rigid motion (none here:
    no pose change), while without the glasses option they bend with the brows and lids."""
    from facerig.edit import _fit_one
    from facerig.engines import get_engine
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model
    from facerig.rig import EditSpec

    img = load_image(shared_path("data", "portraits", "human", "person-vlado5.jpg"))
    s = 768 / max(img.shape[:2])
    img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    model = load_face_model("builtin")
    params = _fit_one(img, model, "largest", "person-vlado5.jpg")
    eng, plain = get_engine("warp"), get_engine("warp", glasses=False)
    st, st0 = eng.prepare(img, params, model), plain.prepare(img, params, model)
    assert st.glasses is not None and st.glasses.present
    lens = st.glasses.frame > 0.5
    assert lens.sum() > 300
    for preset in ("raise_brows", "surprised"):
        tp = EditSpec(preset=preset).apply(params, model)
        eng.render_frame(st, tp, return_layers=True)
        moved = np.linalg.norm(eng.last_layers["field"][..., :2], axis=2)[lens]
        plain.render_frame(st0, tp, return_layers=True)
        bent = np.linalg.norm(plain.last_layers["field"][..., :2], axis=2)[lens]
        assert np.percentile(moved, 90) < 0.1, (preset, np.percentile(moved, 90))
        assert np.percentile(bent, 90) > 0.3, (preset, np.percentile(bent, 90))
