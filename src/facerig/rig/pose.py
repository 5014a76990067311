"""Head-pose edits on FaceParams, anchored on the source's eye-mouth centre.

Pose edits change the global ``rotation`` only (never the expression, jaw, identity or light); the
camera stays the source's except for the translation, which is adjusted so the face stays in place:

**Anchoring rule.** The anchor is the midpoint of the eye centre (mean of the four eye corners,
MediaPipe 33/133 and 362/263) and the mouth centre (mean of the mouth corners 61/291), taken on the
model's landmarks in the head frame (identity + current expression), the point DiffusionRig/RigFace
re-centre a re-posed head on. After the rotation changes from ``R`` to ``R'`` the camera
translation gets ``t' = t + R a - R' a``: the anchor lands on the same world point, so it projects
to the same image position, i.e. the head turns about its anchor. With the weak-perspective
camera ``(s, tx, ty)`` only ``tx, ty`` change (``s`` is kept); with the perspective camera
``(tx, ty, tz)`` all three move so the anchor keeps its depth too (the face keeps its size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from facerig.errors import InvalidInput
from facerig.rig.expression import broadcast_batch, check_params, check_params_model, finite_float
from facerig.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_ypr, ypr_to_matrix
from facerig.types import FaceParams

__all__ = ["set_pose", "transfer_pose", "face_anchor", "anchor_ndc", "repose", "ANCHOR_LANDMARKS",
           "get_pose", "pose_excess", "check_pose_range", "clamp_to_range", "check_offsets", "check_source_pose"]

#: MediaPipe ids: eye corners (subject's right eye 33/133, left eye 362/263) and mouth corners 61/291
ANCHOR_LANDMARKS = {"eyes": (33, 133, 362, 263), "mouth": (61, 291)}
#: anchor = eye_centre + ANCHOR_EYE_TO_MOUTH * (mouth_centre - eye_centre)
ANCHOR_EYE_TO_MOUTH = 0.5
#: the largest |pitch| (degrees) a pose edit may produce (yaw/pitch/roll are singular at 90)
MAX_PITCH = 89.0


def _landmark_rows(model: Any, ids: Sequence[int]) -> list[int]:
    cache = model.__dict__.setdefault("_rig_landmark_rows", {})
    key = tuple(ids)
    if key not in cache:
        index = [int(i) for i in model.landmark_index.tolist()]
        pos = {mp: row for row, mp in enumerate(index)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise InvalidInput("model", f"a face model whose landmarks include MediaPipe ids {list(ids)}",
                               f"{model.name} lacks {missing}")
        cache[key] = [pos[i] for i in ids]
    return cache[key]


def face_anchor(params: FaceParams, model: Any, posed: bool = False) -> torch.Tensor:
    """The eye-mouth anchor (B, 3) in the head frame (or the world frame with ``posed=True``)."""
    check_params_model(params, model)
    assert params.jaw_pose is not None  # FaceParams.__post_init__ fills it
    with torch.no_grad():
        verts = model(identity=params.identity.to(model.mean.dtype),
                      expression=params.expression.to(model.mean.dtype),
                      jaw_pose=params.jaw_pose.to(model.mean.dtype))
        lm = model.landmarks(verts).double()
    eyes = lm[:, _landmark_rows(model, ANCHOR_LANDMARKS["eyes"])].mean(1)
    mouth = lm[:, _landmark_rows(model, ANCHOR_LANDMARKS["mouth"])].mean(1)
    a = eyes + ANCHOR_EYE_TO_MOUTH * (mouth - eyes)
    if posed:
        a = (axis_angle_to_matrix(params.rotation.double()) @ a[..., None])[..., 0]
    return a


def anchor_ndc(params: FaceParams, model: Any) -> torch.Tensor:
    """Where the anchor projects: (B, 2) NDC (y down) of the crop."""
    from facerig.render.camera import project

    world = face_anchor(params, model, posed=True)
    return project(world[:, None], params.camera.double(), params.camera_kind, params.focal)[:, 0, :2]


def repose(params: FaceParams, model: Any, rotation: torch.Tensor,
           anchor_head: torch.Tensor | None = None, anchor_from: FaceParams | None = None) -> FaceParams:
    """``params`` with ``rotation`` (B,3 axis-angle) and the camera translation re-anchored.

    ``anchor_head`` (B,3): the head-frame anchor to keep in place (default: ``face_anchor(params)``);
    the anchor's world position before the change is taken with ``anchor_from``'s rotation and
    camera (default ``params``) - used by :func:`facerig.rig.sequence.align_sequence`.
    """
    src = params if anchor_from is None else anchor_from
    a = face_anchor(params, model) if anchor_head is None else anchor_head.double()
    r_old = axis_angle_to_matrix(src.rotation.double())
    r_new = axis_angle_to_matrix(rotation.double())
    a_old = (r_old @ a[..., None])[..., 0]
    a_new = (r_new @ a[..., None])[..., 0]
    cam = src.camera.double().clone()
    if params.camera_kind == "weak_perspective":
        cam[:, 1:3] += (a_old - a_new)[:, :2]
    else:
        cam += a_old - a_new
    return params.replace(rotation=rotation.to(params.rotation.dtype).clone(),
                          camera=cam.to(params.camera.dtype))


ANCHORS = ("face", "head")


def anchor_point(params: FaceParams, model: Any, anchor: str = "face") -> torch.Tensor:
    """The head-frame point (B,3, float64) a pose edit keeps in place.

    ``"face"``: the eye-mouth centre (DiffusionRig/RigFace: the face stays where it was; what
    generative engines expect). ``"head"``: the model's origin, the centre of the head, about which
    a real head turns (the face then moves within the head's outline, as in a photo of a turned
    head; what pixel-warping engines need, since they keep the hair and ears).
    """
    if anchor == "face":
        return face_anchor(params, model)
    if anchor == "head":
        return torch.zeros(params.batch_size, 3, dtype=torch.float64, device=params.rotation.device)
    raise InvalidInput("anchor", f"one of {', '.join(ANCHORS)}", anchor)


def _angles(v: Any, name: str, b: int) -> torch.Tensor | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor | Sequence) and not isinstance(v, str):
        t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.shape[0] != b or not torch.isfinite(t).all():
            raise InvalidInput(name, f"a number or {b} finite numbers (degrees)", v)
        return t.clone()
    return torch.full((b,), finite_float(v, name), dtype=torch.float64)


def get_pose(params: FaceParams) -> torch.Tensor:
    """Yaw, pitch, roll (B, 3) in degrees of the params' head rotation."""
    check_params(params)
    return matrix_to_ypr(axis_angle_to_matrix(params.rotation.double()))


def set_pose(params: FaceParams, model: Any, yaw: Any = None, pitch: Any = None, roll: Any = None,
             relative: bool = True, anchor: str = "face") -> FaceParams:
    """Change the head's yaw/pitch/roll (degrees, ``docs/conventions.md`` signs: yaw > 0 turns the
    nose to image right, pitch > 0 lifts it, roll > 0 turns the face counter-clockwise on screen).

    ``relative=True`` adds the given angles to the current ones; ``relative=False`` sets them (an
    angle left at None keeps its current value either way). Angles are numbers or one per face. The
    result's |pitch| must stay below 89 degrees. ``anchor``: the point kept in place
    (:func:`anchor_point`; default the eye-mouth centre, module docstring).
    """
    check_params_model(params, model)
    b = params.batch_size
    vals = [_angles(v, n, b) for v, n in ((yaw, "yaw"), (pitch, "pitch"), (roll, "roll"))]
    ypr = get_pose(params)
    for k, v in enumerate(vals):
        if v is not None:
            ypr[:, k] = ypr[:, k] + v if relative else v
    if (ypr[:, 1].abs() > MAX_PITCH).any():
        raise InvalidInput("pitch", f"a resulting pitch within +-{MAX_PITCH:g} degrees",
                           [round(x, 2) for x in ypr[:, 1].tolist()])
    rot = matrix_to_axis_angle(ypr_to_matrix(ypr))
    return repose(params, model, rot, anchor_head=anchor_point(params, model, anchor))


def transfer_pose(params: FaceParams, reference_params: FaceParams, model: Any, anchor: str = "face") -> FaceParams:
    """Head rotation from ``reference_params`` (batch 1 broadcasts; any face model, since the world
    frame is shared), re-anchored on ``params``' own face."""
    check_params_model(params, model)
    check_params(reference_params, "reference_params")
    rot = broadcast_batch(reference_params.rotation, params.batch_size, "reference_params")
    return repose(params, model, rot.to(params.rotation), anchor_head=anchor_point(params, model, anchor))


# ---------------------------------------------------------------------------------------------
# faithful range (facerig.engines.base.PoseRange): refuse, or clamp, poses an engine cannot render

_AXES = ("yaw", "pitch", "roll")


def _wrap(d: torch.Tensor) -> torch.Tensor:
    return (d + 180.0) % 360.0 - 180.0


def _relative_ypr(source: FaceParams, target: FaceParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(target ypr (B,3), target - source ypr wrapped to [-180, 180) (B,3)); source batch 1 broadcasts."""
    t = get_pose(target)
    s = get_pose(source)
    if s.shape[0] == 1 and t.shape[0] > 1:
        s = s.expand_as(t)
    if s.shape[0] != t.shape[0]:
        raise InvalidInput("source", f"batch 1 or {t.shape[0]} source params", s.shape[0])
    return t, _wrap(t - s)


def pose_excess(source: FaceParams, target: FaceParams, pose_range: Any) -> list[tuple[int, str, float, float]]:
    """``(frame, axis, change, limit)`` for every angle of ``target`` whose change from ``source``
    exceeds ``pose_range`` (an :class:`~facerig.engines.base.PoseRange`); empty when all fit."""
    _, d = _relative_ypr(source, target)
    out = []
    for k, ax in enumerate(_AXES):
        lim = float(pose_range.limit(ax))
        for i in torch.nonzero(d[:, k].abs() > lim + 1e-6).flatten().tolist():
            out.append((int(i), ax, float(d[i, k]), lim))
    return out


def clamp_to_range(params_seq: FaceParams, source: FaceParams, pose_range: Any, model: Any,
                   anchor: str = "face") -> tuple[FaceParams, int]:
    """``params_seq`` (a batch of target params, e.g. a reenactment's frames) with each frame's
    yaw/pitch/roll change from ``source`` (batch 1) clamped to ``pose_range``, re-anchored so the
    clamped head stays where the frame put it. Pure: returns ``(clamped copy, frames changed)``;
    frames within the range are returned unchanged (bit for bit)."""
    check_params_model(params_seq, model)
    t, d = _relative_ypr(source, params_seq)
    lim = torch.tensor([float(pose_range.limit(a)) for a in _AXES], dtype=d.dtype)
    dc = torch.maximum(torch.minimum(d, lim), -lim)
    changed = (dc != d).any(1)
    n = int(changed.sum())
    if n == 0:
        return params_seq.clone(), 0
    ypr = t + (dc - d)
    ypr[:, 1] = ypr[:, 1].clamp(-MAX_PITCH, MAX_PITCH)
    rot = matrix_to_axis_angle(ypr_to_matrix(ypr))
    moved = repose(params_seq, model, rot.to(params_seq.rotation.dtype),
                   anchor_head=anchor_point(params_seq, model, anchor))
    keep = changed[:, None]
    rotation = torch.where(keep, moved.rotation, params_seq.rotation)
    camera = torch.where(keep, moved.camera, params_seq.camera)
    return params_seq.replace(rotation=rotation.clone(), camera=camera.clone()), n


def _range_error(what: str, axis: str, value: float, limit: float, engine: str, extra: str = "") -> InvalidInput:
    return InvalidInput(what if what.endswith(axis) else f"{what} {axis}".strip(),
                        f"a {axis} change within +-{limit:g} degrees of the source's pose (the {engine} "
                        f"engine's faithful range{extra})", f"{value:+.1f}",
                        hint="pass --clamp (clamp=True) to clamp it to the range")


def check_offsets(yaw: Any, pitch: Any, roll: Any, pose_range: Any, *, clamp: bool = False,
                  engine: str = "the") -> tuple[list[float | None], list[str]]:
    """Relative yaw/pitch/roll offsets checked against ``pose_range`` before any fit: returns the
    (possibly clamped) offsets and one note per clamped axis; raises InvalidInput naming the axis,
    the range and the value when ``clamp`` is False."""
    out: list[float | None] = []
    notes: list[str] = []
    for ax, v in zip(_AXES, (yaw, pitch, roll), strict=True):
        if v is None:
            out.append(None)
            continue
        fv = finite_float(v, ax)
        lim = float(pose_range.limit(ax))
        if abs(fv) > lim + 1e-9:
            if not clamp:
                raise _range_error(f"--{ax}", ax, fv, lim, engine)
            notes.append(f"{ax} {fv:+g} clamped to {max(-lim, min(lim, fv)):+g} (faithful range +-{lim:g})")
            fv = max(-lim, min(lim, fv))
        out.append(fv)
    return out, notes


def check_pose_range(source: FaceParams, target: FaceParams, model: Any, pose_range: Any, *,
                     clamp: bool = False, anchor: str = "face", what: str = "pose",
                     engine: str = "the") -> tuple[FaceParams, list[str]]:
    """``target`` checked against ``pose_range`` relative to ``source``: unchanged when within it;
    else InvalidInput (``what`` names the argument: "--yaw", "--reference pose", ...), or with ``clamp``
    the clamped params and one note per clamped axis."""
    excess = pose_excess(source, target, pose_range)
    if not excess:
        return target, []
    if not clamp:
        i, ax, val, lim = excess[0]
        src = get_pose(source)[0 if source.batch_size == 1 else i, _AXES.index(ax)]
        raise _range_error(what, ax, val, lim, engine, extra=f"; the source's {ax} is {float(src):+.0f}")
    out, _ = clamp_to_range(target, source, pose_range, model, anchor=anchor)
    notes = [f"{what} {ax} change {val:+.1f} clamped to {max(-lim, min(lim, val)):+g} (faithful range +-{lim:g})"
             for _, ax, val, lim in excess]
    return out, notes


def check_source_pose(source: FaceParams, pose_range: Any, *, what: str = "IMAGE",
                      engine: str = "the") -> list[str]:
    """The source's own pose against the engine's limits for a reliable fit: raises InvalidInput
    beyond ``source_yaw`` / ``source_pitch`` (a profile photo: the fit and every edit break), returns
    a warning note beyond ``warn_source_yaw`` (a 3/4 view: a further turn fills what is hidden)."""
    ypr = get_pose(source)[0]
    yaw, pitch = float(ypr[0]), float(ypr[1])
    for ax, v, lim in (("yaw", yaw, pose_range.source_yaw), ("pitch", pitch, pose_range.source_pitch)):
        if abs(v) > lim:
            raise InvalidInput(what, f"a face within {ax} +-{lim:g} degrees for a reliable fit with the {engine} engine",
                               f"a face at {ax} {v:+.0f} (near profile)",
                               hint="use a more frontal photo, or pass --force (check_source=False) to try anyway")
    notes = []
    if abs(yaw) > pose_range.warn_source_yaw:
        notes.append(f"the source face is turned {yaw:+.0f} degrees (a 3/4 view): edits are less reliable, and "
                     f"turning it further shows a side the photo does not have, which is filled")
    return notes
