"""InstaFace's conditions: the 3D Fusion Controller and the Identity Preserver's embeddings.

* :class:`FusionController` -- the DECA-style buffers of a fitted face (``albedo``, ``normal``,
  lambertian ``render`` from :func:`facerig.render.buffers.render_buffers`) each mapped to an RGB
  image in [-1, 1], VAE-encoded (posterior mean, times the VAE's scaling factor, the space the
  noise lives in and the SD UNet copy's conv_in was trained on) and concatenated on channels:
  ``(B, 12, H/8, W/8)`` = ``[albedo | normal | render]``. No trainable parameters.

  Image mappings (docs/instaface.md): albedo ``[0, 1] -> [-1, 1]``; normal: the world-space unit
  normal's xyz taken as RGB directly (already in [-1, 1]; background 0 = mid grey); render
  (``albedo * shading``, unclamped) clamped to [0, 1] then mapped to [-1, 1].
* :class:`IdentityEncoder` -- the source photo's CLIP image embedding (a user-supplied
  ``CLIPVisionModelWithProjection`` folder, ``image_embeds``; optional) and its face-recognition
  descriptor from facerig's differentiable port of dlib's ResNet
  (:func:`facerig.eval.identity.port_embed`, 128-d). Without a CLIP model the encoder returns
  ``clip=None`` and logs that the engine runs on face-recognition tokens only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facerig.errors import AssetMissing, InvalidInput

from ..sd.latents import encode_images

__all__ = ["BUFFER_ORDER", "CLIP_MEAN", "CLIP_STD", "FusionController", "IdentityEncoder", "buffer_images"]

log = logging.getLogger(__name__)

BUFFER_ORDER = ("albedo", "normal", "render")
#: OpenAI CLIP's image normalisation (used when the CLIP folder holds no preprocessor_config.json)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _get(buffers: Any, name: str) -> torch.Tensor:
    t = buffers.get(name) if isinstance(buffers, dict) else getattr(buffers, name, None)
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 3:
        raise InvalidInput(f"buffers.{name}", "a (B, 3, H, W) float tensor (RenderBuffers or a dict of them)",
                           getattr(t, "shape", type(t)))
    return t.float()


def buffer_images(buffers: Any) -> dict[str, torch.Tensor]:
    """``{"albedo", "normal", "render"}`` -> (B, 3, H, W) images in [-1, 1] (module docstring)."""
    albedo = _get(buffers, "albedo")
    normal = _get(buffers, "normal")
    render = _get(buffers, "render")
    if not (albedo.shape == normal.shape == render.shape):
        raise InvalidInput("buffers", "albedo, normal and render of the same shape",
                           (tuple(albedo.shape), tuple(normal.shape), tuple(render.shape)))
    return {"albedo": albedo.clamp(0, 1) * 2 - 1, "normal": normal.clamp(-1, 1),
            "render": render.clamp(0, 1) * 2 - 1}


class FusionController:
    """VAE latents of albedo, normal and render concatenated on channels (module docstring)."""

    channels = 12

    def __init__(self, vae: Any):
        if not hasattr(vae, "encode") or not hasattr(vae, "config"):
            raise InvalidInput("vae", "a diffusers AutoencoderKL", type(vae).__name__)
        self.vae = vae

    @torch.no_grad()
    def __call__(self, buffers: Any) -> torch.Tensor:
        """(B, 12, H/8, W/8) scaled latents ``[albedo | normal | render]``."""
        imgs = buffer_images(buffers)
        b = imgs["albedo"].shape[0]
        # one VAE call over the three images of each face
        z = encode_images(self.vae, torch.cat([imgs[n] for n in BUFFER_ORDER], 0), scaled=True)
        return torch.cat(z.split(b, 0), 1)


def _clip_norm(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    f = folder / "preprocessor_config.json"
    if f.is_file():
        try:
            cfg = json.loads(f.read_text())
            return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
        except (ValueError, KeyError, TypeError):
            log.warning("%s: no usable image_mean/image_std; using OpenAI CLIP's", f)
    return CLIP_MEAN, CLIP_STD


class IdentityEncoder:
    """Face-recognition (always) and CLIP image (when ``clip`` is given) embeddings of face photos.

    ``clip``: a folder holding a ``CLIPVisionModelWithProjection`` (config.json + safetensors), or
    an already-loaded model; None: no CLIP part. ``face_net``: a
    :class:`facerig.eval.dlib_port.DlibResNet` (None: the port of dlib's released network, loaded
    on first use). Both networks are frozen.
    """

    def __init__(self, clip: str | os.PathLike[str] | Any | None = None, face_net: Any = None, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.dtype = dtype
        self.clip_model: Any = None
        self.mean: tuple[float, ...] = CLIP_MEAN
        self.std: tuple[float, ...] = CLIP_STD
        if clip is not None and not isinstance(clip, torch.nn.Module):
            folder = Path(clip).expanduser()
            if not (folder / "config.json").is_file():
                raise AssetMissing("CLIP vision model (CLIPVisionModelWithProjection folder with config.json)",
                                   str(folder), "pass --clip PATH to a local CLIP vision model folder, or omit it to "
                                   "run on face-recognition tokens only")
            from transformers import CLIPVisionModelWithProjection

            try:
                clip = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                raise InvalidInput("clip", "a loadable CLIPVisionModelWithProjection folder",
                                   f"{folder}: {type(e).__name__}") from e
            self.mean, self.std = _clip_norm(folder)
        if clip is not None:
            if not hasattr(clip, "config") or not hasattr(clip.config, "image_size"):
                raise InvalidInput("clip", "a transformers CLIPVisionModelWithProjection", type(clip).__name__)
            self.clip_model = clip.to(self.device, dtype).eval().requires_grad_(False)
        else:
            log.info("InstaFace: no CLIP vision model given; the Identity Preserver runs on face-recognition tokens only")
        self._face_net = face_net
        if face_net is not None:
            face_net.to(self.device, dtype).eval().requires_grad_(False)

    @property
    def clip_dim(self) -> int:
        """Width of the CLIP image embedding (0 without CLIP)."""
        return int(self.clip_model.config.projection_dim) if self.clip_model is not None else 0

    @property
    def face_net(self) -> Any:
        if self._face_net is None:
            from facerig.eval.dlib_port import load_dlib_resnet

            self._face_net = load_dlib_resnet(device=self.device).to(dtype=self.dtype).eval().requires_grad_(False)
        return self._face_net

    @torch.no_grad()
    def clip_embed(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, projection_dim) CLIP ``image_embeds`` of (B, 3, H, W) images in [0, 1]; None without CLIP.
        Preprocessing as CLIP's: shortest side resized (bicubic) to ``image_size``, centre crop, normalise."""
        if self.clip_model is None:
            return None
        x = _check_unit_images(images).to(self.device, self.dtype)
        s = int(self.clip_model.config.image_size)
        h, w = x.shape[-2:]
        k = s / min(h, w)
        nh, nw = max(s, round(h * k)), max(s, round(w * k))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top:top + s, left:left + s]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return self.clip_model(pixel_values=(x - mean) / std).image_embeds

    def face_embed(self, images: torch.Tensor, points5: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, 128) face-recognition descriptors of (B, 3, H, W) images in [0, 1] with dlib-ordered
        5-point landmarks (B, 5, 2) in dlib pixel coordinates (:func:`facerig.eval.identity.mediapipe_to_dlib5`)."""
        from facerig.eval.identity import port_embed

        x = _check_unit_images(images).to(self.device, self.dtype)
        with torch.no_grad():
            pts = points5.float().cpu() if isinstance(points5, torch.Tensor) else torch.as_tensor(
                np.asarray(points5, dtype=np.float32))
            return port_embed(x, pts, self.face_net)

    def __call__(self, images: torch.Tensor, points5: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(face (B, 128), clip (B, D) or None)``."""
        return self.face_embed(images, points5), self.clip_embed(images)


def _check_unit_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise InvalidInput("images", "a float (B, 3, H, W) tensor in [0, 1]", getattr(images, "shape", type(images)))
    return images
