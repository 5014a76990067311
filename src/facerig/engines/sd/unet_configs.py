"""UNet configs shared by the Stable-Diffusion engines (rigface, instaface, magicportrait's tests).

:data:`SD15_UNET_CONFIG`: the facts of Stable Diffusion 1.5's ``unet/config.json``;
:data:`TINY_UNET_CONFIG`: the same block layout (same block types and layers per block: 16
transformer blocks) at toy width for CPU tests (cross_attention_dim 32 = the tiny SD base's text
hidden size, :func:`facerig.engines.sd.base.write_tiny_sd_base`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from facerig.errors import InvalidInput

__all__ = ["SD15_UNET_CONFIG", "TINY_UNET_CONFIG", "clean_unet_config", "unet_params"]

SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

TINY_UNET_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "attention_head_dim": 2,
    "block_out_channels": [16, 16, 32, 32],
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "sample_size": 8,
}


def unet_params() -> set[str]:
    """The constructor arguments of diffusers' ``UNet2DConditionModel``."""
    import inspect

    from diffusers import UNet2DConditionModel

    return set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}


def clean_unet_config(cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Drop ``_``-prefixed keys (``_class_name``, ``_diffusers_version``, ...); unknown keys are errors
    naming ``source``."""
    if not isinstance(cfg, Mapping):
        raise InvalidInput(source, "a UNet config mapping", type(cfg).__name__)
    out = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    unknown = sorted(set(out) - unet_params())
    if unknown:
        raise InvalidInput(source, "UNet2DConditionModel config keys", f"unknown {unknown}")
    return out
