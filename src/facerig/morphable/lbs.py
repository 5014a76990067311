"""Linear blend skinning as FLAME (and SMPL) define it: pure, batched, differentiable functions.

Any dtype and device: the functions follow the dtype/device of their tensor arguments and create
nothing of their own dtype. Shapes (B batch, V vertices, J joints, K blend shapes, P = 9 (J - 1)):

* ``shapedirs`` (V, 3, K) - the layout of the FLAME/SMPL pickles (``shapedirs[..., k]`` is mode k)
* ``posedirs`` (P, V*3) - the pickle stores (V, 3, P); FLAME_PyTorch/DECA reshape it to (V*3, P)
  and transpose: :func:`posedirs_from_pickle` does that
* ``J_regressor`` (J, V) dense, ``parents`` (J,) long with ``parents[0] = -1``, ``lbs_weights`` (V, J)

The model: ``v_shaped = T + B_S(betas)``; ``J = J_regressor @ v_shaped``; pose correctives
``B_P = (R_j - I)_{j >= 1} . posedirs`` added to ``v_shaped``; then every vertex is moved by the
``lbs_weights``-blend of the joints' world transforms relative to the rest pose.
"""

from __future__ import annotations

import torch

from facerig.rotations import axis_angle_to_matrix

__all__ = [
    "batch_rigid_transform",
    "blend_shapes",
    "lbs",
    "pose_features",
    "posedirs_from_pickle",
    "vertices2joints",
    "vertices_to_landmarks",
]


def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """Offsets (B, V, 3) = sum_k betas[b, k] * shapedirs[:, :, k]; uses the first ``betas.shape[1]`` modes."""
    k = betas.shape[-1]
    return torch.einsum("bk,vck->bvc", betas, shapedirs[..., :k])


def vertices2joints(J_regressor: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Joints (B, J, 3) = J_regressor (J, V) @ v (B, V, 3)."""
    return torch.einsum("jv,bvc->bjc", J_regressor, v)


def pose_features(rot_mats: torch.Tensor) -> torch.Tensor:
    """(B, J, 3, 3) -> (B, 9 (J-1)): the row-major flattened (R_j - I) of the non-root joints."""
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def posedirs_from_pickle(posedirs_v3p: torch.Tensor) -> torch.Tensor:
    """FLAME/SMPL pickle layout (V, 3, P) -> the (P, V*3) matrix :func:`lbs` takes."""
    p = posedirs_v3p.shape[-1]
    return posedirs_v3p.reshape(-1, p).transpose(0, 1).contiguous()


def _transform(rot: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3), (..., 3) -> (..., 4, 4) homogeneous."""
    top = torch.cat([rot, t.unsqueeze(-1)], -1)
    bottom = torch.zeros(*rot.shape[:-2], 1, 4, dtype=rot.dtype, device=rot.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


def batch_rigid_transform(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor | list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a kinematic tree.

    ``rot_mats`` (B, J, 3, 3) local rotations, ``joints`` (B, J, 3) rest positions, ``parents`` (J,)
    with ``parents[0] = -1`` and every parent before its child. Returns ``posed_joints`` (B, J, 3)
    and ``rel_transforms`` (B, J, 4, 4): the world transform of each joint composed with the
    inverse of its rest placement, i.e. what moves a rest-pose point rigidly with joint j.
    """
    par = [int(p) for p in (parents.tolist() if isinstance(parents, torch.Tensor) else parents)]
    j = joints.unsqueeze(-1)  # (B, J, 3, 1)
    # world rotations along the chain, and the translation of each rest->posed transform
    # T_i(x) = Rw_i x + off_i with off_i = off_parent + (Rw_parent - Rw_i) j_i (off_root = j_0 - R_0 j_0).
    # Written this way the rest pose gives exactly zero offsets (no rounding of j_i - j_parent + j_parent).
    rw = [rot_mats[:, 0]]
    off = [(j[:, 0] - rot_mats[:, 0] @ j[:, 0]).squeeze(-1)]
    for i in range(1, len(par)):
        p = par[i]
        rw.append(rw[p] @ rot_mats[:, i])
        off.append(off[p] + (rw[p] @ j[:, i] - rw[i] @ j[:, i]).squeeze(-1))
    world_rot = torch.stack(rw, 1)
    offset = torch.stack(off, 1)
    posed_joints = (world_rot @ j).squeeze(-1) + offset
    rel_transforms = _transform(world_rot, offset)
    return posed_joints, rel_transforms


def lbs(
    betas: torch.Tensor,
    full_pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    J_regressor: torch.Tensor,  # noqa: N803
    parents: torch.Tensor | list[int],
    lbs_weights: torch.Tensor,
    pose2rot: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAME/SMPL linear blend skinning. Returns ``(vertices (B, V, 3), joints (B, J, 3))``.

    ``betas`` (B, K) shape+expression coefficients over ``shapedirs`` (V, 3, >=K);
    ``full_pose`` (B, J*3) axis-angle per joint (root first; FLAME: global, neck, jaw, eye L, eye R),
    or (B, J, 3, 3) rotation matrices with ``pose2rot=False``; ``v_template`` (V, 3) or (B, V, 3);
    ``posedirs`` (9 (J-1), V*3); ``J_regressor`` (J, V); ``lbs_weights`` (V, J), rows summing to 1.

    At the zero pose the result is exactly ``v_template + blend_shapes`` (skinning is evaluated in
    displacement form, which is the standard formula when the weight rows sum to 1).
    """
    b = max(betas.shape[0], full_pose.shape[0])
    if v_template.dim() == 2:
        v_template = v_template.unsqueeze(0)
    v_shaped = v_template + blend_shapes(betas, shapedirs)
    if v_shaped.shape[0] != b:
        v_shaped = v_shaped.expand(b, -1, -1)
    joints = vertices2joints(J_regressor, v_shaped)
    n_joints = J_regressor.shape[0]
    if pose2rot:
        rot_mats = axis_angle_to_matrix(full_pose.reshape(full_pose.shape[0], n_joints, 3))
    else:
        rot_mats = full_pose.reshape(full_pose.shape[0], n_joints, 3, 3)
    if rot_mats.shape[0] != b:
        rot_mats = rot_mats.expand(b, -1, -1, -1)
    pose_offsets = (pose_features(rot_mats) @ posedirs).reshape(b, -1, 3)
    v_posed = v_shaped + pose_offsets
    posed_joints, rel = batch_rigid_transform(rot_mats, joints, parents)
    # skinning in displacement form: v + sum_j w_j ((R_j - I) v + t_j). Equal to the usual
    # sum_j w_j (R_j v + t_j) because FLAME's weight rows sum to 1, and exact at the rest pose.
    eye = torch.eye(3, dtype=rel.dtype, device=rel.device)
    delta = torch.cat([rel[..., :3, :3] - eye, rel[..., :3, 3:]], -1)  # (B, J, 3, 4)
    t = torch.einsum("vj,bjrc->bvrc", lbs_weights, delta)
    verts = v_posed + (t[..., :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + t[..., 3]
    return verts, posed_joints


def vertices_to_landmarks(
    vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """Points on the surface: ``vertices`` (B, V, 3), ``faces`` (F, 3), ``face_idx`` (L,) or (B, L),
    ``bary`` (L, 3) or (B, L, 3) -> (B, L, 3)."""
    b = vertices.shape[0]
    if face_idx.dim() == 1:
        face_idx = face_idx.unsqueeze(0).expand(b, -1)
    if bary.dim() == 2:
        bary = bary.unsqueeze(0).expand(b, -1, -1)
    tri = faces[face_idx]  # (B, L, 3)
    corners = vertices[torch.arange(b, device=vertices.device)[:, None, None], tri]  # (B, L, 3, 3)
    return (corners * bary.to(vertices.dtype).unsqueeze(-1)).sum(2)
