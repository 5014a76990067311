"""Head-pose edits: directions, relative/absolute, anchoring (reprojection of the eye-mouth centre)."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import anchor_ndc, apply_preset, get_pose, set_pose, transfer_pose
from facerig.rotations import ypr_to_axis_angle


@pytest.mark.parametrize("kind", ["weak_perspective", "perspective"])
def test_yaw_moves_nose_right_and_keeps_anchor(model, make, posed, kind):
    p = make(camera_kind=kind, seed=3)
    q = set_pose(p, model, yaw=15)
    _, ndc0 = posed(p, model)
    _, ndc1 = posed(q, model)
    assert float(ndc1[0, 1, 0]) > float(ndc0[0, 1, 0]) + 0.01  # nose tip (1) to image right
    assert torch.allclose(anchor_ndc(q, model), anchor_ndc(p, model), atol=1e-5)
    assert torch.allclose(get_pose(q), torch.tensor([[15.0, 0.0, 0.0]], dtype=torch.float64), atol=1e-4)
    assert torch.equal(q.expression, p.expression) and torch.equal(q.light, p.light)
    if kind == "weak_perspective":
        assert q.camera[0, 0] == p.camera[0, 0]  # scale kept


def test_pitch_and_roll_directions(model, params, posed):
    _, ndc0 = posed(params, model)
    up = posed(set_pose(params, model, pitch=15), model)[1]
    assert float(up[0, 1, 1]) < float(ndc0[0, 1, 1]) - 0.005  # nose up = smaller NDC y (y down)
    rolled = posed(set_pose(params, model, roll=20), model)[1]
    # counter-clockwise on screen: the subject's left eye corner (263, image right) goes up
    assert float(rolled[0, 263, 1]) < float(ndc0[0, 263, 1]) - 0.01


def test_relative_vs_absolute(model, make):
    p = make(rotation=ypr_to_axis_angle(torch.tensor([[10.0, 5.0, -3.0]])))
    rel = set_pose(p, model, yaw=15)
    assert torch.allclose(get_pose(rel), torch.tensor([[25.0, 5.0, -3.0]], dtype=torch.float64), atol=1e-3)
    ab = set_pose(p, model, yaw=15, relative=False)
    assert torch.allclose(get_pose(ab), torch.tensor([[15.0, 5.0, -3.0]], dtype=torch.float64), atol=1e-3)
    twice = set_pose(set_pose(p, model, yaw=10, pitch=-5), model, yaw=10, pitch=-5)
    assert torch.allclose(get_pose(twice), torch.tensor([[30.0, -5.0, -3.0]], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(anchor_ndc(twice, model), anchor_ndc(p, model), atol=1e-5)


def test_per_face_angles_and_batch(model, make):
    p = make(b=3, seed=4)
    q = set_pose(p, model, yaw=[0.0, 10.0, -20.0], pitch=5)
    assert torch.allclose(get_pose(q)[:, 0], torch.tensor([0.0, 10.0, -20.0], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(anchor_ndc(q, model), anchor_ndc(p, model), atol=1e-5)


def test_pose_with_expression_keeps_anchor(model, make):
    p = apply_preset(make(seed=5), "open_mouth", model=model)
    q = set_pose(p, model, yaw=-25, pitch=10, roll=5)
    assert torch.allclose(anchor_ndc(q, model), anchor_ndc(p, model), atol=1e-5)


def test_transfer_pose(model, make):
    p = make(b=2, seed=6, camera_kind="perspective")
    ref = make(rotation=ypr_to_axis_angle(torch.tensor([[-20.0, 10.0, 4.0]])))
    q = transfer_pose(p, ref, model)
    assert torch.allclose(q.rotation, ref.rotation.expand(2, -1), atol=1e-6)
    assert torch.allclose(anchor_ndc(q, model), anchor_ndc(p, model), atol=1e-5)
    assert torch.equal(q.identity, p.identity)
    with pytest.raises(InvalidInput, match="reference_params"):
        transfer_pose(p, make(b=3), model)


def test_pose_validation(model, params):
    with pytest.raises(InvalidInput, match="pitch"):
        set_pose(params, model, pitch=95, relative=False)
    with pytest.raises(InvalidInput, match="yaw"):
        set_pose(params, model, yaw=float("inf"))
    with pytest.raises(InvalidInput, match="yaw"):
        set_pose(params, model, yaw="left")
    with pytest.raises(InvalidInput, match="yaw"):
        set_pose(params, model, yaw=[1.0, 2.0])  # batch is 1
    with pytest.raises(InvalidInput, match="model"):
        set_pose(params, None, yaw=5)
