"""MagicPortrait's networks as released, on stock diffusers models: :func:`load_released`.

:class:`MagicPortraitModel` holds

* the reference UNet (``UNet2DConditionModel`` without its tail), recorded with
  :class:`~facerig.engines.sd.reference.ReferenceRecorder` at ``post_norm1`` (the tokens each
  block's ``attn1`` sees); it runs ONCE per clip at timestep 0 on the scaled source latent
  (:meth:`~MagicPortraitModel.reference_bank`);
* the denoiser ``UNetMotionModel`` (SD 1.5 UNet + AnimateDiff temporal modules), whose spatial
  blocks' ``attn1`` are ``kv_extend`` readers (queries from own tokens, keys/values from
  ``[own ; reference repeated over frames]``), and a forward hook on its ``conv_in`` that adds the
  guidance features;
* the three guidance encoders (:meth:`~MagicPortraitModel.guidance`).

:meth:`~MagicPortraitModel.predict` is one denoiser call on latents ``(B, 4, F, h, w)``; with
``uncond=True`` the readers ignore the reference (classifier-free guidance's unconditional half;
text and guidance features are kept, as released). The states are rounded to fp16 before the
readers use them, as the release does even in fp32 (``bank_dtype``).

Not here yet: the sampler (DDIM / CFG 3.5 / context windows), the VAE, the face-model renders.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facerig.engines.sd.reference import (
    ReferenceBank,
    ReferenceRecorder,
    install_reference_readers,
    transformer_blocks,
)
from facerig.errors import InvalidInput

from .checkpoints import (
    DENOISING_FILE,
    MOTION_FILE,
    REFERENCE_FILE,
    _unet_config,
    build_denoiser,
    load_denoising_unet,
    load_guidance_encoders,
    load_motion_adapter,
    load_reference_unet,
)
from .guidance import GuidanceEncoder, guidance_features

log = logging.getLogger(__name__)

__all__ = ["MagicPortraitModel", "load_released"]


@dataclass
class MagicPortraitModel:
    """The released networks wired together (see the module docstring)."""

    reference_unet: Any
    denoiser: Any
    guidance_encoders: dict[str, GuidanceEncoder]
    bank_dtype: torch.dtype | None = torch.float16
    recorder: ReferenceRecorder = field(init=False)
    bank: ReferenceBank = field(init=False)
    _features: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.recorder = ReferenceRecorder(self.reference_unet, point="post_norm1")
        n_ref, n_den = len(self.recorder.blocks), len(transformer_blocks(self.denoiser))
        if n_ref != n_den:
            raise InvalidInput("reference UNet", f"as many transformer blocks as the denoiser ({n_den})", n_ref)
        self.bank = install_reference_readers(self.denoiser, "kv_extend")
        self.bank.round_to = self.bank_dtype
        self.denoiser.conv_in.register_forward_hook(self._add_guidance)

    # ---------------------------------------------------------------- pieces

    def _add_guidance(self, module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
        f = self._features
        if f is None:
            return out
        b, c, n, h, w = f.shape
        add = f.permute(0, 2, 1, 3, 4).reshape(b * n, c, h, w)  # the denoiser's (B * F) batch-major rows
        if add.shape != out.shape:
            raise InvalidInput("guidance_features", f"(B, {out.shape[1]}, F, {out.shape[2]}, {out.shape[3]}) "
                               "matching the latents", tuple(f.shape))
        return out + add.to(out.dtype)

    @property
    def _param(self) -> torch.Tensor:
        return next(self.denoiser.parameters())

    def reference_bank(self, reference_latent: torch.Tensor, text_embeds: torch.Tensor) -> list[torch.Tensor]:
        """The reference tokens (post-norm1, one state per transformer block, execution order) of the
        reference UNet at timestep 0 on ``reference_latent`` (B, 4, h, w): the VAE mean of the source
        image times the VAE scaling factor. Computed once per clip; give it to :meth:`predict`."""
        if not isinstance(reference_latent, torch.Tensor) or reference_latent.ndim != 4:
            raise InvalidInput("reference_latent", "a (B, 4, h, w) scaled VAE latent",
                               getattr(reference_latent, "shape", type(reference_latent).__name__))
        p = next(self.reference_unet.parameters())
        x = reference_latent.to(device=p.device, dtype=p.dtype)
        text = _text(text_embeds, x.shape[0], p)
        t = torch.zeros(x.shape[0], device=p.device, dtype=torch.long)
        with torch.no_grad():
            states = self.recorder.capture(lambda: self.reference_unet(x, t, text))
        return [s.detach() for s in states]

    def guidance(self, depth: torch.Tensor, normal: torch.Tensor, render: torch.Tensor) -> torch.Tensor:
        """Sum of the three guidance encoders on maps (B, 3, F, H, W) in [0, 1]: (B, 320, F, H/8, W/8)."""
        with torch.no_grad():
            return guidance_features(self.guidance_encoders, depth, normal, render)

    @contextlib.contextmanager
    def _conditioned(self, features: torch.Tensor, bank: Sequence[torch.Tensor] | None, frames: int,
                     uncond: bool) -> Iterator[None]:
        self._features = features
        if bank is not None:
            self.bank.set(bank)
        self.bank.frames = frames
        was = self.bank.active
        self.bank.active = not uncond
        try:
            yield
        finally:
            self._features = None
            self.bank.active = was
            self.bank.frames = 1

    def predict(self, noisy_latents: torch.Tensor, timestep: Any, text_embeds: torch.Tensor,
                guidance_features: torch.Tensor, bank: Sequence[torch.Tensor] | None, uncond: bool = False) -> torch.Tensor:
        """The denoiser's output (v-prediction for the release) for latents (B, 4, F, h, w).

        ``text_embeds``: (B, 77, C) or (1, 77, C), one per sample (repeated over frames here);
        ``guidance_features``: from :meth:`guidance`, (B, C0, F, h, w); ``bank``: from
        :meth:`reference_bank` (batch 1 or B). ``uncond=True`` drops the reference (readers attend to
        their own tokens); the bank may then be None.
        """
        if not isinstance(noisy_latents, torch.Tensor) or noisy_latents.ndim != 5:
            raise InvalidInput("noisy_latents", "(B, 4, F, h, w) video latents",
                               getattr(noisy_latents, "shape", type(noisy_latents).__name__))
        if bank is None and not uncond:
            raise InvalidInput("bank", "the reference states from reference_bank() (None only with uncond=True)", None)
        p = self._param
        x = noisy_latents.to(device=p.device, dtype=p.dtype)
        b, _, f = x.shape[:3]
        if not isinstance(guidance_features, torch.Tensor) or guidance_features.ndim != 5 \
                or guidance_features.shape[0] != b or guidance_features.shape[2] != f:
            raise InvalidInput("guidance_features", f"({b}, C, {f}, h, w) from guidance()",
                               getattr(guidance_features, "shape", type(guidance_features).__name__))
        text = _text(text_embeds, b, p).repeat_interleave(f, dim=0)
        t = torch.as_tensor(timestep, device=p.device)
        with self._conditioned(guidance_features.to(device=p.device), bank, f, uncond):
            out = self.denoiser(x, t, text).sample
        return out


def _text(text_embeds: torch.Tensor, b: int, p: torch.Tensor) -> torch.Tensor:
    if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] not in (1, b):
        raise InvalidInput("text_embeds", f"(1 or {b}, 77, C) CLIP text states",
                           getattr(text_embeds, "shape", type(text_embeds).__name__))
    return text_embeds.to(device=p.device, dtype=p.dtype).expand(b, -1, -1)


def load_released(ckpts_dir: str | os.PathLike[str], base_unet_dir: str | os.PathLike[str] | Mapping[str, Any],
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                  guidance_config: Mapping[str, Any] | None = None, motion_heads: int = 8,
                  motion_norm_groups: int = 32, bank_dtype: torch.dtype | None = torch.float16) -> MagicPortraitModel:
    """The released MagicPortrait networks from ``ckpts_dir`` (the six ``.pth`` files), built on the
    SD 1.5 UNet config of ``base_unet_dir`` (its ``unet/`` folder; only ``config.json`` is read: every
    weight comes from the release). All files load strictly (see :mod:`.checkpoints`).

    ``guidance_config`` / ``motion_heads`` / ``motion_norm_groups``: the released values by default
    (tests pass tiny ones). ``bank_dtype``: the dtype the reference states are rounded to (fp16 as
    released; None keeps them)."""
    d = Path(ckpts_dir)
    cfg = _unet_config(base_unet_dir)
    ref = load_reference_unet(d / REFERENCE_FILE, cfg, device=device, dtype=dtype)
    unet = load_denoising_unet(d / DENOISING_FILE, cfg, device=device, dtype=dtype)
    adapter = load_motion_adapter(d / MOTION_FILE, cfg, num_attention_heads=motion_heads,
                                  norm_num_groups=motion_norm_groups, device=device, dtype=dtype)
    den = build_denoiser(unet, adapter)
    del unet, adapter
    encs = load_guidance_encoders(d, guidance_config, device=device, dtype=dtype)
    log.info("MagicPortrait released networks loaded from %s (%s, %s)", d, device, dtype)
    return MagicPortraitModel(ref, den, encs, bank_dtype=bank_dtype)
