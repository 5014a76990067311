"""DiffusionRig's training objective, packaged for :class:`facerig.train.trainer.Trainer`.

:class:`DiffusionRigTrainModule` holds the denoiser and the encoder; ``loss(batch, generator)``
draws uniform timesteps and Gaussian noise from ``generator`` (so a resumed run draws the same
ones), noises the clean image ``q(x_t | x_0)``, encodes the clean image into the global code, and
returns the P2-weighted epsilon MSE. Batches are dicts with ``image`` (B, 3, H, W) in [-1, 1] and
``cond`` (B, 9, H, W) (:func:`.buffers.model_buffers`).

Stage 2 (personalisation) freezes the encoder's parameters (``freeze_encoder=True``); as in the
released trainer the module stays in train mode, so the encoder's batch-norm statistics still
follow the album.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from facerig.train.losses import p2_epsilon_loss

from .model import DiffusionRigUNet, GlobalEncoder

__all__ = ["DiffusionRigTrainModule", "build_train_module", "linear_alphas_cumprod"]


def linear_alphas_cumprod(
    steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Cumulative alphas of the linear schedule, computed in float64 (as guided-diffusion)."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


class DiffusionRigTrainModule(nn.Module):
    alphas_cumprod: torch.Tensor  # buffer

    def __init__(
        self,
        unet: DiffusionRigUNet,
        encoder: GlobalEncoder,
        p2_gamma: float = 1.0,
        p2_k: float = 1.0,
        num_train_timesteps: int = 1000,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        self.unet = unet
        self.encoder = encoder
        self.p2_gamma = p2_gamma
        self.p2_k = p2_k
        self.register_buffer("alphas_cumprod", linear_alphas_cumprod(num_train_timesteps), persistent=False)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(batch, generator)

    def loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """P2-weighted epsilon loss of a batch; ``timesteps`` (B,) / ``noise`` override the draws."""
        image = batch["image"]
        cond = batch["cond"]
        b = image.shape[0]
        dev = image.device
        t = timesteps
        if t is None:
            t = torch.randint(0, self.alphas_cumprod.shape[0], (b,), generator=generator, device="cpu")
        t = t.to(dev)
        if noise is None:
            noise = torch.randn(image.shape, generator=generator, device="cpu", dtype=torch.float32)
        noise = noise.to(dev, image.dtype)
        a = self.alphas_cumprod[t].to(image.dtype).view(b, 1, 1, 1)
        x_t = a.sqrt() * image + (1 - a).sqrt() * noise
        code = self.encoder(image)
        eps = self.unet(x_t, t, cond, code)
        return p2_epsilon_loss(eps, noise, t, self.alphas_cumprod, self.p2_gamma, self.p2_k)


MODEL_KEYS = ("unet", "latent_dim", "p2_gamma", "p2_k", "freeze_encoder", "face_model")


def build_train_module(model_cfg: dict[str, Any], face_model: str | None = None) -> DiffusionRigTrainModule:
    """A recipe's ``model`` section -> a freshly initialised :class:`DiffusionRigTrainModule`.
    ``face_model`` (the fingerprint of the face model the dataset's buffers come from) is recorded
    in the UNet config, so the trained weights refuse buffers of other face models."""
    from facerig.errors import InvalidInput

    extra = sorted(set(model_cfg) - set(MODEL_KEYS))
    if extra:
        raise InvalidInput("model", f"only the keys {list(MODEL_KEYS)}", f"unknown {extra}")
    unet_cfg: dict[str, Any] = dict(model_cfg.get("unet", {}))
    latent = int(model_cfg.get("latent_dim", unet_cfg.get("latent_dim", 64)))
    unet_cfg["latent_dim"] = latent
    fm = face_model or model_cfg.get("face_model")
    if fm is not None:
        unet_cfg["face_model"] = fm
    try:
        unet = DiffusionRigUNet(**unet_cfg)
    except TypeError as e:
        raise InvalidInput("model.unet", "DiffusionRigUNet arguments", str(e)) from e
    return DiffusionRigTrainModule(
        unet,
        GlobalEncoder(latent_dim=latent),
        p2_gamma=float(model_cfg.get("p2_gamma", 1.0)),
        p2_k=float(model_cfg.get("p2_k", 1.0)),
        freeze_encoder=bool(model_cfg.get("freeze_encoder", False)),
    )
