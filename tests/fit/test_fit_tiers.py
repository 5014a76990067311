"""The same fitter on every face-model tier: synthetic FLAME (jaw joint, L-BFGS refinement) and ICT."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from facerig.fit.api import FitConfig, float64_copy, landmark_error_report
from facerig.fit.landmark_fit import fit_landmarks, refine_lbfgs
from facerig.render.camera import pose_vertices, project
from facerig.rotations import axis_angle_to_matrix, rotation_angle_deg, ypr_to_axis_angle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from flame_fixture import write_synthetic_flame  # noqa: E402


@pytest.mark.shared_data
def test_flame_jaw_recovered_by_refinement(tmp_path):
    from facerig.morphable.flame import FLAMEFaceModel

    write_synthetic_flame(tmp_path / "generic_model.pkl")
    model = float64_copy(FLAMEFaceModel.load(tmp_path / "generic_model.pkl", n_shape=5, n_exp=3))
    g = torch.Generator().manual_seed(0)
    b = 3
    idc = torch.randn(b, 5, generator=g, dtype=torch.float64) * 0.5
    exc = torch.randn(b, 3, generator=g, dtype=torch.float64) * 0.5
    jaw = torch.zeros(b, 3, dtype=torch.float64)
    jaw[:, 0] = torch.tensor([0.05, 0.15, 0.25], dtype=torch.float64)
    rot = ypr_to_axis_angle(torch.tensor([[10.0, 5.0, 0.0], [-20.0, 0.0, 5.0], [0.0, -10.0, 0.0]], dtype=torch.float64))
    cam = torch.tensor([[8.0, 0.0, 0.0]], dtype=torch.float64).expand(b, -1)  # metres -> NDC
    world = pose_vertices(model(idc, exc, jaw), rot)
    p = project(model.landmarks(world), cam)
    init = fit_landmarks(model, p[..., :2], p[..., 2])
    out = refine_lbfgs(model, p[..., :2], init.base_weights, init.identity, init.expression, init.jaw_pose,
                       init.rotation, init.camera, steps=100, identity_prior=1e-8, expression_prior=1e-9)
    err = rotation_angle_deg(axis_angle_to_matrix(out["rotation"]), axis_angle_to_matrix(rot))
    assert err.max() < 2.0, err
    assert (out["jaw_pose"][:, 0] - jaw[:, 0]).abs().max() < 0.05  # radians


@pytest.mark.shared_data
def test_ict_tier_fits_a_real_photo(astronaut):
    from facerig.detect.mediapipe import FaceDetector
    from facerig.fit.api import fit_landmark_sets
    from facerig.morphable import load_face_model

    model = load_face_model("ict")
    lm = FaceDetector().detect_one(astronaut)
    params = fit_landmark_sets(model, [lm], FitConfig())
    rep = landmark_error_report(model, params, [lm])
    assert rep["landmark_error"]["median_pct_iod"] < 3.0
