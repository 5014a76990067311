"""Shared Stable-Diffusion substrate of the SD-based engines (docs/rigface.md).

Light to import: the names below resolve lazily, so diffusers / transformers load on first use.

* :mod:`.base`: :class:`SDBase`, :func:`load_sd_base` (the user's SD 1.5, ``$FACERIG_SD15``),
  :func:`write_tiny_sd_base` (tiny random base for tests);
* :mod:`.latents`: scaled / unscaled VAE latents, image <-> tensor;
* :mod:`.prompt`: the cached fixed-prompt embedding;
* :mod:`.schedulers`: UniPC / DDIM / DDPM from diffusers (epsilon, v-prediction, zero-terminal-SNR);
* :mod:`.runtime`: dtype / device / SDPA / ``torch.compile`` / offload;
* :mod:`.reference`: reference-feature banks as attention processors.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SDBase": "base", "load_sd_base": "base", "write_tiny_sd_base": "base", "bundled_config": "base",
    "encode_images": "latents", "decode_latents": "latents", "image_to_tensor": "latents",
    "tensor_to_image": "latents",
    "encode_prompt": "prompt",
    "make_scheduler": "schedulers",
    "resolve_dtype": "runtime", "apply_runtime": "runtime",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
