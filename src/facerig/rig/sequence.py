"""Sequence edits: structured face alignment for reenactment, and temporal smoothing.

**Structured face alignment** (MagicPortrait): for every driving frame, identity, albedo/texture,
light, camera and crop come from the source (one face); expression + jaw and the global rotation
come from the driving frame. Two motion modes (:data:`MOTION_MODES`):

* ``"absolute"``: the driving frame's expression, jaw pose and head rotation as they are (the
  driver's resting face and head pose included).
* ``"relative"`` (the default; the usual choice across identities): the driver's *motion* against a
  reference driving frame ``ref`` is applied on top of the source: ``R_t = (R_drv_t R_drv_ref^T)
  R_src`` and ``expression_t = clamp(expression_src + expression_drv_t - expression_drv_ref)`` (jaw
  pose composed like the rotation), so a driving actor's resting face and head pose do not replace
  the source's. ``ref`` is the most neutral driving frame (:func:`neutral_frame`: smallest mouth
  opening / expression energy, closest to frontal) unless given. The mouth follows the driver
  fully: each mouth-opening coefficient (:data:`MOUTH_OPENING`) is ``drv_t + max(src - reach, 0)``
  with ``reach`` the driver's 95th percentile of that coefficient over frames: the driver's
  absolute opening plus only what the source opens beyond anything the driver does. A closed
  source mouth therefore takes the driver's own opening (a clamp at a closed mouth cannot damp it,
  and a driver that never fully closes is followed); a source photographed mid-speech (opening
  within the driver's range) closes and opens with the driver instead of keeping its opening as an
  offset that never closes (the rule before 2026-12-02 added ``max(src - drv_ref, 0)``: the
  self-reenactment of a clip whose first frame is open kept the mouth open throughout, and the warp
  opens an already-open mouth further only weakly, so the opening barely moved: mouth r 0.51);
  a source opening wider than the driver ever does keeps the excess. The jaw pose takes the
  driver's absolute value while the source's jaw is no more open than the driver's reach, else the
  relative composition.

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

__all__ = ["MOTION_MODES", "DEFAULT_MOTION", "MOUTH_OPENING", "align_sequence", "neutral_frame", "check_motion",
           "check_ref_frame", "smooth_sequence", "gaussian_smooth", "smooth_rotations"]

MOTION_MODES = ("relative", "absolute")
DEFAULT_MOTION = "relative"
#: coefficients that open / shape the lips' opening: in relative mode the driver's absolute value plus
#: the source's excess over the reference frame (names absent from a model are ignored)
MOUTH_OPENING = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDown_L", "mouthLowerDown_R",
                 "mouthUpperUp_L", "mouthUpperUp_R", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
                 "mouthShrugUpper", "mouthStretch_L", "mouthStretch_R", "mouthPress_L", "mouthPress_R")
#: gaze is not expression: ignored by the neutrality score
_GAZE = ("eyeLookDown", "eyeLookIn", "eyeLookOut", "eyeLookUp")
_JAW_RAD_PER_UNIT = 0.35        # models without jawOpen: this jaw-pose angle (rad, ~20 deg) counts as 1
_REACH_Q = 0.95                 # the driver's reach on a mouth coefficient: this quantile over frames


def _compose_relative(drv: torch.Tensor, src: torch.Tensor, ref: int) -> torch.Tensor:
    """(T,3) driving and (1,3) source axis-angles -> R(drv_t) R(drv_ref)^T R(src) as axis-angle (T,3)."""
    rd = axis_angle_to_matrix(drv.double())
    rs = axis_angle_to_matrix(src.double())
    return matrix_to_axis_angle(rd @ rd[ref:ref + 1].transpose(-1, -2) @ rs)


def _reach(x: torch.Tensor) -> torch.Tensor:
    """(T, K) -> (1, K): how far the driver goes on each coefficient, the 95th percentile over
    frames (the max but for a stray fitted frame)."""
    return torch.quantile(x, _REACH_Q, dim=0, keepdim=True) if x.shape[0] > 1 else x[:1]


def mouth_opening(params: FaceParams, model: Any) -> torch.Tensor:
    """(B,) how open the mouth is, ~0 closed .. 1 wide open: ``jawOpen`` where the model has it, else
    the jaw pose angle / 20 degrees."""
    names = list(getattr(model, "expression_names", params.expression_names))
    if "jawOpen" in names:
        return params.expression[:, names.index("jawOpen")].double()
    assert params.jaw_pose is not None  # FaceParams.__post_init__ fills it
    return params.jaw_pose.double().norm(dim=-1) / _JAW_RAD_PER_UNIT


def neutral_frame(driving: FaceParams, model: Any) -> int:
    """Index of the most neutral frame of ``driving``: the smallest expression energy (sum of squared
    coefficients, gaze excluded, the mouth opening counted three times) plus the squared head angle
    from frontal (20 degrees weigh like a fully open mouth)."""
    check_params(driving, "driving")
    names = list(getattr(model, "expression_names", driving.expression_names))
    w = torch.tensor([0.0 if n.startswith(_GAZE) else 1.0 for n in names], dtype=torch.float64)
    e = driving.expression.double()
    score = (w * e * e).sum(-1) + 2.0 * mouth_opening(driving, model).clamp_min(0) ** 2
    ang = driving.rotation.double().norm(dim=-1) / math.radians(20.0)
    score = score + ang * ang
    return int(torch.argmin(score))


def check_ref_frame(ref_frame: Any, n_frames: int | None = None, name: str = "ref_frame") -> int | None:
    """None, or a driving-frame index 0 <= ref_frame < n_frames (``n_frames`` None: only >= 0)."""
    if ref_frame is None:
        return None
    if isinstance(ref_frame, bool) or not isinstance(ref_frame, (int, np.integer)):
        raise InvalidInput(name, "a driving-frame index (an integer >= 0) or None", ref_frame)
    r = int(ref_frame)
    if r < 0:
        raise InvalidInput(name, "a driving-frame index >= 0 (0 = the first frame)", r)
    if n_frames is not None and r >= n_frames:
        raise InvalidInput(name, f"a driving-frame index in 0..{n_frames - 1} (the driver has {n_frames} frames)", r,
                           hint="--max-frames limits the frames read")
    return r


def check_motion(motion: Any, name: str = "motion") -> str:
    if not isinstance(motion, str) or motion.lower() not in MOTION_MODES:
        raise InvalidInput(name, f"one of {', '.join(MOTION_MODES)}", motion)
    return motion.lower()


def align_sequence(source: FaceParams, driving: FaceParams, model: Any, motion: str = DEFAULT_MOTION,
                   ref_frame: int | None = None, anchor: str = "face", *, follow_mouth: bool = True,
                   relative: bool | None = None) -> FaceParams:
    """One source face + T driving frames -> T frames of the source's face doing the driving motion.

    ``source`` must hold one face; ``driving`` T >= 1 frames of the same face model (any identity).
    ``motion``: "relative" (deltas against the reference frame ``ref_frame``, default the most
    neutral frame, :func:`neutral_frame`) or "absolute"; see the module docstring for what comes from
    where, the mouth rule (``follow_mouth=False``: plain deltas for the mouth too, the behaviour
    before the rule) and the anchoring. ``relative`` (bool, kept for older callers) overrides
    ``motion``. ``anchor`` as in :func:`facerig.rig.pose.set_pose` ("face": eye-mouth centre,
    "head": the head's centre). ``out.meta["aligned"]`` records the mode, reference frame and
    ``mouth_follow`` (whether the mouth rule applied).
    """
    check_params_model(source, model, "source")
    check_params(driving, "driving")
    check_same_model(source, driving, "driving")
    if source.batch_size != 1:
        raise InvalidInput("source", "FaceParams of exactly one face", source.batch_size)
    if relative is not None:
        motion = "relative" if relative else "absolute"
    motion = check_motion(motion)
    t = driving.batch_size
    ref = check_ref_frame(ref_frame, t)
    if ref is not None and motion == "absolute":
        raise InvalidInput("ref_frame", "no reference frame with motion='absolute' (it is for 'relative')", ref)
    assert driving.jaw_pose is not None and source.jaw_pose is not None  # FaceParams.__post_init__ fills them
    base = source[[0] * t]
    if motion == "relative":
        if ref is None:
            ref = neutral_frame(driving, model)
        rot = _compose_relative(driving.rotation, source.rotation, ref)
        exp = source.expression.double() + driving.expression.double() - driving.expression[ref:ref + 1].double()
        jaw = _compose_relative(driving.jaw_pose, source.jaw_pose, ref)
        if follow_mouth:
            names = list(getattr(model, "expression_names", source.expression_names))
            idx = [names.index(n) for n in MOUTH_OPENING if n in names]
            if idx:
                d_m = driving.expression[:, idx].double()
                excess = (source.expression[:, idx].double() - _reach(d_m)).clamp_min(0)
                exp[:, idx] = d_m + excess
            src_jaw = float(source.jaw_pose.double().norm(dim=-1)[0])
            if src_jaw <= float(_reach(driving.jaw_pose.double().norm(dim=-1, keepdim=True))[0, 0]) + 1e-9:
                jaw = driving.jaw_pose.double()
        exp = _clamp(source, model, exp)
    else:
        rot = driving.rotation.double()
        exp = driving.expression.double()
        jaw = driving.jaw_pose.double()
    frames = base.replace(expression=exp.to(source.expression), jaw_pose=jaw.to(source.jaw_pose))
    point = anchor_point(source, model, anchor).expand(t, 3)
    out = repose(frames, model, rot.to(source.rotation), anchor_head=point, anchor_from=base)
    out.meta = {**source.meta, "aligned": {"motion": motion, "relative": motion == "relative", "frames": t,
                                           "ref_frame": ref,
                                           "mouth_follow": motion == "relative" and follow_mouth}}
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
