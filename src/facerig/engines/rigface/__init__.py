"""The RigFace engine (Wei et al.): two SD 1.5 UNets, identity self-attention fusion (docs/rigface.md).

Light to import: the names below resolve lazily (diffusers loads on first use).

* :class:`RigFaceUNets`, :func:`load_released_unets`, :func:`load_rigface_weights`,
  ``TINY_UNET_CONFIG`` (:mod:`.model`);
* :class:`RigFaceConditions`, :class:`FacerigConditioner`, :class:`ReleasedConditioner`,
  :func:`person_mask`, :func:`paint_background` (:mod:`.conditions`, :mod:`.person`);
* :class:`RigFacePipeline` (:mod:`.pipeline`), :class:`RigFaceEngine` (:mod:`.engine`).

Low-level entry to the released checkpoints::

    from facerig.engines.rigface import load_released_unets
    unets = load_released_unets("pre_trained/unet_id/checkpoint-70000",
                                "pre_trained/unet_denoise/checkpoint-70000", device="cpu")
    states = unets.identity_states(source_latent, text_embeds)          # unscaled source latent
    eps = unets.predict_noise(noisy_latent, t, background_latent, render_latent, expression,
                              states, text_embeds)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RigFaceUNets": "model", "load_released_unets": "model", "load_rigface_weights": "model",
    "TINY_UNET_CONFIG": "model",
    "RigFaceConditions": "conditions", "FacerigConditioner": "conditions", "ReleasedConditioner": "conditions",
    "person_mask": "person", "paint_background": "person",
    "RigFacePipeline": "pipeline",
    "RigFaceEngine": "engine",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
