"""EditSpec: one declarative edit (expression, pose, light) applied in a fixed order.

Order of :meth:`EditSpec.apply` (documented in docs/rig.md):

1. **expression**: ``take`` "expression" from the reference (transfer_expression), *or* a preset
   (from ``preset`` or from ``text`` via :func:`facerig.rig.text.text_to_preset`) applied with
   ``preset_mode``; then the named ``expression`` values with ``expression_mode`` on top; then the
   slider ``controls`` (:mod:`facerig.rig.controls`: brows, blink, wink, gaze, smile, visemes...)
   added to the result.
2. **pose**: ``take`` "pose" (transfer_pose) *or* ``yaw``/``pitch``/``roll`` (set_pose with
   ``pose_relative``); anchored on the (already edited) face.
3. **light**: ``take`` "light" (transfer_light) *or* a light preset / a directional light
   (``light_azimuth``/``light_elevation``) / raw SH, set with ``light_intensity`` and
   ``light_keep_brightness`` (set_light).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from facerig.errors import InvalidInput
from facerig.rig.expression import (
    PRESET_MODES,
    apply_preset,
    check_params,
    finite_float,
    set_expression,
    transfer_expression,
)
from facerig.rig.light import LIGHT_PRESET_NAMES, directional, set_light, transfer_light
from facerig.rig.pose import set_pose, transfer_pose
from facerig.rig.presets import canonical_preset_name
from facerig.types import FaceParams

__all__ = ["EditSpec", "TAKE_CHOICES"]

TAKE_CHOICES = ("expression", "pose", "light")


@dataclass
class EditSpec:
    """What to change. Every field is optional; an empty spec returns an unchanged copy."""

    # expression
    expression: dict[str, float] | None = None
    expression_mode: str = "absolute"
    preset: str | None = None
    intensity: float | None = None
    preset_mode: str = "parts"
    text: str | None = None
    controls: dict[str, float] | None = None  # facerig.rig.controls name -> value, added last
    # pose (degrees)
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    pose_relative: bool = True
    pose_anchor: str = "face"  # "face" (eye-mouth centre, DiffusionRig/RigFace) | "head" (head centre)
    # light
    light: Any = None  # preset name or SH (9,3)/(B,9,3)
    light_azimuth: float | None = None
    light_elevation: float | None = None
    light_intensity: float = 1.0
    light_keep_brightness: bool = True
    # like a reference
    take: frozenset[str] | set[str] | tuple[str, ...] = field(default_factory=frozenset)

    # ---- checks ---------------------------------------------------------------------------------
    def validate(self) -> EditSpec:
        """Raise InvalidInput for malformed or contradictory fields; returns self."""
        take = frozenset(self.take)
        bad = take - set(TAKE_CHOICES)
        if bad or isinstance(self.take, str):
            raise InvalidInput("take", f"a set of {', '.join(TAKE_CHOICES)}", sorted(bad) or self.take)
        if self.pose_anchor not in ("face", "head"):
            raise InvalidInput("pose_anchor", "face or head", self.pose_anchor)
        if self.text is not None and self.preset is not None:
            raise InvalidInput("text", "either text or preset, not both", (self.text, self.preset))
        if self.text is not None and (not isinstance(self.text, str) or not self.text.strip()):
            raise InvalidInput("text", "a non-empty description", self.text)
        if self.preset is not None:
            canonical_preset_name(self.preset)
        if self.intensity is not None:
            if self.preset is None and self.text is None:
                raise InvalidInput("intensity", "to be given with a preset or text", self.intensity)
            finite_float(self.intensity, "intensity", 0.0, 1.0 if self.preset_mode == "blend" else 2.0)
        if self.expression_mode not in ("absolute", "add"):
            raise InvalidInput("expression_mode", "'absolute' or 'add'", self.expression_mode)
        if self.preset_mode not in PRESET_MODES:
            raise InvalidInput("preset_mode", " or ".join(repr(m) for m in PRESET_MODES), self.preset_mode)
        if self.expression is not None and not isinstance(self.expression, dict):
            raise InvalidInput("expression", "a dict of expression name -> value", type(self.expression).__name__)
        if self.controls is not None:
            from facerig.rig.controls import check_controls

            check_controls(self.controls)
        if "expression" in take and (self.expression or self.preset or self.text):
            raise InvalidInput("take", "'expression' from the reference or expression edits, not both",
                               sorted(take))
        for n in ("yaw", "pitch", "roll"):
            if getattr(self, n) is not None:
                finite_float(getattr(self, n), n, -360.0, 360.0)
        if "pose" in take and any(getattr(self, n) is not None for n in ("yaw", "pitch", "roll")):
            raise InvalidInput("take", "'pose' from the reference or yaw/pitch/roll, not both", sorted(take))
        has_dir = self.light_azimuth is not None or self.light_elevation is not None
        if self.light is not None and has_dir:
            raise InvalidInput("light", "a preset/SH or light_azimuth/light_elevation, not both", self.light)
        if isinstance(self.light, str) and self.light.strip().lower() not in LIGHT_PRESET_NAMES:
            raise InvalidInput("light", f"one of {', '.join(LIGHT_PRESET_NAMES)} or SH coefficients", self.light)
        if self.light_azimuth is not None:
            finite_float(self.light_azimuth, "light_azimuth", -360.0, 360.0)
        if self.light_elevation is not None:
            finite_float(self.light_elevation, "light_elevation", -90.0, 90.0)
        finite_float(self.light_intensity, "light_intensity", 0.0, 100.0)
        if "light" in take and (self.light is not None or has_dir):
            raise InvalidInput("take", "'light' from the reference or a new light, not both", sorted(take))
        return self

    @property
    def is_empty(self) -> bool:
        import dataclasses as _dc

        return _dc.replace(self, controls=None if not self.controls or not any(self.controls.values())
                           else self.controls) == EditSpec()

    # ---- (de)serialisation for the CLI / UI ----------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EditSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidInput("edit spec", f"fields among {', '.join(sorted(names))}", unknown)
        kw = dict(d)
        if "take" in kw and kw["take"] is not None:
            kw["take"] = frozenset([kw["take"]] if isinstance(kw["take"], str) else kw["take"])
        return cls(**kw).validate()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.tolist()
            elif isinstance(v, frozenset | set):
                v = sorted(v)
            out[f.name] = v
        return out

    # ---- apply ----------------------------------------------------------------------------------
    def apply(self, params: FaceParams, model: Any, reference: FaceParams | None = None) -> FaceParams:
        """Apply the edit to ``params`` (fitted with ``model``); ``reference`` is needed when
        ``take`` is not empty (batch 1 or params' batch). Order: expression, pose, light."""
        self.validate()
        check_params(params)
        take = frozenset(self.take)
        if take and reference is None:
            raise InvalidInput("reference", f"reference FaceParams to take {', '.join(sorted(take))} from", None)
        if reference is not None:
            check_params(reference, "reference")
        out = params.clone()
        # 1. expression
        if "expression" in take:
            assert reference is not None  # checked above (take needs a reference)
            out = transfer_expression(out, reference)
        preset, intensity = self.preset, self.intensity
        if self.text is not None:
            from facerig.rig.text import text_to_preset

            preset, text_intensity = text_to_preset(self.text)
            intensity = text_intensity if intensity is None else intensity
        if preset is not None:
            out = apply_preset(out, preset, 1.0 if intensity is None else intensity, model, mode=self.preset_mode)
        if self.expression:
            out = set_expression(out, self.expression, model, mode=self.expression_mode)
        if self.controls and any(self.controls.values()):
            from facerig.rig.controls import apply_controls

            out = apply_controls(out, self.controls, model)
        # 2. pose
        if "pose" in take:
            assert reference is not None  # checked above (take needs a reference)
            out = transfer_pose(out, reference, model, anchor=self.pose_anchor)
        elif any(v is not None for v in (self.yaw, self.pitch, self.roll)):
            out = set_pose(out, model, self.yaw, self.pitch, self.roll, relative=self.pose_relative,
                           anchor=self.pose_anchor)
        # 3. light
        if "light" in take:
            assert reference is not None  # checked above (take needs a reference)
            out = transfer_light(out, reference)
        elif self.light is not None or self.light_azimuth is not None or self.light_elevation is not None:
            if self.light is not None:
                lt = self.light.strip().lower() if isinstance(self.light, str) else self.light
                on_scale = None
            else:
                lt = directional(self.light_azimuth or 0.0, self.light_elevation or 0.0)
                on_scale = True
            out = set_light(out, lt, self.light_intensity, keep_brightness=self.light_keep_brightness,
                            preset_scale=on_scale)
        return out
