"""Slider-style rig controls: one signed value per face part, added to the photo's own expression.

The web UI's sliders and ``facerig edit --control NAME=VALUE`` / ``--gaze X,Y`` use these. A control
at 0 leaves the photo as it is; a value moves the face part away from the photo's own state along a
fixed ARKit recipe (the control's *direction*), so a photo that already smiles smiles more at
``smile=0.5`` and less at ``smile=-0.5``:

    expression <- clamp(expression + |value| * direction(sign(value)))

Each control has a positive and (for the signed ones) a negative direction; entries may be negative
(gaze to the image's right raises ``eyeLookOut_L`` and lowers ``eyeLookIn_L``), so opposite shapes
never fight. Results are clamped like presets (the model's range; brow shapes up to
:data:`~facerig.rig.presets.HEADROOM` x its upper bound). Defined for blendshape models with ARKit
names (builtin, ict); FLAME raises.

Sides: ``wink_left`` closes the *subject's* left eye (the image's right), as the ``_L`` shapes and
the ``wink_left`` preset do. Gaze is in image terms, like yaw: ``gaze_x > 0`` looks towards the image's
right, ``gaze_y > 0`` looks up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from facerig.errors import InvalidInput
from facerig.rig.presets import HEADROOM, _both
from facerig.rig.presets import _recipe as _merge
from facerig.types import FaceParams

__all__ = ["CONTROLS", "CONTROL_NAMES", "Control", "apply_controls", "check_controls", "control_vector",
           "gaze_controls", "parse_control_args", "parse_gaze"]


@dataclass(frozen=True)
class Control:
    """One control: its value range, the direction at +1 and (signed controls) at -1, and a
    description (what +1 / -1 do)."""

    low: float
    high: float
    positive: Mapping[str, float]
    negative: Mapping[str, float]
    description: str


_NONE: MappingProxyType = MappingProxyType({})

#: control name -> Control. Weights are in recipe units, like presets: the brow shapes (weak in the
#: ARKit-named models) are scaled by their HEADROOM factor, so brows=+1 lifts them as far as the
#: raise_brows preset does.
CONTROLS: MappingProxyType = MappingProxyType({
    "brows": Control(-1.0, 1.0,
                     _merge({"browInnerUp": 1.0}, _both("browOuterUp", 1.0), _both("browDown", -1.0)),
                     _merge(_both("browDown", 1.0), {"browInnerUp": -1.0}, _both("browOuterUp", -1.0)),
                     "+1 brows raised (AU1+2), -1 lowered and drawn together (AU4)"),
    "blink": Control(-1.0, 1.0,
                     _merge(_both("eyeBlink", 1.0), _both("eyeWide", -1.0)),
                     _merge(_both("eyeWide", 1.0), _both("eyeBlink", -1.0)),
                     "+1 both eyes closed (AU45), -1 opened wide (AU5)"),
    "wink_left": Control(0.0, 1.0, _merge({"eyeBlink_L": 1.0, "eyeWide_L": -1.0, "cheekSquint_L": 0.2}), _NONE,
                         "+1 the subject's left eye (image right) closed"),
    "wink_right": Control(0.0, 1.0, _merge({"eyeBlink_R": 1.0, "eyeWide_R": -1.0, "cheekSquint_R": 0.2}), _NONE,
                          "+1 the subject's right eye (image left) closed"),
    "gaze_x": Control(-1.0, 1.0,
                      {"eyeLookOut_L": 1.0, "eyeLookIn_L": -1.0, "eyeLookIn_R": 1.0, "eyeLookOut_R": -1.0},
                      {"eyeLookIn_L": 1.0, "eyeLookOut_L": -1.0, "eyeLookOut_R": 1.0, "eyeLookIn_R": -1.0},
                      "+1 the eyes look towards the image's right, -1 towards its left"),
    "gaze_y": Control(-1.0, 1.0,
                      _merge(_both("eyeLookUp", 1.0), _both("eyeLookDown", -1.0)),
                      _merge(_both("eyeLookDown", 1.0), _both("eyeLookUp", -1.0)),
                      "+1 the eyes look up, -1 down"),
    "smile": Control(-1.0, 1.0,
                     _merge(_both("mouthSmile", 0.9), _both("cheekSquint", 0.5), _both("mouthFrown", -1.0)),
                     _merge(_both("mouthFrown", 0.9), _both("mouthSmile", -1.0), {"mouthShrugLower": 0.2}),
                     "+1 lip corners up, cheeks raised (AU6+12); -1 corners down (AU15)"),
    "mouth_open": Control(0.0, 1.0, _merge({"jawOpen": 0.8}, _both("mouthLowerDown", 0.2), {"mouthClose": -1.0}),
                          _NONE, "+1 jaw dropped, lips apart (AU25+26)"),
    "aaa": Control(0.0, 1.0, _merge({"jawOpen": 0.6}, _both("mouthLowerDown", 0.35), _both("mouthUpperUp", 0.2),
                                    {"mouthPucker": -1.0, "mouthFunnel": -1.0}), _NONE,
                   "viseme 'aaa': mouth open wide and relaxed"),
    "eee": Control(0.0, 1.0, _merge(_both("mouthStretch", 0.6), _both("mouthSmile", 0.35), {"jawOpen": 0.15},
                                    _both("mouthUpperUp", 0.25), _both("mouthLowerDown", 0.25),
                                    {"mouthPucker": -1.0, "mouthFunnel": -1.0}), _NONE,
                   "viseme 'eee': lips spread, teeth showing"),
    "ooo": Control(0.0, 1.0, _merge({"mouthFunnel": 0.75, "mouthPucker": 0.5, "jawOpen": 0.2},
                                    _both("mouthStretch", -1.0), _both("mouthSmile", -1.0)), _NONE,
                   "viseme 'ooo': lips rounded and pushed forward"),
    "pucker": Control(0.0, 1.0, _merge({"mouthPucker": 0.9, "mouthFunnel": 0.15}, _both("mouthSmile", -1.0),
                                       _both("mouthStretch", -1.0)), _NONE,
                      "+1 pursed lips, as for a kiss (AU18)"),
})
CONTROL_NAMES: tuple[str, ...] = tuple(CONTROLS)


def _key(name: Any) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def check_controls(values: Mapping[str, Any] | None, what: str = "controls") -> dict[str, float]:
    """Validated ``{name: value}`` (names canonical, values finite and within each control's range)."""
    from facerig.rig.expression import finite_float

    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(what, "a dict of control name -> value", type(values).__name__)
    out: dict[str, float] = {}
    for name, v in values.items():
        key = _key(name)
        if key not in CONTROLS:
            import difflib

            close = difflib.get_close_matches(key, CONTROL_NAMES, n=2, cutoff=0.5)
            raise InvalidInput(what, f"control names among {', '.join(CONTROL_NAMES)}", name,
                               hint=f"did you mean {' or '.join(close)}?" if close else None)
        c = CONTROLS[key]
        out[key] = finite_float(v, f"{what} {key}", c.low, c.high)
    return out


def control_vector(values: Mapping[str, Any], model: Any) -> torch.Tensor:
    """The summed change (K_exp,) float64 of ``values`` for a blendshape ``model``."""
    from facerig.rig.expression import _require_blendshapes

    _require_blendshapes(model)
    vals = check_controls(values)
    names = list(model.expression_names)
    vec = torch.zeros(len(names), dtype=torch.float64)
    for key, v in vals.items():
        if v == 0.0:
            continue
        c = CONTROLS[key]
        direction = c.positive if v > 0 else c.negative
        for n, w in direction.items():
            if n in names:  # a model without a shape (e.g. mouthClose) just skips it
                vec[names.index(n)] += abs(v) * w * HEADROOM.get(n, 1.0)
    return vec


def apply_controls(params: FaceParams, values: Mapping[str, Any] | None, model: Any) -> FaceParams:
    """``params`` with the controls added to its expression (clamped like presets); the jaw pose is
    kept. Controls at 0 (or none) return an unchanged copy."""
    from facerig.rig.expression import _preset_bounds, check_params_model

    check_params_model(params, model)
    vals = check_controls(values)
    if not any(vals.values()):
        return params.clone()
    exp = params.expression
    vec = control_vector(vals, model).to(dtype=exp.dtype, device=exp.device)
    lo, hi = (b.to(dtype=exp.dtype, device=exp.device) for b in _preset_bounds(model))
    # a source value already beyond the bounds (a brow at its headroom) is not pulled back
    hi = torch.maximum(hi, exp)
    lo = torch.minimum(lo, exp)
    return params.replace(expression=torch.maximum(torch.minimum(exp + vec, hi), lo))


def parse_control_args(items: Any) -> dict[str, float]:
    """["gaze_x=0.5", "blink=1"] -> {"gaze_x": 0.5, "blink": 1.0} (checked)."""
    from facerig.rig.expression import parse_name_values

    return check_controls(parse_name_values(items or [], "--control", "gaze_x=0.5"), "--control")


def parse_gaze(text: Any, what: str = "--gaze") -> tuple[float, float]:
    """"0.5,-0.2" (or a pair) -> (x, y), each in [-1, 1]."""
    from facerig.rig.expression import finite_float

    parts = [p for p in str(text).replace(" ", "").split(",")] if isinstance(text, str) else list(text)
    if len(parts) != 2:
        raise InvalidInput(what, "X,Y (each -1..1; x > 0 looks to the image's right, y > 0 up)", text)
    try:
        x, y = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidInput(what, "two numbers X,Y", text) from None
    return finite_float(x, f"{what} x", -1.0, 1.0), finite_float(y, f"{what} y", -1.0, 1.0)


def gaze_controls(x: float, y: float) -> dict[str, float]:
    return {"gaze_x": float(x), "gaze_y": float(y)}

