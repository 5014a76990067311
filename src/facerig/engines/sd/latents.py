"""VAE latents in the two spaces the SD engines use, and image <-> tensor conversion.

* "unscaled": the VAE posterior MEAN as it comes out of the encoder (RigFace's source, background
  and render latents are these);
* "scaled": times ``vae.config.scaling_factor`` (0.18215 for SD 1.5), the space the noise lives in
  and what is decoded after dividing the factor back out.

Images are float ``(B, 3, H, W)`` in [-1, 1] (RGB); H and W multiples of 8.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facerig.errors import InvalidInput

__all__ = ["decode_latents", "encode_images", "image_to_tensor", "tensor_to_image"]


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInput("images", "a float (B, 3, H, W) tensor in [-1, 1]", got)
    if images.shape[2] % 8 or images.shape[3] % 8:
        raise InvalidInput("images", "H and W multiples of 8", tuple(images.shape))
    if not images.is_floating_point():
        raise InvalidInput("images", "a float tensor in [-1, 1]", str(images.dtype))
    return images


def _vae_param(vae: Any) -> torch.Tensor:
    return next(vae.parameters())


def encode_images(vae: Any, images: torch.Tensor, *, scaled: bool, sample: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents ``(B, C, H/8, W/8)`` of ``images``: the posterior mean (``sample=False``) or a sample,
    times the scaling factor when ``scaled``. Runs in the VAE's dtype/device, returns that dtype."""
    images = _check_images(images)
    p = _vae_param(vae)
    dist = vae.encode(images.to(device=p.device, dtype=p.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return z * float(vae.config.scaling_factor) if scaled else z


def decode_latents(vae: Any, latents: torch.Tensor, *, scaled: bool = True) -> torch.Tensor:
    """Images in [-1, 1] from latents (``scaled``: divided by the scaling factor first)."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InvalidInput("latents", "a (B, C, h, w) tensor", got)
    p = _vae_param(vae)
    z = latents.to(device=p.device, dtype=p.dtype)
    if scaled:
        z = z / float(vae.config.scaling_factor)
    return vae.decode(z).sample.clamp(-1, 1)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB -> float ``(1, 3, H, W)`` in [-1, 1]."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InvalidInput("image", "an RGB uint8 (H, W, 3) array", f"{a.dtype} {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
    return t / 127.5 - 1.0


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float ``(1, 3, H, W)`` or ``(3, H, W)`` in [-1, 1] -> uint8 ``(H, W, 3)`` (rounded, clipped)."""
    if not isinstance(t, torch.Tensor) or t.ndim not in (3, 4) or (t.ndim == 4 and t.shape[0] != 1):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InvalidInput("t", "a (1, 3, H, W) or (3, H, W) tensor in [-1, 1]", got)
    x = t[0] if t.ndim == 4 else t
    if x.shape[0] != 3:
        raise InvalidInput("t", "3 channels", tuple(t.shape))
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round()
    return x.permute(1, 2, 0).to(torch.uint8).numpy()
