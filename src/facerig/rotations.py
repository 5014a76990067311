"""Rotation math (pure functions, batched, differentiable, any device/dtype).

Convention (docs/conventions.md): world frame x right (subject's left), y up, z towards the viewer.
Yaw is about +y (positive turns the nose towards image right = subject's left), pitch about +x
(positive tilts the nose up... see ``ypr_to_matrix``), roll about +z (positive rotates the face
counter-clockwise as seen by the viewer). Matrices compose as R = Ry(yaw) @ Rx(pitch) @ Rz(roll).
"""

from __future__ import annotations

import math

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (..., 3) axis-angle (radians) -> (..., 3, 3); exact, with a Taylor branch near 0."""
    theta2 = (aa * aa).sum(-1)
    small = theta2 < 1e-8
    safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)[..., None, None]
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe)[..., None, None]
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 3) axis-angle, via a quaternion (stable near 0 and pi)."""
    q = matrix_to_quaternion(r)
    w = q[..., :1].clamp(-1, 1)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    scale = torch.where(sin_half > 1e-7, angle / sin_half.clamp_min(1e-12), 2.0 / w.clamp_min(1e-12))
    return xyz * scale


def matrix_to_quaternion(r: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0."""
    m = r
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack(
        [
            torch.stack([1 + t, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                         m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                         1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                         1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
        ],
        -2,
    )  # (..., 4, 4); row i is 4*q*q_i
    diag = torch.stack([1 + t, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = diag.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def _rx(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _ry(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rz(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def ypr_to_matrix(ypr_deg: torch.Tensor) -> torch.Tensor:
    """(..., 3) yaw, pitch, roll in degrees -> (..., 3, 3) = Ry(yaw) Rx(-pitch) Rz(roll).

    Positive pitch looks up (nose moves towards +y): a rotation about +x by -pitch would move +z
    towards -y, so pitch enters with a minus sign... see tests/test_rotations.py for the checked
    directions: yaw>0 nose to image right, pitch>0 nose up, roll>0 counter-clockwise on screen.
    """
    r = torch.deg2rad(ypr_deg)
    return _ry(r[..., 0]) @ _rx(-r[..., 1]) @ _rz(r[..., 2])


def matrix_to_ypr(m: torch.Tensor) -> torch.Tensor:
    """Inverse of ``ypr_to_matrix`` for |pitch| < 90 degrees: (..., 3, 3) -> (..., 3) degrees."""
    # m = Ry(a) Rx(b) Rz(c) with b = -pitch. m[1,2] = -sin(b); m[0,2] = cos b sin a; m[2,2] = cos b cos a
    # m[1,0] = cos b sin c; m[1,1] = cos b cos c
    b = torch.asin((-m[..., 1, 2]).clamp(-1, 1))
    a = torch.atan2(m[..., 0, 2], m[..., 2, 2])
    c = torch.atan2(m[..., 1, 0], m[..., 1, 1])
    return torch.rad2deg(torch.stack([a, -b, c], -1))


def axis_angle_to_ypr(aa: torch.Tensor) -> torch.Tensor:
    return matrix_to_ypr(axis_angle_to_matrix(aa))


def ypr_to_axis_angle(ypr_deg: torch.Tensor) -> torch.Tensor:
    return matrix_to_axis_angle(ypr_to_matrix(ypr_deg))


def rotation_angle_deg(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (degrees) between rotation matrices (..., 3, 3)."""
    rel = r1.transpose(-1, -2) @ r2
    cos = ((rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2] - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


DEG = math.pi / 180
