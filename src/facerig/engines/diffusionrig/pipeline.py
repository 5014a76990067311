"""DiffusionRig inference: DDIM / DDPM sampling conditioned on physical buffers and a global code.

:class:`DiffusionRigPipeline` holds the denoiser, the global encoder and a diffusers scheduler
(:func:`make_scheduler`: linear betas 1e-4..0.02 over 1000 steps, epsilon prediction; DDIM with
``clip_sample=False``, ``set_alpha_to_one=True`` and "leading" spacing, which picks the same
timesteps as guided-diffusion's ``ddimN`` respacing, e.g. 950, 900, ..., 0 for 20 steps).

``clip_denoised=True`` (the released inference default) clamps each step's predicted clean image
to [-1, 1] and re-derives the noise from the clamped image before the scheduler step (what
guided-diffusion's DDIM does); it is done here, around the scheduler, so the scheduler itself
stays ``clip_sample=False``.

Images at this API are float tensors in [0, 1] (facerig's convention); the models work in [-1, 1].
Editing uses ONE fixed noise per source for all its edits (:meth:`DiffusionRigPipeline.edit`), and
the global code of the source, or of another image to move hair/background/accessories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import torch

from facerig.errors import InvalidInput

from .buffers import model_buffers
from .checkpoint import load_official_checkpoint
from .model import DiffusionRigUNet, GlobalEncoder

__all__ = ["DiffusionRigPipeline", "make_scheduler", "SCHEDULE"]

#: the training noise schedule of DiffusionRig
SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def make_scheduler(kind: str = "ddim", **overrides: Any):
    """A diffusers scheduler with DiffusionRig's schedule: ``"ddim"`` or ``"ddpm"`` (fixed-large
    variance, as guided-diffusion's default)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    kw = dict(SCHEDULE, prediction_type="epsilon", clip_sample=False)
    if kind == "ddim":
        kw.update(set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
        kw.update(overrides)
        return DDIMScheduler(**kw)
    if kind == "ddpm":
        kw.update(variance_type="fixed_large")
        kw.update(overrides)
        return DDPMScheduler(**kw)
    raise InvalidInput("sampler", "'ddim' or 'ddpm'", kind)


class DiffusionRigPipeline:
    """Denoiser + encoder + scheduler. ``save_pretrained(dir)`` writes ``unet/``, ``encoder/``
    (safetensors + config.json each), ``scheduler/`` and ``pipeline.json``."""

    def __init__(self, unet: DiffusionRigUNet, encoder: GlobalEncoder, scheduler: Any = None):
        self.unet = unet.eval()
        self.encoder = encoder.eval()
        self.scheduler = scheduler if scheduler is not None else make_scheduler("ddim")

    # ---- persistence ------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(p / "unet", safe_serialization=True)
        self.encoder.save_pretrained(p / "encoder", safe_serialization=True)
        self.scheduler.save_pretrained(p / "scheduler")
        (p / "pipeline.json").write_text(json.dumps({"engine": "diffusionrig", "format": 1}) + "\n")

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DiffusionRigPipeline:
        from diffusers import DDIMScheduler

        p = Path(path)
        if not (p / "unet").is_dir() or not (p / "encoder").is_dir():
            raise InvalidInput(
                "weights", "a folder with unet/ and encoder/ (DiffusionRigPipeline.save_pretrained)", str(p)
            )
        unet = DiffusionRigUNet.from_pretrained(p / "unet", torch_dtype=dtype).to(device)
        encoder = GlobalEncoder.from_pretrained(p / "encoder", torch_dtype=dtype).to(device)
        sched = DDIMScheduler.from_pretrained(p / "scheduler") if (p / "scheduler").is_dir() else None
        return cls(unet, encoder, sched)

    @classmethod
    def from_official_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> DiffusionRigPipeline:
        """The authors' ``model_*.pt`` (strict keys; see :mod:`.checkpoint`)."""
        unet, encoder = load_official_checkpoint(path, **kwargs)
        return cls(unet, encoder)

    # ---- pieces -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def image_size(self) -> int:
        return int(self.unet.config.image_size)  # type: ignore[attr-defined]  # diffusers FrozenDict: attribute access

    def buffers(self, render_buffers: Any, face_model: Any) -> torch.Tensor:
        """RenderBuffers (rendered with ``face_model``) -> the (B, 9, H, W) conditioning tensor."""
        return model_buffers(render_buffers, face_model, self.unet)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> global codes (B, latent_dim)."""
        x = image.to(self.device, self.dtype) * 2 - 1
        return self.encoder(x)

    def fixed_noise(self, seed: int = 0, batch_size: int = 1) -> torch.Tensor:
        """Deterministic starting noise (drawn on the CPU, so it is the same on every device)."""
        g = torch.Generator().manual_seed(int(seed))
        s = self.image_size
        return torch.randn(batch_size, 3, s, s, generator=g).to(self.device, self.dtype)

    # ---- sampling ---------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        cond: torch.Tensor,
        global_code: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | int | None = None,
        num_inference_steps: int = 20,
        eta: float = 0.0,
        sampler: str = "ddim",
        clip_denoised: bool = True,
        output_type: str = "pt",
        init_image: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> Any:
        """Sample images for conditioning buffers ``cond`` (B, 9, H, W).

        The global code is ``global_code`` (B or 1, latent_dim), else the encoding of ``image``
        ((B or 1, 3, H, W) in [0, 1]). ``noise`` (B or 1, 3, H, W) is the starting noise; else it is
        drawn from ``generator`` (a seed or torch.Generator). ``sampler``: ``"ddim"`` (``eta`` 0 is
        deterministic) or ``"ddpm"`` (``num_inference_steps`` 1000 for the ancestral sampler of the
        paper; stochastic). With ``init_image`` ((B or 1, 3, H, W) in [0, 1]) and ``strength`` < 1,
        sampling starts from ``init_image`` noised (with ``noise``) to the timestep at that fraction of
        the schedule and runs only the remaining steps (SDEdit-style partial denoising).
        Returns images in [0, 1]: a (B, 3, H, W) tensor (``output_type="pt"``) or a uint8
        (B, H, W, 3) array (``"np"``).
        """
        if not 0.0 < strength <= 1.0:
            raise InvalidInput("strength", "a fraction in (0, 1]", strength)
        cond = cond.to(self.device, self.dtype)
        b = cond.shape[0]
        if global_code is None:
            if image is None:
                raise InvalidInput("global_code", "a code or an image to encode", None)
            global_code = self.encode(image)
        code = global_code.to(self.device, self.dtype)
        if code.shape[0] == 1 and b > 1:
            code = code.expand(b, -1)
        if noise is None:
            if isinstance(generator, int) or generator is None:
                noise = self.fixed_noise(0 if generator is None else generator, b)
            else:
                s = self.image_size
                noise = torch.randn(b, 3, s, s, generator=generator).to(self.device, self.dtype)
        x = noise.to(self.device, self.dtype)
        if x.shape[0] == 1 and b > 1:
            x = x.expand(b, -1, -1, -1).clone()
        sched = (
            self.scheduler if sampler == "ddim" and type(self.scheduler).__name__ == "DDIMScheduler" else None
        )
        if sched is None:
            sched = make_scheduler(sampler)
        sched.set_timesteps(num_inference_steps, device=self.device)
        acp = sched.alphas_cumprod.to(self.device)
        timesteps = sched.timesteps
        if init_image is not None and strength < 1.0:
            keep = max(1, int(round(len(timesteps) * strength)))
            timesteps = timesteps[len(timesteps) - keep :]
            a0 = acp[timesteps[0]].to(x.dtype)
            x0 = init_image.to(self.device, self.dtype) * 2 - 1
            x = a0.sqrt() * x0 + (1 - a0).sqrt() * x
        step_gen = generator if isinstance(generator, torch.Generator) else None
        if sampler == "ddpm" and step_gen is None:
            step_gen = torch.Generator().manual_seed(int(cast(int | None, generator) or 0))  # not a Generator here
        for t in timesteps:
            eps = self.unet(x, t, cond, code)
            if clip_denoised:
                a = acp[t].to(x.dtype)
                x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            if sampler == "ddim":
                x = sched.step(eps, t, x, eta=eta, generator=step_gen).prev_sample
            else:
                x = sched.step(eps, t, x, generator=step_gen).prev_sample
        out = ((x.float() + 1) / 2).clamp(0, 1)
        if output_type == "np":
            return (out.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype("uint8")
        return out

    @torch.no_grad()
    def edit(
        self,
        source_image: torch.Tensor,
        target_cond: torch.Tensor,
        code_image: torch.Tensor | None = None,
        seed: int = 0,
        noise: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Edits of ONE source: ``target_cond`` (N, 9, H, W) buffers with the target pose /
        expression / light swapped in; all N edits share one fixed noise (``noise`` or from
        ``seed``) and the global code of ``source_image`` (1, 3, H, W) in [0, 1] -- or of
        ``code_image`` to carry over another image's hair/background/accessories."""
        code = self.encode(code_image if code_image is not None else source_image)[:1]
        if noise is None:
            noise = self.fixed_noise(seed, 1)
        return self(target_cond, global_code=code, noise=noise[:1], **kwargs)
