"""Training InstaFace (docs/instaface.md).

* :func:`set_stage` -- which networks learn: stage 1 the guidance UNet, the diffusion UNet and the
  projection (the guidance UNet's dead tail -- the layers after the last recorded attn1 input,
  which no loss can reach -- frozen, as DDP requires); stage 2 the projection and the diffusion
  UNet only. VAE, CLIP and the face-recognition network are never part of the model.
* :class:`InstaFaceTrainModule` -- ``forward(batch, generator) -> loss`` for
  :class:`facerig.train.trainer.Trainer`: the epsilon objective of SD on pre-encoded batches
  (``target_latent`` scaled (B, 4, h, w), ``condition_latents`` (B, 12, h, w) from the
  :class:`~facerig.engines.instaface.conditions.FusionController`, ``face_embedding`` (B, 128),
  optional ``clip_embedding`` (B, D)); uniform timesteps and Gaussian noise from ``generator``.
  ``clip_dropout``: probability of training a row without its CLIP token (so one model also runs
  face-recognition-only; 0 by default).
* :class:`LatentFaceDataset` -- those tensors as a map-style dataset.
* :class:`ShardFaceDataset` -- single faces of ``facerig prepare`` shards: the aligned ``image``,
  its ``buffers`` (albedo / normal / render) and the dlib 5 ``points5`` of the fitted model; the
  train module encodes them with its frozen ``encoders`` (VAE -> target latent and Fusion
  Controller latents; identity encoder -> face / CLIP embeddings) when the batch holds no latents.
* :func:`train_instaface` -- stage 1 on prepared shards, from an SD 1.5 base (``unet/`` copied
  into both networks) or a tiny random config.
* :func:`train_stage1` -- stage 1 on :class:`~facerig.train.trainer.Trainer` (accelerate,
  checkpoints, resume); AdamW at lr 1e-5 by default (the paper's).
* :func:`finetune_single_image` -- stage 2: the one inference image repeated ``copies`` (8) times
  per batch, ``steps`` (50) AdamW steps at ``lr`` (1e-5) on the projection and the diffusion UNet.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from facerig.errors import InvalidInput

from .model import InstaFaceModel

__all__ = [
    "STAGE1_LR",
    "STAGE2_COPIES",
    "STAGE2_LR",
    "STAGE2_STEPS",
    "InstaFaceTrainModule",
    "LatentFaceDataset",
    "ShardFaceDataset",
    "dead_tail",
    "finetune_single_image",
    "sd_alphas_cumprod",
    "set_stage",
    "train_instaface",
    "train_stage1",
]

log = logging.getLogger(__name__)

STAGE1_LR = 1e-5
STAGE2_LR = 1e-5
STAGE2_STEPS = 50
STAGE2_COPIES = 8
#: AdamW's weight decay (the paper names AdamW but no decay: torch's default 1e-2 is used)
WEIGHT_DECAY = 1e-2
_KEYS = ("target_latent", "condition_latents", "face_embedding")


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's training schedule ("scaled_linear" betas), float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def dead_tail(model: InstaFaceModel) -> list[str]:
    """Names of the guidance UNet's parameters no recorded feature depends on (probed by a backward)."""
    u = model.guidance_unet
    dev, dt = model.device, model.dtype
    for p in u.parameters():
        p.grad = None
    with torch.enable_grad():
        x = torch.zeros(1, 12, 8, 8, device=dev, dtype=dt)
        ctx = torch.zeros(1, 2, model.cross_attention_dim, device=dev, dtype=dt)
        feats = model.guidance_features(x, 1, ctx)
        cast(torch.Tensor, sum(f.float().sum() for f in feats)).backward()
    dead = [n for n, p in u.named_parameters() if p.requires_grad and p.grad is None]
    for p in u.parameters():
        p.grad = None
    return dead


def set_stage(model: InstaFaceModel, stage: int) -> list[str]:
    """Set ``requires_grad`` for ``stage`` (1 or 2; module docstring); returns the frozen guidance names."""
    if stage not in (1, 2):
        raise InvalidInput("stage", "1 (face set) or 2 (single-image fine-tune)", stage)
    model.diffusion_unet.requires_grad_(True)
    model.projection.requires_grad_(True)
    if stage == 2:
        model.guidance_unet.requires_grad_(False)
        return [n for n, _ in model.guidance_unet.named_parameters()]
    model.guidance_unet.requires_grad_(True)
    frozen = dead_tail(model)
    params = dict(model.guidance_unet.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


class InstaFaceTrainModule(nn.Module):
    """The epsilon objective (module docstring). ``text_embeds``: the fixed prompt's (1, 77, D)
    embedding, or None (identity tokens alone as the cross-attention context). ``encoders``:
    ``(vae, identity_encoder)`` (frozen, not submodules, not saved) for batches of images."""

    alphas_cumprod: torch.Tensor

    def __init__(self, model: InstaFaceModel, text_embeds: torch.Tensor | None = None, *,
                 alphas_cumprod: torch.Tensor | None = None, stage: int = 1, clip_dropout: float = 0.0,
                 encoders: tuple[Any, Any] | None = None):
        super().__init__()
        if not isinstance(model, InstaFaceModel):
            raise InvalidInput("model", "an InstaFaceModel", type(model).__name__)
        if text_embeds is not None and (not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3
                                        or text_embeds.shape[0] != 1):
            raise InvalidInput("text_embeds", "the prompt's (1, 77, D) embedding or None",
                               getattr(text_embeds, "shape", type(text_embeds)))
        if not 0.0 <= float(clip_dropout) <= 1.0:
            raise InvalidInput("clip_dropout", "a probability in [0, 1]", clip_dropout)
        self.model = model
        self.text_embeds = None if text_embeds is None else text_embeds.detach().clone()
        ac = sd_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.stage = int(stage)
        self.clip_dropout = float(clip_dropout)
        self.frozen = set_stage(model, self.stage)
        self._encoders = [encoders]  # a list: frozen helpers are neither submodules nor in the state dict

    @torch.no_grad()
    def encode(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Latents and embeddings of a batch of ``image`` (B, 3, S, S) in [-1, 1], ``buffers`` and
        ``points5`` (B, 5, 2) (a :class:`ShardFaceDataset` batch)."""
        enc = self._encoders[0]
        if enc is None:
            raise InvalidInput("batch", f"the tensors {list(_KEYS)}, or images with an InstaFaceTrainModule "
                               "given encoders=(vae, identity_encoder)", sorted(batch))
        from ..sd.latents import encode_images
        from .conditions import FusionController

        vae, ident = enc
        x = batch["image"]
        if next(vae.parameters()).device != x.device:
            vae.to(x.device)
        out: dict[str, Any] = {"target_latent": encode_images(vae, x, scaled=True),
                               "condition_latents": FusionController(vae)(batch["buffers"])}
        face, clip = ident((x.float() + 1) / 2, batch["points5"])
        out["face_embedding"] = face
        if clip is not None:
            out["clip_embedding"] = clip
        return out

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(batch, generator)

    def loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
             timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        if "target_latent" not in batch and "image" in batch:
            batch = self.encode(batch)
        missing = [k for k in _KEYS if k not in batch]
        if missing:
            raise InvalidInput("batch", f"the tensors {list(_KEYS)} (+ optional clip_embedding)", f"missing {missing}")
        m = self.model
        x0 = batch["target_latent"].to(m.device, torch.float32)
        b = x0.shape[0]
        t = timesteps if timesteps is not None else torch.randint(
            0, self.alphas_cumprod.shape[0], (b,), generator=generator)
        t = t.to(x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(x0.device)
        a = self.alphas_cumprod.to(x0.device)[t].float().view(b, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        clip = batch.get("clip_embedding")
        if clip is not None and self.clip_dropout > 0:
            drop = torch.rand(b, generator=generator) < self.clip_dropout
            if bool(drop.all()):
                clip = None
            elif bool(drop.any()):  # rows without CLIP get their own projection call
                keep = ~drop
                tok_keep = m.identity_tokens(batch["face_embedding"][keep], clip[keep])
                tok_drop = m.identity_tokens(batch["face_embedding"][drop], None)
                tok = torch.empty(b, *tok_keep.shape[1:], device=tok_keep.device, dtype=tok_keep.dtype)
                tok[keep.to(tok.device)] = tok_keep
                tok[drop.to(tok.device)] = tok_drop
                return self._mse(x_t, t, batch, tok, noise)
        tok = m.identity_tokens(batch["face_embedding"], clip)
        return self._mse(x_t, t, batch, tok, noise)

    def _mse(self, x_t: torch.Tensor, t: torch.Tensor, batch: Mapping[str, Any], tok: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        eps = self.model.predict_noise(x_t.to(self.model.dtype), t, batch["condition_latents"], tok, self.text_embeds)
        return F.mse_loss(eps.float(), noise.float())


class LatentFaceDataset(Dataset):
    """Rows of pre-encoded tensors (``target_latent``, ``condition_latents``, ``face_embedding``
    [, ``clip_embedding``]), all with the same first dimension."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        missing = [k for k in _KEYS if k not in tensors]
        if missing:
            raise InvalidInput("tensors", f"the keys {list(_KEYS)}", f"missing {missing}")
        n = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(n.values())) != 1:
            raise InvalidInput("tensors", "the same number of rows in every tensor", n)
        self.tensors = {k: v.detach().cpu() for k, v in tensors.items()}
        self.n = next(iter(n.values()))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class ShardFaceDataset(Dataset):
    """Faces of prepared shards (module docstring): ``image`` (3, S, S) in [-1, 1], ``buffers``
    {albedo, normal, render} (3, S, S), ``points5`` (5, 2) dlib pixel coordinates at S."""

    def __init__(self, shards: Any):
        self.shards = shards

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from facerig.eval.identity import mediapipe_to_dlib5
        from facerig.fit.api import project_landmarks_to_frame

        item = self.shards[i]
        if "buffers" not in item:
            raise InvalidInput("shards", "a ShardDataset with buffers (rendered or stored)", sorted(item))
        size = int(item["image"].shape[-1])
        fm = self.shards.face_model
        params = self.shards.params(i)
        idx = fm.landmark_index.cpu().numpy()
        lm = np.asarray(project_landmarks_to_frame(fm, params)[0], np.float64)
        assert params.crop is not None  # shard params carry the aligned crop
        k = size / float(params.crop[0].frame_size[0])
        pts = np.zeros((478, 2))
        pts[idx] = lm * k
        return {"image": item["image"], "buffers": {n: item["buffers"][n] for n in ("albedo", "normal", "render")},
                "points5": torch.from_numpy(np.asarray(mediapipe_to_dlib5(pts), np.float32))}


def train_stage1(model: InstaFaceModel, dataset: Dataset, out: str | os.PathLike, config: Any = None, *,
                 text_embeds: torch.Tensor | None = None, clip_dropout: float = 0.0, resume: bool = False,
                 encoders: tuple[Any, Any] | None = None) -> Path:
    """Stage 1 on :class:`facerig.train.trainer.Trainer` (accelerate; checkpoints under ``OUT``;
    ``resume`` continues from the latest). ``config``: a :class:`facerig.train.config.TrainConfig`
    (default: lr 1e-5, AdamW weight decay 1e-2). Returns ``OUT/final`` (a ``save_pretrained`` folder)."""
    from facerig.train.config import TrainConfig
    from facerig.train.trainer import Trainer

    tc = config if config is not None else TrainConfig(lr=STAGE1_LR, weight_decay=WEIGHT_DECAY)
    if not isinstance(tc, TrainConfig):
        raise InvalidInput("config", "a facerig.train.config.TrainConfig", type(tc).__name__)
    if not tc.weight_decay:
        log.info("stage 1: weight_decay 0 -> the trainer uses Adam; InstaFace's paper uses AdamW")
    n = len(dataset)  # type: ignore[arg-type]  # torch's Dataset stub has no __len__
    if n < tc.batch_size:
        tc = dataclasses.replace(tc, batch_size=n)
    module = InstaFaceTrainModule(model.train(), text_embeds, stage=1, clip_dropout=clip_dropout, encoders=encoders)
    outp = Path(out)

    def export(mod: nn.Module, dest: Path) -> None:
        cast(InstaFaceTrainModule, mod).model.save_pretrained(dest)

    trainer = Trainer(module, dataset, tc, outp, export_fn=export)
    trainer.run(resume="latest" if resume and (outp / "checkpoints" / "latest").exists() else None)
    return outp / "final"


def finetune_single_image(model: InstaFaceModel, target_latent: torch.Tensor, condition_latents: torch.Tensor,
                          face_embedding: torch.Tensor, clip_embedding: torch.Tensor | None = None,
                          text_embeds: torch.Tensor | None = None, *, steps: int = STAGE2_STEPS,
                          copies: int = STAGE2_COPIES, lr: float = STAGE2_LR, weight_decay: float = WEIGHT_DECAY,
                          generator: torch.Generator | None = None, in_place: bool = False) -> tuple[InstaFaceModel,
                                                                                                   list[float]]:
    """Stage 2 (module docstring) on ONE image's (1, ...) tensors; returns the fine-tuned model (a
    copy unless ``in_place``) and the loss of every step. A bf16/fp16 model is tuned, and returned,
    as an fp32 copy (bf16/fp16 weights cannot hold lr-1e-5 updates)."""
    if int(steps) < 1 or int(copies) < 1:
        raise InvalidInput("steps/copies", "integers >= 1", (steps, copies))
    for name, x in (("target_latent", target_latent), ("condition_latents", condition_latents),
                    ("face_embedding", face_embedding)):
        if not isinstance(x, torch.Tensor) or x.shape[0] != 1:
            raise InvalidInput(name, "a tensor of batch 1 (the inference image)", getattr(x, "shape", type(x)))
    m = model if in_place else copy.deepcopy(model)
    if not in_place:
        m.install_processors()
    dtype = m.dtype
    if dtype != torch.float32 and not in_place:
        # lr 1e-5 steps vanish in bf16/fp16 weights: tune (and keep) an fp32 copy
        m = m.float()
    module = InstaFaceTrainModule(m, text_embeds, stage=2)
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(lr), weight_decay=float(weight_decay))
    k = int(copies)
    batch: dict[str, torch.Tensor] = {
        "target_latent": target_latent.expand(k, -1, -1, -1), "condition_latents": condition_latents.expand(k, -1, -1, -1),
        "face_embedding": face_embedding.expand(k, -1),
    }
    if clip_embedding is not None:
        batch["clip_embedding"] = clip_embedding.expand(k, -1)
    losses = []
    for _ in range(int(steps)):
        loss = module(batch, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    m.eval()
    if m.dtype != dtype:
        log.info("stage 2: the personalized copy stays fp32 (casting back to %s would round most updates away)", dtype)
    log.info("stage 2: %d steps x %d copies, loss %.4f -> %.4f", steps, k, losses[0], losses[-1])
    return m, losses


def train_instaface(data: str | os.PathLike, out: str | os.PathLike, *, base: str | os.PathLike | None = None,
                    clip: str | os.PathLike | None = None, config: Any = None, size: int = 256,
                    unet_config: Mapping[str, Any] | None = None, num_tokens: int = 4, clip_dropout: float = 0.0,
                    resume: bool = False, face_net: Any = None, seed: int = 0) -> Path:
    """``facerig train instaface``: stage 1 on the shards at ``data`` (``facerig prepare`` output) at
    ``size`` px. ``base``: the SD 1.5 diffusers folder (VAE, text encoder; with ``unet/`` and no
    ``unet_config`` both networks start from SD's UNet). ``unet_config``: a fresh UNet config
    instead (tests: ``TINY_UNET_CONFIG``). ``clip``: the CLIP vision folder (None: face-recognition
    tokens only). Returns ``OUT/final``."""
    from facerig.engines.sd.base import load_sd_base
    from facerig.engines.sd.prompt import encode_prompt
    from facerig.train.data import ShardDataset

    from .conditions import IdentityEncoder
    from .model import DEFAULT_PROMPT

    if int(size) < 64 or int(size) % 8:
        raise InvalidInput("size", "a multiple of 8, at least 64 (256 as the paper's stage 1)", size)
    sd = load_sd_base(base)
    ident = IdentityEncoder(clip, face_net)
    if unet_config is None:
        from diffusers import UNet2DConditionModel

        unet_dir = Path(sd.source) / "unet"
        if not (unet_dir / "config.json").is_file():
            raise InvalidInput("base", "an SD 1.5 diffusers folder with unet/ (or give unet_config)", str(sd.source))
        sd_unet = UNet2DConditionModel.from_pretrained(str(unet_dir), local_files_only=True)
        model = InstaFaceModel.from_sd_unet(sd_unet, clip_dim=ident.clip_dim, num_tokens=num_tokens, seed=seed)
        del sd_unet
    else:
        d = int(dict(unet_config).get("cross_attention_dim", 768))
        model = InstaFaceModel.from_config(unet_config, clip_dim=ident.clip_dim, num_tokens=num_tokens, seed=seed,
                                           projection_width=d, projection_heads=max(1, d // 64))
    if int(sd.text_encoder.config.hidden_size) != model.cross_attention_dim:
        raise InvalidInput("base", f"a text encoder of width {model.cross_attention_dim}", sd.text_encoder.config.hidden_size)
    text = encode_prompt(sd.text_encoder, sd.tokenizer, DEFAULT_PROMPT)
    model.meta = {"trained_on": str(data), "size": int(size), "clip": ident.clip_dim > 0}
    ds = ShardFaceDataset(ShardDataset(data, size=int(size)))
    return train_stage1(model, ds, out, config, text_embeds=text, clip_dropout=clip_dropout, resume=resume,
                        encoders=(sd.vae, ident))
