"""The MagicPortrait engine (Wei et al.), first slice: the released checkpoints (docs/magicportrait.md).

Light to import: the names below resolve lazily (diffusers loads on first use).

* :class:`GuidanceEncoder`, :func:`guidance_features`, ``GUIDANCE_TYPES``, ``RELEASED_GUIDANCE_CONFIG``,
  ``TINY_GUIDANCE_CONFIG`` (:mod:`.guidance`);
* :func:`load_guidance_encoders`, :func:`load_reference_unet`, :func:`load_denoising_unet`,
  :func:`load_motion_adapter`, :func:`build_denoiser`, :func:`animatediff_to_diffusers`,
  :func:`diffusers_to_animatediff` (:mod:`.checkpoints`).

No engine is registered yet and there is no sampling pipeline.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "GuidanceEncoder": "guidance", "guidance_features": "guidance", "GUIDANCE_TYPES": "guidance",
    "RELEASED_GUIDANCE_CONFIG": "guidance", "TINY_GUIDANCE_CONFIG": "guidance",
    "load_guidance_encoders": "checkpoints", "load_guidance_encoder": "checkpoints",
    "load_reference_unet": "checkpoints", "load_denoising_unet": "checkpoints",
    "load_motion_adapter": "checkpoints", "build_denoiser": "checkpoints",
    "animatediff_to_diffusers": "checkpoints", "diffusers_to_animatediff": "checkpoints",
    "read_checkpoint": "checkpoints",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
