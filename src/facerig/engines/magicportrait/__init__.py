"""The MagicPortrait engine (Wei et al.): video reenactment on SD 1.5 (docs/magicportrait*.md).

Light to import: the names below resolve lazily (diffusers loads on first use).

* :class:`GuidanceEncoder`, :func:`guidance_features`, ``GUIDANCE_TYPES``, ``RELEASED_GUIDANCE_CONFIG``,
  ``TINY_GUIDANCE_CONFIG`` (:mod:`.guidance`);
* :func:`load_guidance_encoders`, :func:`load_reference_unet`, :func:`load_denoising_unet`,
  :func:`load_motion_adapter`, :func:`build_denoiser`, :func:`animatediff_to_diffusers`,
  :func:`diffusers_to_animatediff` (:mod:`.checkpoints`);
* :func:`load_released`, :class:`MagicPortraitModel` (:mod:`.model`);
* :class:`MagicPortraitPipeline`, :func:`context_windows`, :func:`release_scheduler` (:mod:`.pipeline`);
* :class:`MagicPortraitFrames`, :class:`FacerigMagicConditioner`, :class:`ReleasedMagicConditioner`
  (:mod:`.conditions`), :class:`SmirkEncoder`, :func:`load_smirk` (:mod:`.smirk`);
* :class:`MagicPortraitEngine` (:mod:`.engine`, registered as ``magicportrait``).

Low-level entry to the released checkpoints::

    from facerig.engines.magicportrait import load_released
    mp = load_released("ckpts/", "stable-diffusion-v1-5/unet", device="cuda", dtype=torch.float16)
    bank = mp.reference_bank(scaled_source_latent, text_embeds)       # once per clip, t = 0
    feats = mp.guidance(depth, normal, render)                         # (B, 3, F, H, W) in [0, 1]
    v_cond = mp.predict(noisy, t, text_embeds, feats, bank)
    v_uncond = mp.predict(noisy, t, text_embeds, feats, bank, uncond=True)

Whole clips: ``facerig reenact SRC DRV -o out.mp4 --engine magicportrait --weights CKPTS --base SD15``.
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
    "load_released": "model", "MagicPortraitModel": "model",
    "MagicPortraitFrames": "conditions", "FacerigMagicConditioner": "conditions", "MagicSource": "conditions",
    "ReleasedMagicConditioner": "conditions", "ReleasedMagicSource": "conditions", "transfer_codes": "conditions",
    "SmirkEncoder": "smirk", "load_smirk": "smirk", "smirk_crop": "smirk",
    "MagicPortraitPipeline": "pipeline", "context_windows": "pipeline", "release_scheduler": "pipeline",
    "MagicPortraitEngine": "engine", "clip_chunks": "engine", "RELEASED_FILES": "engine",
    "MagicPortraitTrainModule": "training", "fresh_motion_adapter": "training", "release_alphas_cumprod": "training",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
