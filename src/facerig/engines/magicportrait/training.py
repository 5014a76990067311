"""MagicPortrait training objective, stages 1 and 2 (docs/magicportrait-training.md).

* :class:`MagicPortraitTrainModule` -- ``forward(batch, generator) -> loss`` for
  :class:`facerig.train.trainer.Trainer`. Latents: ``target_latent`` (B, 4, F, h, w) and
  ``reference_latent`` (B, 4, h, w), both already times the VAE scaling factor (or images
  ``target`` (B, F, 3, S, S) / ``reference`` (B, 3, S, S) in [-1, 1] with a ``vae``); maps
  ``depth`` / ``normal`` / ``render`` (B, F, 3, S, S) in [0, 1]. Timesteps and noise come from the
  generator on the release's schedule (linear betas 0.00085..0.012 rescaled to zero terminal SNR);
  the target is v (v-prediction). The reference UNet runs at t = 0 on the reference latent and its
  post-norm1 states feed the denoiser's readers; the summed guidance features are added after
  ``conv_in``; MSE on v.
* Stage 1 (``stage=1``): the 2D denoiser (``UNet2DConditionModel``, F = 1), the reference UNet and
  the guidance encoders train; the parameters no loss can reach (the reference UNet's layers after
  its last recorded norm1, the guidance encoders' dead attentions) are frozen, else DDP refuses them.
* Stage 2 (``stage=2``): a ``UNetMotionModel`` (:func:`~.checkpoints.build_denoiser`); only its
  ``motion_modules`` train, everything else is frozen (and run without autograd).
* ``reference_drop`` (default 0.1, the lineage's ``uncond_ratio`` of Champ's training configs): the
  probability that a sample's readers ignore the reference, as the unconditional half of
  classifier-free guidance does at inference.

Not here yet: the shard datasets, the recipes, ``facerig train magicportrait`` and an export
layout (see the docs page).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from facerig.errors import InvalidInput

from .guidance import guidance_features
from .model import MagicPortraitModel

__all__ = ["MagicPortraitTrainModule", "fresh_motion_adapter", "release_alphas_cumprod"]


def release_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The release's training schedule: linear betas rescaled to zero terminal SNR (diffusers'
    ``rescale_zero_terminal_snr``), float64 alpha-bars; the last one is 0."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float32)
    betas = rescale_zero_terminal_snr(betas).double()
    return torch.cumprod(1.0 - betas, 0)


def fresh_motion_adapter(unet_config: Mapping[str, Any], *, num_attention_heads: int = 8, norm_num_groups: int = 32,
                         max_seq_length: int = 32, seed: int = 0) -> Any:
    """A new diffusers ``MotionAdapter`` for the UNet config (released shape: 8 heads, 32 groups,
    sinusoids of length 32, a mid-block module) whose temporal outputs (``proj_out``) are zero, so
    the inflated denoiser starts as the 2D one frame by frame (AnimateDiff's zero initialisation)."""
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter: Any = MotionAdapter(block_out_channels=tuple(unet_config["block_out_channels"]),
                            motion_layers_per_block=int(unet_config.get("layers_per_block", 2)),
                            motion_num_attention_heads=int(num_attention_heads),
                            motion_norm_num_groups=int(norm_num_groups), motion_max_seq_length=int(max_seq_length),
                            use_motion_mid_block=True)
    for name, m in adapter.named_modules():
        if name.endswith("proj_out") and isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    return adapter


def _probe_dead(model: MagicPortraitModel) -> list[str]:
    """Reference-UNet parameter names that no recorded state depends on."""
    ref = model.reference_unet
    p = next(ref.parameters())
    for q in ref.parameters():
        q.grad = None
    x = torch.zeros(1, 4, 8, 8, device=p.device, dtype=p.dtype)
    text = torch.zeros(1, 4, int(ref.config.cross_attention_dim), device=p.device, dtype=p.dtype)
    with torch.enable_grad():
        states = model.recorder.capture(lambda: ref(x, torch.zeros(1, dtype=torch.long), text))
        sum(s.float().sum() for s in states).backward()  # type: ignore[union-attr]
    dead = [n for n, q in ref.named_parameters() if q.requires_grad and q.grad is None]
    for q in ref.parameters():
        q.grad = None
    return dead


class MagicPortraitTrainModule(nn.Module):
    """The v-prediction objective of either stage (see the module docstring)."""

    alphas_cumprod: torch.Tensor
    text_embeds: torch.Tensor

    def __init__(self, model: MagicPortraitModel, text_embeds: torch.Tensor, vae: Any = None, *, stage: int,
                 alphas_cumprod: torch.Tensor | None = None, reference_drop: float = 0.1, freeze_dead: bool = True):
        super().__init__()
        if not isinstance(model, MagicPortraitModel):
            raise InvalidInput("model", "a MagicPortraitModel", type(model).__name__)
        if stage not in (1, 2):
            raise InvalidInput("stage", "1 (image pairs) or 2 (clips, motion modules only)", stage)
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] != 1:
            raise InvalidInput("text_embeds", "the prompt's (1, 77, D) embedding", getattr(text_embeds, "shape", None))
        if not 0.0 <= float(reference_drop) < 1.0:
            raise InvalidInput("reference_drop", "a probability in [0, 1)", reference_drop)
        motion = any(".motion_modules." in n for n, _ in model.denoiser.named_parameters())
        if stage == 2 and not motion:
            raise InvalidInput("model", "a denoiser with motion modules for stage 2 (build_denoiser)", "a 2D UNet")
        if stage == 1 and motion:
            raise InvalidInput("model", "the 2D denoiser (UNet2DConditionModel) for stage 1", "a UNetMotionModel")
        self.stage = int(stage)
        self.mp = [model]  # the wiring (hooks, bank); its networks are registered below
        model.bank.round_to = None  # no fp16 rounding of the bank in training (it would cut its gradient precision)
        self.reference_unet = model.reference_unet
        self.denoiser = model.denoiser
        self.guidance_encoders = nn.ModuleDict(model.guidance_encoders)
        self.reference_drop = float(reference_drop)
        self.register_buffer("text_embeds", text_embeds.detach().clone(), persistent=False)
        ac = release_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self._vae = [vae]
        if vae is not None:
            vae.requires_grad_(False)
            vae.eval()
        self.frozen: list[str] = []
        if stage == 2:
            for n, q in self.named_parameters():
                if ".motion_modules." not in n:
                    q.requires_grad_(False)
        elif freeze_dead:
            dead = _probe_dead(model)
            params = dict(self.reference_unet.named_parameters())
            for n in dead:
                params[n].requires_grad_(False)
            self.frozen = [f"reference_unet.{n}" for n in dead]
            for t, enc in self.guidance_encoders.items():
                gp = dict(enc.named_parameters())
                for k in cast(Any, enc).dead_keys():
                    if k in gp:
                        gp[k].requires_grad_(False)
                        self.frozen.append(f"guidance_encoders.{t}.{k}")

    @property
    def model(self) -> MagicPortraitModel:
        return self.mp[0]

    @property
    def vae(self) -> Any:
        return self._vae[0]

    def trainable_names(self) -> list[str]:
        return [n for n, q in self.named_parameters() if q.requires_grad]

    def _latents(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "target_latent" in batch and "reference_latent" in batch:
            return batch["target_latent"], batch["reference_latent"]
        if self.vae is None or "target" not in batch or "reference" not in batch:
            raise InvalidInput("batch", "target_latent + reference_latent, or target + reference images with a vae",
                               sorted(batch))
        from facerig.engines.sd.latents import encode_images

        tgt = batch["target"]
        b, f = tgt.shape[:2]
        with torch.no_grad():
            z = encode_images(self.vae, tgt.flatten(0, 1), scaled=True).float()
            r = encode_images(self.vae, batch["reference"], scaled=True).float()
        return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4), r

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(batch, generator)

    def loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
             timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             drop: torch.Tensor | None = None) -> torch.Tensor:
        x0, ref = self._latents(batch)
        if x0.ndim != 5 or ref.ndim != 4 or ref.shape[0] != x0.shape[0]:
            raise InvalidInput("batch", "target latents (B, 4, F, h, w) and reference latents (B, 4, h, w)",
                               (tuple(x0.shape), tuple(ref.shape)))
        b, _, f = x0.shape[:3]
        if self.stage == 1 and f != 1:
            raise InvalidInput("batch", "one target frame per sample in stage 1", f)
        dev = x0.device
        t = timesteps if timesteps is not None else torch.randint(
            0, self.alphas_cumprod.shape[0], (b,), generator=generator)
        t = t.to(dev)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(dev)
        if drop is None:
            drop = torch.rand(b, generator=generator) < self.reference_drop
        a = self.alphas_cumprod.to(dev)[t].float().view(b, 1, 1, 1, 1)
        x0 = x0.float()
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        v = a.sqrt() * noise - (1 - a).sqrt() * x0
        maps = [batch[k].permute(0, 2, 1, 3, 4) for k in ("depth", "normal", "render")]  # (B, 3, F, H, W)
        mp = self.model
        p = next(self.denoiser.parameters())
        text = self.text_embeds.to(dev, p.dtype).expand(b, -1, -1)
        grad = self.stage == 1
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            states = mp.recorder.capture(lambda: self.reference_unet(ref.to(p.dtype), torch.zeros(b, dtype=torch.long,
                                                                                                  device=dev), text))
            feats = guidance_features(cast(Mapping[str, Any], self.guidance_encoders), *maps)
        mp.bank.set(states)
        mp.bank.set_drop(drop)
        mp.bank.frames = f
        mp._features = feats
        try:
            if self.stage == 1:
                pred = self.denoiser(x_t[:, :, 0].to(p.dtype), t, text).sample.unsqueeze(2)
            else:
                pred = self.denoiser(x_t.to(p.dtype), t, text.repeat_interleave(f, dim=0)).sample
        finally:
            mp._features = None
            mp.bank.set_drop(None)
            mp.bank.frames = 1
            mp.bank.clear()
        return F.mse_loss(pred.float(), v)
