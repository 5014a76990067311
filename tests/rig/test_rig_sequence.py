"""Structured face alignment for reenactment and temporal smoothing."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.rig import align_sequence, anchor_ndc, apply_preset, set_expression, smooth_sequence
from facerig.rotations import axis_angle_to_matrix, rotation_angle_deg, ypr_to_axis_angle
from facerig.types import FaceParams


def _driving(model, make, t=6):
    d = make(b=t, seed=11)
    ypr = torch.stack([torch.linspace(-10, 20, t), torch.linspace(0, 8, t), torch.zeros(t)], -1)
    exp = torch.zeros(t, model.n_expression)
    exp[:, model.expression_names.index("jawOpen")] = torch.linspace(0.1, 0.8, t)
    return d.replace(rotation=ypr_to_axis_angle(ypr), expression=exp,
                     camera=d.camera + torch.linspace(0, 1, t)[:, None] * torch.tensor([0.02, 1.0, 0.5]))


def test_align_absolute(model, make):
    src = apply_preset(make(seed=10), "smile", model=model)
    src = src.replace(light=src.light * 0.7)
    drv = _driving(model, make)
    out = align_sequence(src, drv, model)
    assert out.batch_size == drv.batch_size
    assert torch.equal(out.identity, src.identity.expand(6, -1))
    assert torch.equal(out.light, src.light.expand(6, -1, -1))
    assert torch.equal(out.expression, drv.expression)
    assert torch.allclose(out.rotation, drv.rotation)
    assert torch.allclose(out.camera[:, 0], src.camera[:, 0].expand(6))  # the source's scale
    # the source's anchor stays where it was in every frame (the driving's translation is not used)
    a_src = anchor_ndc(src, model).float()
    # anchors are taken on the source's expression: check with it
    check = out.replace(expression=src.expression.expand(6, -1))
    assert torch.allclose(anchor_ndc(check, model).float(), a_src.expand(6, -1), atol=1e-5)


def test_align_relative(model, make):
    src = set_expression(make(seed=10), {"mouthSmile": 0.3}, model)
    src = src.replace(rotation=ypr_to_axis_angle(torch.tensor([[5.0, -3.0, 2.0]])))
    drv = _driving(model, make)
    out = align_sequence(src, drv, model, relative=True)
    # frame 0 reproduces the source exactly
    assert torch.allclose(out.rotation[0], src.rotation[0], atol=1e-6)
    assert torch.allclose(out.expression[0], src.expression[0], atol=1e-6)
    # motion deltas are the driving's
    r_out, r_drv = axis_angle_to_matrix(out.rotation.double()), axis_angle_to_matrix(drv.rotation.double())
    d_out = r_out @ r_out[:1].transpose(-1, -2)
    d_drv = r_drv @ r_drv[:1].transpose(-1, -2)
    assert float(rotation_angle_deg(d_out, d_drv).max()) < 1e-3
    j = model.expression_names.index("jawOpen")
    assert torch.allclose(out.expression[:, j] - out.expression[0, j], drv.expression[:, j] - drv.expression[0, j])
    assert torch.allclose(out.expression[:, model.expression_names.index("mouthSmile_L")], torch.tensor(0.3))


def test_align_validation(model, make):
    with pytest.raises(InvalidInput, match="source"):
        align_sequence(make(b=2), make(b=3), model)
    other = make(b=3)
    other = FaceParams(**{**other.__dict__, "expression": other.expression[:, :10],
                          "expression_names": other.expression_names[:10]})
    with pytest.raises(InvalidInput, match="driving"):
        align_sequence(make(), other, model)


def test_smooth_sequence(model, make):
    t = 40
    g = torch.Generator().manual_seed(0)
    d = make(b=t)
    yaw = torch.linspace(-20, 20, t) + 3 * torch.randn(t, generator=g)
    rot = ypr_to_axis_angle(torch.stack([yaw, torch.zeros(t), torch.zeros(t)], -1))
    exp = (0.5 + 0.4 * torch.randn(t, model.n_expression, generator=g)).clamp(0, 1)
    noisy = d.replace(rotation=rot, expression=exp, camera=d.camera + 0.01 * torch.randn(t, 3, generator=g))
    s = smooth_sequence(noisy, 2.0)
    assert s.batch_size == t
    assert s.expression.min() >= 0 and s.expression.max() <= 1
    # jitter goes down: second differences of yaw and expression shrink
    from facerig.rig import get_pose

    def rough(x):
        return float((x[2:] - 2 * x[1:-1] + x[:-2]).abs().mean())

    assert rough(get_pose(s)[:, 0]) < 0.3 * rough(get_pose(noisy)[:, 0])
    assert rough(s.expression) < 0.3 * rough(noisy.expression)
    assert rough(s.camera) < 0.3 * rough(noisy.camera)
    # a constant / linear-in-angle rotation is preserved (zero phase: no lag)
    lin = d.replace(rotation=ypr_to_axis_angle(torch.stack([torch.linspace(-20, 20, t), torch.zeros(t),
                                                            torch.zeros(t)], -1)))
    ls = smooth_sequence(lin, 2.0)
    mid = slice(8, t - 8)
    assert torch.allclose(get_pose(ls)[mid, 0], get_pose(lin)[mid, 0], atol=0.05)
    assert torch.equal(smooth_sequence(noisy, 0).expression, noisy.expression)
    with pytest.raises(InvalidInput, match="sigma_frames"):
        smooth_sequence(noisy, -1)
