"""InstaFace engine (docs/instaface.md): a Guidance Network over the 3D Fusion Controller's latents
whose features are added before every self-attention of the Diffusion Network, and an Identity
Preserver (CLIP image + face-recognition embeddings -> projection -> cross-attention tokens), on
stock diffusers UNets extended by attention processors.

Light to import: the names below resolve lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "InstaFaceModel": "model", "IdentityProjection": "model", "GuidanceAddProcessor": "model",
    "TINY_UNET_CONFIG": "model", "SD15_UNET_CONFIG": "model",
    "FusionController": "conditions", "IdentityEncoder": "conditions",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
