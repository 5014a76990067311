"""Edits on fitted FaceParams: expression (values, presets, text), head pose, lighting, transfer,
and structured face alignment / smoothing for sequences. Every function is pure (returns a new
FaceParams) and the edits compose; :class:`EditSpec` applies them in the order expression, pose,
light. See docs/rig.md."""

from facerig.rig.expression import (
    apply_preset,
    interpolate_expression,
    preset_vector,
    resolve_expression_values,
    set_expression,
    transfer_expression,
)
from facerig.rig.light import (
    LIGHT_PRESET_NAMES,
    LIGHT_PRESETS,
    directional,
    light_preset,
    mean_frontal_shading,
    relight_keep_brightness,
    set_light,
    transfer_light,
)
from facerig.rig.pose import anchor_ndc, face_anchor, get_pose, set_pose, transfer_pose
from facerig.rig.presets import DESCRIPTIONS, PRESET_NAMES, PRESETS, preset_recipe
from facerig.rig.sequence import align_sequence, smooth_sequence
from facerig.rig.spec import EditSpec
from facerig.rig.text import match_text, text_to_preset

__all__ = [
    "EditSpec",
    "PRESETS",
    "PRESET_NAMES",
    "DESCRIPTIONS",
    "LIGHT_PRESETS",
    "LIGHT_PRESET_NAMES",
    "align_sequence",
    "anchor_ndc",
    "apply_preset",
    "directional",
    "face_anchor",
    "get_pose",
    "interpolate_expression",
    "light_preset",
    "match_text",
    "mean_frontal_shading",
    "preset_recipe",
    "preset_vector",
    "relight_keep_brightness",
    "resolve_expression_values",
    "set_expression",
    "set_light",
    "set_pose",
    "smooth_sequence",
    "text_to_preset",
    "transfer_expression",
    "transfer_light",
    "transfer_pose",
]
