"""Sequence edits: structured face alignment for reenactment, and temporal smoothing.

**Structured face alignment** (MagicPortrait): for every driving frame, identity, albedo/texture,
light, camera and crop come from the source (one face); expression + jaw and the global rotation
come from the driving frame. ``relative=True`` (the usual choice across identities) instead applies
the driving's *motion* on top of the source: ``R_t = (R_drv_t R_drv_0^T) R_src`` and
``expression_t = clamp(expression_src + expression_drv_t - expression_drv_0)`` (jaw pose composed
like the rotation), so a driving actor's resting face does not replace the source's.

Every frame is anchored like :func:`facerig.rig.pose.set_pose`: the source's eye-mouth anchor (on
the source's identity and expression, so expression changes do not shake the head) projects to the
same image position in every frame; the driving's head translation is not transferred.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from facerig.errors import InvalidInput
from facerig.rig.expression import _clamp, check_params, check_params_model, check_same_model, finite_float
from facerig.rig.pose import anchor_point, repose
from facerig.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from facerig.types import FaceParams

__all__ = ["align_sequence", "smooth_sequence", "gaussian_smooth", "smooth_rotations"]


def _compose_relative(drv: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """(T,3) driving and (1,3) source axis-angles -> R(drv_t) R(drv_0)^T R(src) as axis-angle (T,3)."""
    rd = axis_angle_to_matrix(drv.double())
    rs = axis_angle_to_matrix(src.double())
    return matrix_to_axis_angle(rd @ rd[:1].transpose(-1, -2) @ rs)


def align_sequence(source: FaceParams, driving: FaceParams, model: Any, relative: bool = False,
                   anchor: str = "face") -> FaceParams:
    """One source face + T driving frames -> T frames of the source's face doing the driving motion.

    ``source`` must hold one face; ``driving`` T >= 1 frames of the same face model (any identity).
    See the module docstring for what comes from where and the anchoring; ``anchor`` as in
    :func:`facerig.rig.pose.set_pose` ("face": eye-mouth centre, "head": the head's centre).
    """
    check_params_model(source, model, "source")
    check_params(driving, "driving")
    check_same_model(source, driving, "driving")
    if source.batch_size != 1:
        raise InvalidInput("source", "FaceParams of exactly one face", source.batch_size)
    t = driving.batch_size
    assert driving.jaw_pose is not None and source.jaw_pose is not None  # FaceParams.__post_init__ fills them
    base = source[[0] * t]
    if relative:
        rot = _compose_relative(driving.rotation, source.rotation)
        exp = source.expression.double() + driving.expression.double() - driving.expression[:1].double()
        exp = _clamp(source, model, exp)
        jaw = _compose_relative(driving.jaw_pose, source.jaw_pose)
    else:
        rot = driving.rotation.double()
        exp = driving.expression.double()
        jaw = driving.jaw_pose.double()
    frames = base.replace(expression=exp.to(source.expression), jaw_pose=jaw.to(source.jaw_pose))
    point = anchor_point(source, model, anchor).expand(t, 3)
    out = repose(frames, model, rot.to(source.rotation), anchor_head=point, anchor_from=base)
    out.meta = {**source.meta, "aligned": {"relative": bool(relative), "frames": t}}
    return out


# ---- smoothing -------------------------------------------------------------------------------------
def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Zero-phase (symmetric, non-causal) Gaussian smoothing along dim 0 of (T, ...), reflecting at
    the ends (scipy's ``mode="reflect"``), truncated at 4 sigma. Keeps the length; a convex
    combination per sample, so values stay within the input's range."""
    if sigma <= 0 or x.shape[0] < 2:
        return x.clone()
    from scipy.ndimage import gaussian_filter1d

    arr = x.detach().cpu().double().numpy()
    out = gaussian_filter1d(arr, sigma=float(sigma), axis=0, mode="reflect", truncate=4.0)
    return torch.as_tensor(np.ascontiguousarray(out), dtype=x.dtype, device=x.device)


def _aa_to_quat(aa: torch.Tensor) -> torch.Tensor:
    angle = aa.norm(dim=-1, keepdim=True)
    half = angle / 2
    # sin(a/2)/a with its Taylor expansion near 0
    k = torch.where(angle > 1e-8, torch.sin(half) / angle.clamp_min(1e-12), 0.5 - angle * angle / 48)
    return torch.cat([torch.cos(half), aa * k], -1)


def _quat_to_aa(q: torch.Tensor) -> torch.Tensor:
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)
    xyz = q[..., 1:]
    s = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, q[..., :1])
    k = torch.where(s > 1e-8, angle / s.clamp_min(1e-12), 2.0 / q[..., :1].clamp_min(1e-12))
    return xyz * k


def smooth_rotations(aa: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth (T, 3) axis-angle rotations: quaternions made sign-continuous, Gaussian-weighted
    averaged (normalised linear quaternion averaging, accurate for the small spreads of a window),
    converted back."""
    if sigma <= 0 or aa.shape[0] < 2:
        return aa.clone()
    q = _aa_to_quat(aa.double())
    for i in range(1, q.shape[0]):  # hemisphere continuity
        if float((q[i] * q[i - 1]).sum()) < 0:
            q[i] = -q[i]
    qs = gaussian_smooth(q, sigma)
    return _quat_to_aa(qs).to(aa.dtype)


def smooth_sequence(params: FaceParams, sigma_frames: float, light: bool = False) -> FaceParams:
    """Zero-phase Gaussian smoothing over the batch axis (frames) of expression, jaw pose, rotation
    and camera (and the light when ``light=True``); identity, albedo and crops are kept. Lengths are
    unchanged; ``sigma_frames`` = 0 returns a copy."""
    check_params(params)
    sigma = finite_float(sigma_frames, "sigma_frames", 0.0, 1e4)
    if sigma == 0 or params.batch_size < 2:
        return params.clone()
    assert params.jaw_pose is not None  # FaceParams.__post_init__ fills it
    kw: dict[str, torch.Tensor] = {
        "expression": gaussian_smooth(params.expression, sigma),
        "jaw_pose": smooth_rotations(params.jaw_pose, sigma),
        "rotation": smooth_rotations(params.rotation, sigma),
        "camera": gaussian_smooth(params.camera, sigma),
    }
    if light:
        kw["light"] = gaussian_smooth(params.light, sigma)
    out = params.clone().replace(**kw)
    if not math.isfinite(float(out.rotation.abs().sum())):
        raise InvalidInput("params.rotation", "finite rotations", "non-finite values after smoothing")
    return out
