"""Expression edits on FaceParams: named values, presets, transfer and interpolation.

All functions are pure: they return a new :class:`~facerig.types.FaceParams` and never modify their
inputs. Expression edits move ``expression`` *and* ``jaw_pose`` (for blendshape models the jaw is
driven by jawOpen/jawLeft/jawRight and ``jaw_pose`` stays zero); they never touch the head rotation,
camera or light.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from facerig.errors import FacerigError, InvalidInput
from facerig.rig.presets import (
    HEADROOM,
    KEEP_OPENING,
    OPENING_SHAPES,
    PRESET_NAMES,
    canonical_preset_name,
    preset_recipe,
    strong_recipe,
)
from facerig.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from facerig.types import FaceParams

__all__ = [
    "set_expression",
    "apply_preset",
    "expression_part",
    "PRESET_MODES",
    "preset_vector",
    "transfer_expression",
    "interpolate_expression",
    "resolve_expression_values",
    "check_params_model",
]


# ---- validation helpers (shared by the rig modules) ---------------------------------------------
def check_params(params: Any, name: str = "params") -> FaceParams:
    if not isinstance(params, FaceParams):
        raise InvalidInput(name, "a FaceParams", type(params).__name__)
    return params


def check_params_model(params: FaceParams, model: Any, name: str = "params") -> None:
    """``params`` were fitted with ``model`` and carry its expression names."""
    check_params(params, name)
    if model is None or not hasattr(model, "expression_names"):
        raise InvalidInput("model", "a FaceModel (facerig.morphable.load_face_model)", type(model).__name__)
    try:
        model.check_params(params.model)
    except FacerigError as e:
        raise InvalidInput(name, f"parameters of the {model.name!r} face model", params.model, hint=str(e)) from e
    if tuple(params.expression_names) != tuple(model.expression_names):
        raise InvalidInput(f"{name}.expression_names", f"the {model.name} model's {model.n_expression} names",
                           f"{len(params.expression_names)} other names")


def check_same_model(a: FaceParams, b: FaceParams, name: str) -> None:
    if a.model.split("-")[0] != b.model.split("-")[0] or tuple(a.expression_names) != tuple(b.expression_names):
        raise InvalidInput(name, f"FaceParams of the same face model as params ({a.model})", b.model)


def broadcast_batch(t: torch.Tensor, b: int, name: str) -> torch.Tensor:
    """(1, ...) or (B, ...) -> (B, ...); anything else is an error naming ``name``."""
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:]).clone()
    raise InvalidInput(name, f"batch size 1 or {b}", t.shape[0])


def finite_float(x: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError) as e:
        raise InvalidInput(name, "a number", x) from e
    if not math.isfinite(v):
        raise InvalidInput(name, "a finite number", x)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise InvalidInput(name, f"a number in [{lo}, {hi}]", v)
    return v


def _clamp(params: FaceParams, model: Any, exp: torch.Tensor) -> torch.Tensor:
    rng = getattr(model, "expression_range", None)
    if rng is None:
        return exp
    return exp.clamp(float(rng[0]), float(rng[1]))


# ---- names --------------------------------------------------------------------------------------
def resolve_expression_values(values: Mapping[str, Any], model: Any) -> dict[str, float]:
    """Names or aliases -> {canonical model name: value}; unknown names raise with suggestions."""
    if not isinstance(values, Mapping):
        raise InvalidInput("values", "a mapping of expression name -> number", type(values).__name__)
    out: dict[str, float] = {}
    candidates = list(model.expression_names) + list(getattr(model, "expression_aliases", {}) or {})
    for key, val in values.items():
        if not isinstance(key, str):
            raise InvalidInput("values", "expression names (str)", key)
        try:
            names = model.resolve_expression_name(key)
        except InvalidInput:
            lower = {c.lower(): c for c in candidates}
            close = difflib.get_close_matches(key.lower(), list(lower), n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(lower[c] for c in close)}?" if close else \
                f"names are e.g. {', '.join(model.expression_names[:6])}, ..."
            raise InvalidInput(f"values[{key!r}]", f"an expression name of the {model.name} model", key,
                               hint=hint) from None
        v = finite_float(val, f"values[{key!r}]")
        for n in names:
            out[n] = v
    return out


# ---- edits --------------------------------------------------------------------------------------
def parse_name_values(items: Iterable[Any], what: str, example: str) -> dict[str, float]:
    """["NAME=VALUE", ...] -> {NAME: float(VALUE)}; ``what`` (the option) and ``example`` name a
    malformed item's expected form in the error."""
    out: dict[str, float] = {}
    for it in items:
        name, sep, val = str(it).partition("=")
        if not sep or not name.strip():
            raise InvalidInput(what, f"NAME=VALUE (e.g. {example})", it)
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise InvalidInput(what, f"a number after '{name.strip()}='", val) from None
    return out


def set_expression(params: FaceParams, values: Mapping[str, Any], model: Any,
                   mode: str = "absolute") -> FaceParams:
    """Set (``mode="absolute"``) or add to (``mode="add"``) named expression coefficients.

    ``values``: name or alias (e.g. ``"jawOpen"``, ``"mouthSmile"`` = both sides) -> number, applied
    to every face of the batch; other coefficients are kept. Results are clamped to the model's
    ``expression_range`` ([0, 1] for blendshape models; no clamp for flame).
    """
    check_params_model(params, model)
    if mode not in ("absolute", "add"):
        raise InvalidInput("mode", "'absolute' or 'add'", mode)
    resolved = resolve_expression_values(values, model)
    exp = params.expression.clone()
    names = list(params.expression_names)
    for n, v in resolved.items():
        i = names.index(n)
        exp[:, i] = v if mode == "absolute" else exp[:, i] + v
    return params.replace(expression=_clamp(params, model, exp))


def _require_blendshapes(model: Any) -> None:
    if getattr(model, "expression_range", None) is None:
        raise InvalidInput(
            "model", "a blendshape face model with ARKit expression names (builtin or ict) for presets",
            getattr(model, "name", type(model).__name__),
            hint="presets are ARKit recipes; FLAME's PCA expression has no named shapes - fit with the "
                 "builtin model, or edit FLAME coefficients with set_expression/transfer_expression",
        )


def preset_vector(name: str, model: Any, intensity: float = 1.0) -> torch.Tensor:
    """Expression coefficients (K_exp,) of a preset at ``intensity`` for a blendshape model: the
    recipe x intensity (+ the preset's :data:`~facerig.rig.presets.STRONG` shapes from intensity 0.5
    on), the :data:`~facerig.rig.presets.HEADROOM` shapes scaled by their factor; clamped to the
    model's range (the headroom shapes to their factor x its upper bound)."""
    _require_blendshapes(model)
    recipe = preset_recipe(name)
    strong = strong_recipe(name)
    missing = [n for n in {**recipe, **strong} if n not in model.expression_names]
    if missing:
        raise InvalidInput("model", f"a model with the ARKit shapes of preset {name!r}",
                           f"{model.name} lacks {', '.join(missing)}")
    vec = torch.zeros(model.n_expression, dtype=torch.float64)
    for n, v in recipe.items():
        vec[model.expression_names.index(n)] = v * intensity * HEADROOM.get(n, 1.0)
    k = min(max((float(intensity) - 0.5) / 0.5, 0.0), 1.0)
    for n, v in strong.items():
        vec[model.expression_names.index(n)] += v * k
    return vec.clamp(*_preset_bounds(model))


def _preset_bounds(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coefficient (lo, hi) a preset may set: the model's range, HEADROOM x hi for brow shapes."""
    lo, hi = model.expression_range
    up = torch.tensor([hi * HEADROOM.get(n, 1.0) for n in model.expression_names], dtype=torch.float64)
    return torch.full_like(up, float(lo)), up


#: preset modes: "parts" (default) replaces the face parts the preset touches, "replace" the whole
#: expression, "blend" lerps towards the preset
PRESET_MODES = ("parts", "replace", "blend")


def expression_part(name: str) -> str:
    """The face part an ARKit coefficient moves: "gaze" (eyeLook*), "eyes" (lids), "brows", "nose"
    or "mouth" (mouth, jaw, cheeks, tongue). The gaze is a part of its own: a preset that moves the
    lids (raise_brows' eyeWide, a smile's eyeSquint) keeps the photo's look (dropping a fitted look
    down raised the lids of deep-set eyes into a white band, and every preset re-aimed the irises)."""
    n = name.lower()
    for prefix, part in (("eyelook", "gaze"), ("eye", "eyes"), ("brow", "brows"), ("nose", "nose")):
        if n.startswith(prefix):
            return part
    return "mouth"


#: a preset replaces a face part (:func:`expression_part`) only where its recipe gives one of the
#: part's coefficients at least this weight; below it the part is accented (see :func:`apply_preset`)
ACCENT = 0.25


def apply_preset(params: FaceParams, name: str, intensity: float = 1.0, model: Any = None,
                 mode: str = "parts") -> FaceParams:
    """Apply a named preset (:data:`facerig.rig.presets.PRESETS`).

    * ``mode="parts"`` (default): the coefficients of the face parts the preset touches
      (:func:`expression_part`: gaze, eyes, brows, nose, mouth incl. jaw and cheeks) are neutralised, then
      ``preset * intensity`` is applied; the other parts keep their values, so ``close_eyes`` on a
      smiling photo keeps the smile and ``smile`` keeps raised brows. A part the preset only accents
      (all its weights there below :data:`ACCENT`, e.g. raise_brows' eyeWide 0.15) is not neutralised:
      the accent is added to the photo's values. ``neutral`` neutralises all.
      A smile (:data:`~facerig.rig.presets.KEEP_OPENING`) keeps the source's jaw and lips apart
      where they are more open than its own. ``intensity`` in [0, 2].
    * ``mode="replace"``: the whole expression (and jaw) is neutralised first; ``intensity`` in [0, 2].
    * ``mode="blend"``: ``expression <- (1 - intensity) * expression + intensity * preset``
      (jaw likewise towards zero); ``intensity`` in [0, 1].

    Results are clamped to the model's range, except that the brow shapes may reach
    :data:`~facerig.rig.presets.HEADROOM` x its upper bound (the models' brow shapes are weak). Presets are defined for blendshape models with ARKit
    names (builtin, ict); flame raises.
    """
    check_params_model(params, model)
    if mode not in PRESET_MODES:
        raise InvalidInput("mode", " or ".join(repr(m) for m in PRESET_MODES), mode)
    if not isinstance(name, str):
        raise InvalidInput("preset", f"a preset name ({', '.join(PRESET_NAMES)})", name)
    name = canonical_preset_name(name)
    t = finite_float(intensity, "intensity", 0.0, 1.0 if mode == "blend" else 2.0)
    _require_blendshapes(model)
    dtype, device = params.expression.dtype, params.expression.device
    assert params.jaw_pose is not None  # FaceParams.__post_init__ fills it
    if mode == "blend":
        vec = preset_vector(name, model, 1.0).to(dtype=dtype, device=device)
        exp = (1 - t) * params.expression + t * vec
        jaw = (1 - t) * params.jaw_pose
        lo, hi = (b.to(dtype=dtype, device=device) for b in _preset_bounds(model))
        return params.replace(expression=torch.maximum(torch.minimum(exp, hi), lo), jaw_pose=jaw)
    vec = preset_vector(name, model, t).to(dtype=dtype, device=device)
    exp = vec.expand(params.batch_size, -1).clone()
    jaw = torch.zeros_like(params.jaw_pose)
    recipe = preset_recipe(name)
    parts = {expression_part(n) for n, v in recipe.items() if v >= ACCENT}
    if mode == "parts" and parts:
        keep = torch.tensor([expression_part(n) not in parts for n in model.expression_names], device=device)
        # a part the preset only accents (every weight below ACCENT: raise_brows' eyeWide 0.15, a
        # frown's eyeSquint 0.2) keeps the photo's values plus the accent; replacing it dropped a
        # deep-set eye's fitted squint and opened the lid into a white band under raised brows
        accent = torch.tensor([expression_part(n) not in parts and n in recipe for n in model.expression_names],
                              device=device)
        exp = torch.where(accent, params.expression + exp, torch.where(keep, params.expression, exp))
        if "mouth" not in parts:
            jaw = params.jaw_pose.clone()
        elif name in KEEP_OPENING:
            # a smile keeps the photo's own open mouth (closing it under a smile drew a squeezed
            # grimace): its opening shapes take the larger of the source's and the preset's
            for n in OPENING_SHAPES:
                if n in model.expression_names:
                    i = model.expression_names.index(n)
                    exp[:, i] = torch.maximum(exp[:, i], params.expression[:, i])
            jaw = params.jaw_pose.clone()
    lo, hi = _preset_bounds(model)
    lo, hi = lo.to(dtype=dtype, device=device), hi.to(dtype=dtype, device=device)
    return params.replace(expression=torch.maximum(torch.minimum(exp, hi), lo), jaw_pose=jaw)


def transfer_expression(params: FaceParams, reference_params: FaceParams) -> FaceParams:
    """Expression and jaw pose from ``reference_params`` (batch 1 broadcasts to params' batch)."""
    check_params(params)
    check_params(reference_params, "reference_params")
    check_same_model(params, reference_params, "reference_params")
    b = params.batch_size
    assert reference_params.jaw_pose is not None  # FaceParams.__post_init__ fills it
    exp = broadcast_batch(reference_params.expression, b, "reference_params")
    jaw = broadcast_batch(reference_params.jaw_pose, b, "reference_params")
    return params.replace(
        expression=exp.to(params.expression).clone(), jaw_pose=jaw.to(params.jaw_pose).clone()
    )


def _slerp_axis_angle(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation between axis-angle rotations (B,3) at t (B,1)."""
    ra = axis_angle_to_matrix(a.double())
    rb = axis_angle_to_matrix(b.double())
    rel = matrix_to_axis_angle(rb @ ra.transpose(-1, -2))
    return matrix_to_axis_angle(axis_angle_to_matrix(rel * t.double()) @ ra).to(a.dtype)


def interpolate_expression(a: FaceParams, b: FaceParams, t: float | torch.Tensor) -> FaceParams:
    """``a`` with expression ``(1 - t) a + t b`` and jaw pose slerped from a to b.

    ``t``: a number or a (B,) tensor (per face; values outside [0, 1] extrapolate and are allowed in
    [-1, 2]). ``b`` may have batch 1 (broadcast). Everything but expression/jaw comes from ``a``.
    """
    check_params(a, "a")
    check_params(b, "b")
    check_same_model(a, b, "b")
    n = a.batch_size
    if isinstance(t, torch.Tensor) and t.numel() > 1:
        tt = t.reshape(-1).to(a.expression)
        if tt.shape[0] != n or not torch.isfinite(tt).all() or (tt < -1).any() or (tt > 2).any():
            raise InvalidInput("t", f"a number or ({n},) tensor of finite values in [-1, 2]", tuple(t.shape))
    else:
        tt = torch.full((n,), finite_float(t, "t", -1.0, 2.0), dtype=a.expression.dtype)
    tt = tt[:, None]
    assert a.jaw_pose is not None and b.jaw_pose is not None  # FaceParams.__post_init__ fills them
    eb = broadcast_batch(b.expression, n, "b").to(a.expression)
    jb = broadcast_batch(b.jaw_pose, n, "b").to(a.jaw_pose)
    exp = (1 - tt) * a.expression + tt * eb
    jaw = _slerp_axis_angle(a.jaw_pose, jb, tt)
    return a.replace(expression=exp, jaw_pose=jaw)
