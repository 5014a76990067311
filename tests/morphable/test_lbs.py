"""Linear blend skinning math (facerig.morphable.lbs) on small random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.morphable.lbs import (
    batch_rigid_transform,
    blend_shapes,
    lbs,
    pose_features,
    posedirs_from_pickle,
    vertices2joints,
    vertices_to_landmarks,
)
from facerig.rotations import axis_angle_to_matrix

PARENTS = [-1, 0, 1, 1, 1]  # FLAME: root, neck, jaw, left eye, right eye


def small_model(v=12, k=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    jreg = torch.rand(5, v, generator=g, dtype=dtype)
    jreg = jreg / jreg.sum(1, keepdim=True)
    w = torch.rand(v, 5, generator=g, dtype=dtype)
    w = w / w.sum(1, keepdim=True)
    return dict(v_template=r(v, 3), shapedirs=0.1 * r(v, 3, k), posedirs=0.05 * r(36, v * 3),
                J_regressor=jreg, parents=torch.tensor(PARENTS), lbs_weights=w)


def reference_lbs(betas, pose, m):
    """Straightforward per-sample, per-vertex implementation to compare against."""
    out = []
    for b in range(betas.shape[0]):
        vs = m["v_template"] + (m["shapedirs"] * betas[b]).sum(-1)
        j = m["J_regressor"] @ vs
        rots = [axis_angle_to_matrix(pose[b, 3 * i : 3 * i + 3]) for i in range(5)]
        feat = torch.cat([(rots[i] - torch.eye(3, dtype=vs.dtype)).reshape(-1) for i in range(1, 5)])
        vp = vs + (feat @ m["posedirs"]).reshape(-1, 3)
        world = []
        for i in range(5):
            t = torch.eye(4, dtype=vs.dtype)
            t[:3, :3] = rots[i]
            t[:3, 3] = j[i] - (j[PARENTS[i]] if i else 0)
            world.append(t if i == 0 else world[PARENTS[i]] @ t)
        verts = []
        for v in range(vp.shape[0]):
            acc = torch.zeros(4, 4, dtype=vs.dtype)
            for i in range(5):
                rest_inv = torch.eye(4, dtype=vs.dtype)
                rest_inv[:3, 3] = -j[i]
                acc = acc + m["lbs_weights"][v, i] * (world[i] @ rest_inv)
            verts.append((acc @ torch.cat([vp[v], torch.ones(1, dtype=vs.dtype)]))[:3])
        out.append(torch.stack(verts))
    return torch.stack(out)


def test_blend_shapes_and_joints():
    m = small_model()
    betas = torch.randn(3, 4, dtype=torch.float64)
    bs = blend_shapes(betas, m["shapedirs"])
    manual = torch.stack([(m["shapedirs"] * betas[b]).sum(-1) for b in range(3)])
    torch.testing.assert_close(bs, manual)
    # fewer betas than modes uses the first ones
    torch.testing.assert_close(blend_shapes(betas[:, :2], m["shapedirs"]), blend_shapes(
        torch.cat([betas[:, :2], torch.zeros(3, 2, dtype=torch.float64)], 1), m["shapedirs"]))
    j = vertices2joints(m["J_regressor"], m["v_template"][None].expand(3, -1, -1))
    torch.testing.assert_close(j[1], m["J_regressor"] @ m["v_template"])


def test_pose_features_layout():
    aa = torch.randn(2, 5, 3, dtype=torch.float64)
    rot = axis_angle_to_matrix(aa)
    f = pose_features(rot)
    assert f.shape == (2, 36)
    torch.testing.assert_close(f[1, 9:18], (rot[1, 2] - torch.eye(3, dtype=torch.float64)).reshape(-1))
    assert pose_features(torch.eye(3).expand(1, 5, 3, 3)).abs().max() == 0


def test_posedirs_from_pickle_layout():
    """pickle (V, 3, 36) -> (36, V*3): offset of vertex v, coordinate c = sum_p P[v, c, p] f[p]."""
    p_v3p = torch.randn(7, 3, 36, dtype=torch.float64)
    feat = torch.randn(36, dtype=torch.float64)
    off = (feat @ posedirs_from_pickle(p_v3p)).reshape(7, 3)
    torch.testing.assert_close(off, torch.einsum("vcp,p->vc", p_v3p, feat))
    np.testing.assert_allclose(posedirs_from_pickle(p_v3p).numpy(), np.reshape(p_v3p.numpy(), [-1, 36]).T)


def test_lbs_matches_reference():
    m = small_model()
    betas = torch.randn(2, 4, dtype=torch.float64)
    pose = 0.4 * torch.randn(2, 15, dtype=torch.float64)
    verts, joints = lbs(betas, pose, **m)
    torch.testing.assert_close(verts, reference_lbs(betas, pose, m))
    assert joints.shape == (2, 5, 3) and verts.dtype == torch.float64


def test_zero_pose_is_template_plus_blend_shapes():
    m = small_model()
    betas = torch.randn(3, 4, dtype=torch.float64)
    verts, joints = lbs(betas, torch.zeros(3, 15, dtype=torch.float64), **m)
    expected = m["v_template"] + blend_shapes(betas, m["shapedirs"])
    assert torch.equal(verts, expected)
    torch.testing.assert_close(joints, vertices2joints(m["J_regressor"], expected))


def test_translation_invariance_and_root_rotation():
    m = small_model()
    betas = torch.randn(2, 4, dtype=torch.float64)
    pose = 0.5 * torch.randn(2, 15, dtype=torch.float64)
    pose[:, :3] = 0
    v0, j0 = lbs(betas, pose, **m)
    t = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    v1, j1 = lbs(betas, pose, **{**m, "v_template": m["v_template"] + t})
    torch.testing.assert_close(v1, v0 + t)
    torch.testing.assert_close(j1, j0 + t)
    # a root rotation rotates everything about the root joint
    root = torch.tensor([0.1, 0.7, -0.2], dtype=torch.float64)
    pose_r = pose.clone()
    pose_r[:, :3] = root
    v2, _ = lbs(betas, pose_r, **m)
    r = axis_angle_to_matrix(root)
    c = j0[:, :1]
    torch.testing.assert_close(v2, (v0 - c) @ r.T + c)


def test_rotation_matrix_input_and_broadcast_template():
    m = small_model()
    betas = torch.randn(2, 4, dtype=torch.float64)
    pose = 0.3 * torch.randn(2, 15, dtype=torch.float64)
    rot = axis_angle_to_matrix(pose.reshape(2, 5, 3))
    a, _ = lbs(betas, pose, **m)
    b, _ = lbs(betas, rot, **m, pose2rot=False)
    torch.testing.assert_close(a, b)


def test_batch_rigid_transform_chain():
    joints = torch.tensor([[[0.0, 0, 0], [0, 1, 0], [0, 2, 0], [1, 2, 0], [-1, 2, 0]]])
    rot = torch.eye(3).repeat(1, 5, 1, 1)
    rot[0, 1] = axis_angle_to_matrix(torch.tensor([0.0, 0, torch.pi / 2]))  # neck: 90 deg about z
    posed, rel = batch_rigid_transform(rot, joints, PARENTS)
    # jaw at (0,2,0) rotates about the neck (0,1,0) to (-1,1,0)
    torch.testing.assert_close(posed[0, 2], torch.tensor([-1.0, 1.0, 0.0]))
    torch.testing.assert_close(posed[0, 0], joints[0, 0])
    # rel transform maps a rest point of the jaw to its posed place
    p = torch.tensor([0.0, 3.0, 0.0, 1.0])
    torch.testing.assert_close((rel[0, 2] @ p)[:3], torch.tensor([-2.0, 1.0, 0.0]))


def test_gradcheck_float64():
    m = small_model(v=6, k=3)
    betas = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    pose = (0.3 * torch.randn(2, 15, dtype=torch.float64)).requires_grad_()
    vt = m.pop("v_template").requires_grad_()
    assert torch.autograd.gradcheck(lambda b, p, v: lbs(b, p, v, **m)[0], (betas, pose, vt))


def test_float32_and_landmarks():
    m = {k: (v.float() if v.is_floating_point() else v) for k, v in small_model().items()}
    verts, _ = lbs(torch.zeros(1, 4), torch.zeros(1, 15), **m)
    assert verts.dtype == torch.float32
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    lm = vertices_to_landmarks(verts, faces, torch.tensor([1, 0]), torch.tensor([[1.0, 0, 0], [0, 0.5, 0.5]]))
    torch.testing.assert_close(lm[0, 0], verts[0, 3])
    torch.testing.assert_close(lm[0, 1], 0.5 * (verts[0, 1] + verts[0, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda():
    m = {k: v.cuda() for k, v in small_model().items()}
    v, _ = lbs(torch.zeros(1, 4, dtype=torch.float64, device="cuda"),
               torch.zeros(1, 15, dtype=torch.float64, device="cuda"), **m)
    assert v.is_cuda
