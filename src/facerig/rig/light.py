"""Relighting: SH light presets, directional lights, exposure-preserving relight, light transfer.

Directions are in the world frame of ``docs/conventions.md`` (x = image right, y up, z to the
viewer) and follow :func:`facerig.render.shading.light_direction`: azimuth 0 = light from the
viewer, azimuth > 0 = from the image's right, elevation > 0 = from above. **User-facing preset
names use the image's sides**: ``left`` is a light on the image's left (it lights the subject's
right cheek; normals pointing to -x get brighter), ``right`` a light on the image's right.

Brightness scale: the photometric fit makes the light white with a shading that averages 1 over
the visible skin (``facerig.fit.photometric.split_albedo_light``; a uniform light of DC
``sqrt(4 pi)`` = 3.5449 shades everything 1). The presets use that scale: they are calibrated so
that the ``front`` preset's mean shading over the frontal hemisphere of normals, weighted by their
visible area (:func:`mean_frontal_shading`), is exactly 1 - the exposure of a typical fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import torch

from facerig.errors import InvalidInput
from facerig.render.shading import NEUTRAL_DC, directional_light_sh, fit_sh, shading
from facerig.rig.expression import broadcast_batch, check_params, finite_float
from facerig.types import FaceParams

__all__ = ["DISPLAY_GAMMA", "display_light_sh", "LIGHT_PRESETS", "LIGHT_PRESET_NAMES", "directional", "light_preset", "set_light",
           "relight_keep_brightness", "transfer_light", "mean_frontal_shading", "NEUTRAL_DC"]

DEFAULT_AMBIENT = 0.3

#: name -> (azimuth deg, elevation deg, key intensity, ambient), before the brightness calibration
LIGHT_PRESETS: MappingProxyType = MappingProxyType({
    "front": (0.0, 15.0, 1.0, DEFAULT_AMBIENT),     # key light near the camera, slightly above
    "left": (-60.0, 15.0, 1.0, DEFAULT_AMBIENT),    # key light on the image's left
    "right": (60.0, 15.0, 1.0, DEFAULT_AMBIENT),    # key light on the image's right
    "top": (0.0, 55.0, 1.3, 0.15),                  # overhead: a high key, little fill (forehead/top lit, under nose/chin dark)
    "bottom": (0.0, -60.0, 1.0, DEFAULT_AMBIENT),   # from below ("horror" light)
    "rim": (180.0, 20.0, 1.0, 0.45),                # from behind and above, with some ambient fill
    "soft": (0.0, 20.0, 0.5, 0.65),                 # flat, low-contrast
    "dim": (0.0, 15.0, 0.5, 0.5 * DEFAULT_AMBIENT),  # the front light at half brightness
})
LIGHT_PRESET_NAMES: tuple[str, ...] = tuple(LIGHT_PRESETS)

#: exposure of each preset relative to the photo when relighting keeps the brightness: a light from
#: the side should move light across the face, not make the photo darker; only "dim" (and the
#: back-lit "rim") are meant to be darker; "top" is lifted a little (its key misses the face front).
PRESET_EXPOSURE: MappingProxyType = MappingProxyType({name: 1.0 for name in LIGHT_PRESETS} | {"dim": 0.5, "rim": 0.6, "top": 1.06})


def _fibonacci_normals(z: torch.Tensor) -> torch.Tensor:
    """Unit normals with the given z values (float64, in [-1, 1]) on a golden-angle spiral: an
    even sample of the sphere zone the z values cover when they are evenly spaced."""
    i = torch.arange(z.numel(), dtype=torch.float64) + 0.5
    phi = i * math.pi * (3 - math.sqrt(5))
    r = torch.sqrt(1 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


@lru_cache(maxsize=1)
def _frontal_normals() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed Fibonacci sample of unit normals on the frontal hemisphere (z > 0) with weights n_z
    (their projected area as seen by the camera), normalised to sum 1."""
    n = 2000
    z = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # uniform in (0, 1) -> uniform area on the hemisphere
    w = z / z.sum()
    return _fibonacci_normals(z), w


def mean_frontal_shading(light: torch.Tensor) -> torch.Tensor:
    """Mean SH shading over the frontal hemisphere of normals, weighted by visible area.

    ``light`` (9, 3) -> (3,) or (B, 9, 3) -> (B, 3): the overall brightness a face gets.
    """
    normals, w = _frontal_normals()
    lt = light.double()
    s = shading(normals, lt) if lt.ndim == 2 else shading(normals.expand(lt.shape[0], -1, -1), lt)
    return (s * w[:, None]).sum(-2).to(light.dtype)


#: gamma between physical irradiance and the pixel values facerig's lights are fitted to (sRGB ~ 2.2)
DISPLAY_GAMMA = 2.2


@lru_cache(maxsize=1)
def _sphere_normals() -> tuple[torch.Tensor, torch.Tensor]:
    """A Fibonacci sample of the whole sphere of normals with fitting weights that favour the
    frontal hemisphere (what a camera sees of a face) but keep the back constrained."""
    n = 3000
    z = 1 - 2 * (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return _fibonacci_normals(z), 0.2 + z.clamp(min=0)


def display_light_sh(physical: torch.Tensor, gamma: float = DISPLAY_GAMMA) -> torch.Tensor:
    """The SH light (9, 3) in facerig's light space of a *physical* SH light (9, 3).

    The photometric fit explains sRGB pixel values as albedo x shading, so a fitted light is
    display-referred: its shading is (physical irradiance) ** (1 / gamma), up to scale. A light
    described physically (a key light and an ambient fill, :func:`directional`) is converted by
    fitting order-2 SH to that encoded irradiance over the sphere of normals (weighted towards the
    front), so relighting a photo with it gives the contrast a real light of that kind gives in a
    photo, not gamma times more. The overall scale is set afterwards by the brightness calibration.
    """
    normals, w = _sphere_normals()
    e = shading(normals, physical.double()).clamp(min=0.0)
    return fit_sh(normals, e.pow(1.0 / gamma), w, ridge=1e-9)


def _raw_directional(azimuth: float, elevation: float, intensity: Any, ambient: Any) -> torch.Tensor:
    return display_light_sh(directional_light_sh(azimuth, elevation, intensity, ambient, dtype=torch.float64))


@lru_cache(maxsize=1)
def _calibration() -> float:
    az, el, i, a = LIGHT_PRESETS["front"]
    return 1.0 / float(mean_frontal_shading(_raw_directional(az, el, i, a)).mean())


def _rgb(v: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3 or not torch.isfinite(t).all() or (t < 0).any():
        raise InvalidInput(name, "a non-negative number or 3 RGB values", v)
    return t


def directional(azimuth: float, elevation: float = 0.0, intensity: float = 1.0,
                ambient: float | Sequence[float] = DEFAULT_AMBIENT,
                color: Sequence[float] | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SH light (9, 3) of one directional light plus ambient, on the presets' brightness scale.

    ``azimuth``: degrees, 0 = from the viewer, > 0 from the image's right, +-180 from behind;
    ``elevation``: degrees, > 0 from above. ``intensity``: key-light strength (1 = the ``front``
    preset's key); ``ambient``: uniform fill (scalar or RGB); ``color``: RGB of the key light
    (default white). With the defaults, ``directional(0, 15)`` equals the ``front`` preset.
    """
    az = finite_float(azimuth, "azimuth", -360.0, 360.0)
    el = finite_float(elevation, "elevation", -90.0, 90.0)
    k = finite_float(intensity, "intensity", 0.0)
    key = _rgb(color if color is not None else 1.0, "color") * k
    amb = _rgb(ambient, "ambient")
    return (_raw_directional(az, el, key, amb) * _calibration()).to(dtype)


def light_preset(name: str, intensity: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The SH light (9, 3) of a preset (:data:`LIGHT_PRESETS`), scaled by ``intensity``."""
    key = str(name).strip().lower() if isinstance(name, str) else name
    if key not in LIGHT_PRESETS:
        import difflib

        close = difflib.get_close_matches(str(key), LIGHT_PRESET_NAMES, n=2, cutoff=0.5)
        raise InvalidInput("light preset", f"one of {', '.join(LIGHT_PRESET_NAMES)}", name,
                           hint=f"did you mean {' or '.join(close)}?" if close else None)
    s = finite_float(intensity, "intensity", 0.0)
    az, el, i, a = LIGHT_PRESETS[key]
    return directional(az, el, i, a, dtype=torch.float64).mul(s).to(dtype)


def _as_light(light: Any, b: int, like: torch.Tensor, name: str = "light") -> torch.Tensor:
    if isinstance(light, str):
        t = light_preset(light, dtype=torch.float64)
    else:
        try:
            t = torch.as_tensor(light, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidInput(name, "a preset name or SH coefficients (9, 3) / (B, 9, 3)", type(light).__name__) from e
        if t.shape[-2:] != (9, 3) or t.ndim not in (2, 3) or not torch.isfinite(t).all():
            raise InvalidInput(name, "a preset name or finite SH coefficients (9, 3) / (B, 9, 3)", tuple(t.shape))
    if t.ndim == 2:
        t = t[None]
    return broadcast_batch(t, b, name).to(dtype=like.dtype, device=like.device)


def _brightness(light: torch.Tensor) -> torch.Tensor:
    """Scalar brightness per face (B,): mean over RGB of :func:`mean_frontal_shading`."""
    return mean_frontal_shading(light.double()).mean(-1)


def relight_keep_brightness(params: FaceParams, sh: Any) -> FaceParams:
    """Replace the light by ``sh`` (preset name, (9,3) or (B,9,3)) rescaled per face so its mean
    frontal shading (:func:`mean_frontal_shading`, averaged over RGB) equals the current light's:
    relighting changes the light's direction and colour balance, not the overall exposure."""
    check_params(params)
    new = _as_light(sh, params.batch_size, params.light, "sh").double()
    old_b, new_b = _brightness(params.light), _brightness(new)
    if (new_b <= 1e-8).any():
        raise InvalidInput("sh", "a light that illuminates the front of the face (positive mean shading)",
                           [round(x, 6) for x in new_b.tolist()])
    scaled = new * (old_b / new_b)[:, None, None]
    return params.replace(light=scaled.to(params.light))


def set_light(params: FaceParams, light: Any, intensity: float = 1.0, keep_brightness: bool = False,
              preset_scale: bool | None = None) -> FaceParams:
    """Set the light: a preset name (:data:`LIGHT_PRESETS`) or SH coefficients (9,3) / (B,9,3),
    multiplied by ``intensity``.

    ``keep_brightness=False``: absolute, on the presets' scale (``front`` = exposure of a typical
    fit). ``keep_brightness=True``: calibrated to the photo's own exposure. A preset name is scaled
    so its mean frontal shading equals the current light's times :data:`PRESET_EXPOSURE` (1 for all
    but ``dim`` 0.5, ``rim`` 0.6 and ``top`` 1.06: a side light moves light across the face without
    darkening the photo; an overhead key lights less of the face front than the hemisphere average). SH from :func:`directional` with ``preset_scale=True`` is multiplied by
    ``brightness(current light) / brightness(front preset)``; other SH is rescaled to the current
    brightness as by :func:`relight_keep_brightness`. ``intensity`` multiplies after that.
    """
    check_params(params)
    s = finite_float(intensity, "intensity", 0.0)
    new = _as_light(light, params.batch_size, params.light).double()
    if keep_brightness:
        old_b = _brightness(params.light)
        if isinstance(light, str):
            # a preset: the photo's exposure times the preset's own exposure
            ref_b = _brightness(new) / PRESET_EXPOSURE[light.strip().lower()]
        elif preset_scale:
            ref_b = _brightness(light_preset("front", dtype=torch.float64)[None])
        else:
            ref_b = _brightness(new)
            if (ref_b <= 1e-8).any():
                raise InvalidInput("light", "a light that illuminates the front of the face",
                                   [round(x, 6) for x in ref_b.tolist()])
        new = new * (old_b / ref_b)[:, None, None]
    return params.replace(light=(new * s).to(params.light))


def transfer_light(params: FaceParams, reference_params: FaceParams) -> FaceParams:
    """The light of ``reference_params`` (batch 1 broadcasts). The light is model-independent."""
    check_params(params)
    check_params(reference_params, "reference_params")
    lt = broadcast_batch(reference_params.light, params.batch_size, "reference_params")
    return params.replace(light=lt.to(params.light).clone())
