"""InstaFace sampling: DDIM (20 steps, the paper's) from the SD noise schedule.

:func:`sample_latents` denoises from Gaussian noise (explicit ``generator``) with the fused
condition latents of the TARGET geometry and the SOURCE identity tokens; with
``guidance_timestep="zero"`` the guidance UNet runs once for the whole sampling, otherwise once per
step. Classifier-free guidance is not used (the paper states none; see docs/instaface.md).
:func:`generate` also VAE-decodes to images in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import torch

from facerig.errors import InvalidInput

from ..sd.latents import decode_latents
from ..sd.schedulers import make_scheduler
from .model import InstaFaceModel

__all__ = ["DDIM_STEPS", "generate", "make_ddim", "sample_latents"]

DDIM_STEPS = 20


def make_ddim(base_config: dict[str, Any] | None = None) -> Any:
    """diffusers' DDIM with the base's (default SD 1.5's) noise schedule, epsilon prediction."""
    return make_scheduler("ddim", base_config, prediction_type="epsilon")


@torch.no_grad()
def sample_latents(model: InstaFaceModel, condition_latents: torch.Tensor, identity_tokens: torch.Tensor,
                   text_embeds: torch.Tensor | None = None, *, steps: int = DDIM_STEPS, scheduler: Any = None,
                   generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """SCALED latents (B, 4, h, w) for condition latents (B, 12, h, w); ``noise`` overrides the
    generator's draw (same shape)."""
    if not isinstance(condition_latents, torch.Tensor) or condition_latents.ndim != 4:
        raise InvalidInput("condition_latents", "a (B, 12, h, w) tensor", getattr(condition_latents, "shape", None))
    if int(steps) < 1:
        raise InvalidInput("steps", "an integer >= 1", steps)
    b, _, h, w = condition_latents.shape
    sched = scheduler if scheduler is not None else make_ddim()
    sched.set_timesteps(int(steps), device=model.device)
    x = noise if noise is not None else torch.randn((b, 4, h, w), generator=generator, dtype=torch.float32)
    if tuple(x.shape) != (b, 4, h, w):
        raise InvalidInput("noise", f"a ({b}, 4, {h}, {w}) tensor", tuple(x.shape))
    x = x.to(model.device, model.dtype) * float(getattr(sched, "init_noise_sigma", 1.0))
    cond = condition_latents.to(model.device, model.dtype)
    feats = None
    if model.guidance_timestep == "zero":
        ctx = model.context(identity_tokens, text_embeds, b)
        feats = model.guidance_features(cond, 0, ctx)
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        eps = model.predict_noise(inp, t, cond, identity_tokens, text_embeds, guidance_features=feats)
        x = sched.step(eps, t, x).prev_sample
    return x


@torch.no_grad()
def generate(model: InstaFaceModel, vae: Any, condition_latents: torch.Tensor, identity_tokens: torch.Tensor,
             text_embeds: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1]: :func:`sample_latents` then the VAE decoder."""
    z = sample_latents(model, condition_latents, identity_tokens, text_embeds, **kw)
    return decode_latents(vae, z, scaled=True)
