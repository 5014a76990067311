"""Edit accuracy (APD/AED/ALD), DECA re-inference protocol, blendshape AUs, CLIP score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.eval import edit_accuracy as ea
from facerig.rotations import ypr_to_axis_angle
from facerig.types import FaceParams

NAMES = ("browInnerUp", "jawOpen", "mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R")


def _params(ypr, exp, light_dc=3.5, names=NAMES) -> FaceParams:  # noqa: ANN001
    b = len(ypr)
    light = torch.zeros(b, 9, 3)
    light[:, 0] = torch.as_tensor(light_dc, dtype=torch.float32).view(-1, 1) if np.ndim(light_dc) else light_dc
    return FaceParams(model="builtin", identity=torch.zeros(b, 4), expression=torch.tensor(exp, dtype=torch.float32),
                      expression_names=names, rotation=ypr_to_axis_angle(torch.tensor(ypr, dtype=torch.float64)).float(),
                      camera=torch.tensor([[5.0, 0, 0]] * b), light=light)


def test_known_rotation_expression_light() -> None:
    req = _params([[0, 0, 0], [10, 0, 0]], [[0.0] * 6, [0.5, 0, 0, 0, 0, 0]], light_dc=[3.5, 3.5])
    est = _params([[10, 0, 0], [10, 0, 0]], [[0.0] * 6, [0.2, 0, 0, 0, 0, 0.3]], light_dc=[3.5, 2.6])
    r = ea.compare_params(req, est)
    assert r["apd_geodesic_deg"] == pytest.approx(5.0, abs=1e-4)  # 10 deg, then 0
    assert r["apd_deg"] == pytest.approx(10 / 3 / 2, abs=1e-4)  # mean over 3 angles and 2 faces
    assert r["apd_yaw_pitch_roll_deg"] == pytest.approx([5.0, 0, 0], abs=1e-4)
    assert r["aed"] == pytest.approx((0.3 + 0.3) / 12, abs=1e-6)
    assert r["ald"] == pytest.approx(0.9 * 3 / (27 * 2), abs=1e-6)
    assert r["light_rmse"] == pytest.approx(np.sqrt(0.81 * 3 / 54), abs=1e-6)
    assert r["num_failed"] == 0 and r["estimator"]
    # restricted names and a row marked invalid
    r2 = ea.compare_params(req, est, names=["browInnerUp"], valid=[False, True])
    assert r2["aed"] == pytest.approx(0.3, abs=1e-6) and r2["num_failed"] == 1 and r2["apd_deg"] == pytest.approx(0.0)


def test_edit_accuracy_with_stub_fitter() -> None:
    from facerig.errors import NoFaceFound

    req = _params([[20, 5, 0], [0, 0, 0]], [[0.1] * 6, [0.0] * 6])
    outs = [np.zeros((32, 32, 3), np.uint8), None]

    def fit_fn(img):  # noqa: ANN001, ANN202
        if img is None:
            raise NoFaceFound("stub")
        return _params([[18, 5, 0]], [[0.1] * 6])

    fit_fn.estimator = "stub fitter"
    r = ea.edit_accuracy(req, outs, fit_fn=fit_fn)
    assert r["num_failed"] == 1 and r["estimator"] == "stub fitter"
    assert r["apd_deg"] == pytest.approx(2 / 3, abs=1e-4) and r["aed"] == pytest.approx(0.0, abs=1e-6)


def test_deca_protocol_with_stub() -> None:
    req = {"pose": np.zeros((3, 6)), "exp": np.zeros((3, 50)), "light": np.zeros((3, 9, 3))}

    def deca(img):  # noqa: ANN001, ANN202
        if img == "none":
            return None
        return {"pose": np.full(6, 0.1), "exp": np.full(50, img), "light": np.zeros((9, 3))}

    r = ea.deca_reinference_rmse(req, [0.2, 0.2, "none"], deca)
    assert r["num_failed"] == 1 and r["pose_rmse"] == pytest.approx(0.1) and r["exp_rmse"] == pytest.approx(0.2)
    assert r["light_rmse"] == 0.0 and r["metric"] == "deca_reinference_rmse"


def test_blendshape_aus_and_accuracy() -> None:
    coeffs = np.array([[1.0, 0.8, 0.6, 0.4, 0.0, 1.0]])
    r = ea.blendshape_aus(coeffs, NAMES)
    au = dict(zip(r["aus"], r["intensity"][0], strict=True))
    assert au["AU01"] == 1.0 and au["AU26"] == pytest.approx(0.8) and au["AU12"] == pytest.approx(0.5)
    assert au["AU45"] == pytest.approx(0.5) and np.isnan(au["AU04"])
    assert "not OpenFace" in r["estimator"]
    acc = ea.au_accuracy(coeffs, np.array([[1.0, 0.0, 0.6, 0.4, 0.0, 1.0]]), names=NAMES)
    assert acc["value"] == pytest.approx(3 / 4)  # AU01, AU12, AU45 agree; AU26 does not


def test_clip_score_with_stub_model() -> None:
    class Stub:
        estimator = "stub CLIP"

        def encode_image(self, x):  # noqa: ANN001, ANN202
            return x.mean((2, 3))

        def encode_text(self, texts):  # noqa: ANN001, ANN202
            return torch.tensor([[1.0, 0, 0] if t == "red" else [0, 0, 1.0] for t in texts])

    imgs = torch.zeros(2, 3, 8, 8)
    imgs[:, 0] = 1
    r = ea.clip_score(imgs, ["red", "blue"], Stub())
    assert r["per_item"] == pytest.approx([100.0, 0.0]) and r["estimator"] == "stub CLIP"


def test_edit_accuracy_real_refit(astronaut: np.ndarray) -> None:
    """Re-fitting the input photo against its own fit gives small APD/AED (the fitter's repeatability)."""
    from facerig.fit.api import FitConfig, fit_image

    cfg = FitConfig(photometric=False)
    p = fit_image(astronaut, config=cfg).params
    r = ea.edit_accuracy(p, [astronaut], fit_config=cfg)
    assert r["num_failed"] == 0 and r["apd_deg"] < 0.5 and r["aed"] < 0.02
    assert "fit_image" in r["estimator"]
