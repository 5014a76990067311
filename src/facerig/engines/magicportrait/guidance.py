"""MagicPortrait's geometric guidance encoders (depth, normal, render), in the released layout.

One encoder per guidance map. The architecture (facts read from the authors' public code, see
``docs/magicportrait.md``):

* ``conv_in``: 3x3 conv ``3 -> c0`` and SiLU;
* per level ``i``: ``blocks[2i]`` 3x3 conv ``ci -> ci`` and ``blocks[2i+1]`` 3x3 conv stride 2
  ``ci -> c(i+1)``, each followed by SiLU (channels 16, 32, 96, 256 as released: /8 spatially);
* ``attentions``: one spatial transformer after each of those convs is BUILT (so the released key
  set matches), but only the LAST one (``attentions[-1]``, at the last width) runs; the other ones
  and ``guidance_attention`` are dead weights of the released files (:meth:`GuidanceEncoder.dead_keys`);
* ``conv_out``: zero-initialised 3x3 conv ``c_last -> guidance_embedding_channels`` (320 = the SD 1.5
  denoiser's ``conv_in`` width), so a fresh encoder adds nothing.

The spatial transformers are stock diffusers ``Transformer2DModel`` s (no cross-attention, 1x1 conv
projections, GEGLU feed-forward), whose parameter names equal the released ones. Videos
``(B, C, F, H, W)`` run frame by frame (the released encoders are 2D).

:func:`guidance_features` runs the three encoders on maps in [0, 1] and returns their SUM, the
tensor the denoiser adds after its ``conv_in``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin, Transformer2DModel
from torch import nn

from facerig.errors import InvalidInput

__all__ = ["GUIDANCE_TYPES", "RELEASED_GUIDANCE_CONFIG", "TINY_GUIDANCE_CONFIG", "GuidanceEncoder", "guidance_features"]

#: the three maps, in the released order
GUIDANCE_TYPES = ("depth", "normal", "render")

#: the released config (``guidance_encoder_kwargs`` of the authors' inference config)
RELEASED_GUIDANCE_CONFIG: dict[str, Any] = {
    "guidance_embedding_channels": 320,
    "guidance_input_channels": 3,
    "block_out_channels": (16, 32, 96, 256),
    "attention_num_heads": 8,
}

#: a tiny config for tests (output width 16 = the tiny SD UNet's conv_in width)
TINY_GUIDANCE_CONFIG: dict[str, Any] = {
    "guidance_embedding_channels": 16,
    "guidance_input_channels": 3,
    "block_out_channels": (8, 32, 32),
    "attention_num_heads": 8,
}


def _transformer(channels: int, heads: int, groups: int) -> Transformer2DModel:
    if channels % heads or channels % groups:
        raise InvalidInput("block_out_channels", f"widths divisible by {heads} heads and {groups} norm groups", channels)
    return Transformer2DModel(num_attention_heads=heads, attention_head_dim=channels // heads, in_channels=channels,
                              norm_num_groups=groups)


class GuidanceEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers mixins are untyped
    """One guidance encoder (see the module docstring); ``forward`` takes ``(B, C, F, H, W)`` or
    ``(B, C, H, W)`` and returns the same rank with ``guidance_embedding_channels`` channels at /2^L."""

    @register_to_config
    def __init__(
        self,
        guidance_embedding_channels: int = 320,
        guidance_input_channels: int = 3,
        block_out_channels: Sequence[int] = (16, 32, 96, 256),
        attention_num_heads: int = 8,
    ):
        super().__init__()
        ch = [int(c) for c in block_out_channels]
        if len(ch) < 2:
            raise InvalidInput("block_out_channels", "at least two widths (one down-sampling level)", tuple(ch))
        heads = int(attention_num_heads)
        self.in_channels = int(guidance_input_channels)
        self.conv_in = nn.Conv2d(int(guidance_input_channels), ch[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=False):
            self.blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            self.attentions.append(_transformer(c_in, heads, 1))   # dead (released layout)
            self.blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
            self.attentions.append(_transformer(c_out, heads, 32))  # only the last one runs
        self.guidance_attention = _transformer(ch[-1], heads, 32)   # dead (released layout)
        self.conv_out = nn.Conv2d(ch[-1], int(guidance_embedding_channels), kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        if self.conv_out.bias is not None:
            nn.init.zeros_(self.conv_out.bias)

    @property
    def downsampling(self) -> int:
        return int(2 ** (len(self.blocks) // 2))

    def dead_prefixes(self) -> list[str]:
        """Module prefixes built for the released key set that never run."""
        return [f"attentions.{i}." for i in range(len(self.attentions) - 1)] + ["guidance_attention."]

    def dead_keys(self) -> list[str]:
        """State-dict keys of the dead modules (``attentions[:-1]`` and ``guidance_attention``)."""
        pre = tuple(self.dead_prefixes())
        return [k for k in self.state_dict() if k.startswith(pre)]

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        if condition.ndim not in (4, 5) or condition.shape[1] != self.in_channels:
            raise InvalidInput("condition", f"(B, {self.in_channels}, [F,] H, W) guidance maps",
                               tuple(condition.shape))
        video = condition.ndim == 5
        if video:
            b, c, f, h, w = condition.shape
            x = condition.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        else:
            x = condition
        x = F.silu(self.conv_in(x))
        for conv in self.blocks:
            x = F.silu(conv(x))
        x = self.attentions[-1](x, return_dict=False)[0]
        x = self.conv_out(x)
        if video:
            x = x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        return x


def _check_map(name: str, m: Any, like: tuple[int, ...] | None) -> torch.Tensor:
    if not isinstance(m, torch.Tensor) or m.ndim != 5 or m.shape[1] not in (1, 3):
        raise InvalidInput(name, "a (B, 3, F, H, W) tensor in [0, 1] (depth may have 1 channel)",
                           tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__)
    if like is not None and (m.shape[0], *m.shape[2:]) != like:
        raise InvalidInput(name, f"the same (B, F, H, W) as the other maps {like}", tuple(m.shape))
    if not torch.isfinite(m).all() or float(m.min()) < 0.0 or float(m.max()) > 1.0:
        raise InvalidInput(name, "values in [0, 1] (normals clamped to [0, 1] for the released weights)",
                           f"range [{float(m.min()):.3g}, {float(m.max()):.3g}]")
    return m.expand(-1, 3, -1, -1, -1) if m.shape[1] == 1 else m


def guidance_features(
    encoders: Mapping[str, GuidanceEncoder],
    depth: torch.Tensor,
    normal: torch.Tensor,
    render: torch.Tensor,
) -> torch.Tensor:
    """Sum of the depth, normal and render encoders' outputs, ``(B, C_emb, F, H/8, W/8)`` for the
    released config: what the denoiser adds after its ``conv_in``. Maps are ``(B, 3, F, H, W)`` in
    [0, 1] (a 1-channel depth is repeated to 3 channels, as released); each map is cast to its
    encoder's device and dtype."""
    missing = [t for t in GUIDANCE_TYPES if t not in encoders]
    if missing:
        raise InvalidInput("encoders", f"one encoder per guidance type {GUIDANCE_TYPES}", f"missing {missing}")
    maps = {"depth": depth, "normal": normal, "render": render}
    like: tuple[int, ...] | None = None
    out: torch.Tensor | None = None
    for t in GUIDANCE_TYPES:
        m = _check_map(t, maps[t], like)
        like = (m.shape[0], *m.shape[2:])
        enc = encoders[t]
        p = next(enc.parameters())
        y = enc(m.to(device=p.device, dtype=p.dtype))
        out = y if out is None else out + y
    assert out is not None
    return out
