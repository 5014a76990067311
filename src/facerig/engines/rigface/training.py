"""Training RigFace's UNet pair on frame pairs of one person (docs/rigface-model.md).

* :class:`RigFacePairDataset` -- (source, target) pairs of the same identity from prepared shards
  (:class:`facerig.train.data.ShardDataset` + :class:`facerig.train.data.PairSampler`, fixed at
  construction so a resumed run sees the same pairs). Conditions come from the TARGET frame with
  facerig's own conditioning: ``render`` = the builtin lambertian render of the target params
  (clamped to [0, 1] as the release's PNG, mapped to [-1, 1]), ``expression`` = the target's
  expression coefficients; ``background`` = the source photo with the union of both frames' person
  regions painted grey 127 (:func:`training_person_mask`); ``source`` and ``target`` images.
* :class:`RigFaceTrainModule` -- ``forward(batch, generator) -> loss`` for
  :class:`facerig.train.trainer.Trainer`: VAE posterior means (unscaled for source / background /
  render, times ``scaling_factor`` for the target = x0) unless the batch already holds latents
  (``source_latent``, ``background_latent``, ``render_latent``, ``target_latent``), uniform
  timesteps and Gaussian noise from ``generator``, the identity UNet at t = 0 on the source, the
  denoiser on ``q(x_t | x0)``, epsilon MSE. Both UNets are trained in full, except the identity
  UNet's dead tail (the layers after the last recorded block input: they cannot receive a gradient,
  and DDP refuses parameters without one), which is frozen; those weights are saved unchanged.
* :func:`train_rigface` -- the recipe-driven run behind ``facerig train rigface``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from facerig.errors import InvalidInput, MissingDependency

from .model import DEFAULT_PROMPT, RigFaceUNets, load_rigface_weights

__all__ = [
    "MODEL_KEYS",
    "RigFacePairDataset",
    "RigFaceTrainModule",
    "paint_grey",
    "sd_alphas_cumprod",
    "train_rigface",
    "training_person_mask",
    "use_adam8bit",
]

log = logging.getLogger(__name__)

GREY = 127


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's training schedule ("scaled_linear" betas), float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


# ---- conditions of a training pair -------------------------------------------------------------
def _simple_person_mask(face: np.ndarray) -> np.ndarray:
    """The rendered face region grown to the head (hair, ears) and extended down to the image's
    bottom under the face (neck, clothes): an ellipse around the face box, 1.6x wide and 1.9x tall
    (shifted up for the hair), plus the face box's width below the chin."""
    h, w = face.shape
    ys, xs = np.nonzero(face)
    if len(ys) == 0:
        return np.zeros((h, w), bool)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    cy, cx = (y0 + y1) / 2 - 0.15 * (y1 - y0), (x0 + x1) / 2
    ry, rx = 0.95 * (y1 - y0 + 1), 0.8 * (x1 - x0 + 1)
    yy, xx = np.mgrid[0:h, 0:w]
    head = ((yy - cy) / max(ry, 1)) ** 2 + ((xx - cx) / max(rx, 1)) ** 2 <= 1.0
    body = (yy >= (y0 + y1) / 2) & (np.abs(xx - cx) <= 0.75 * (x1 - x0 + 1))
    return head | body | face.astype(bool)


def training_person_mask(image: np.ndarray, face_mask: np.ndarray, *, segmentation: bool = True) -> np.ndarray:
    """The person region (face, hair, neck, clothes) of an aligned training frame, bool (H, W).

    With ``segmentation``: :func:`facerig.engines.rigface.person.person_mask` (MediaPipe person
    segmentation + face regions, the conditioning used at inference) united with the rendered face;
    without (the tiny CPU recipe, synthetic frames): :func:`_simple_person_mask` of the rendered face
    region ``face_mask`` (H, W)."""
    face = np.asarray(face_mask) > 0.5
    if image.shape[:2] != face.shape:
        raise InvalidInput("face_mask", f"the image's size {image.shape[:2]}", face.shape)
    if segmentation:
        from facerig.engines.rigface.person import person_mask

        return np.asarray(person_mask(image), bool) | face
    return _simple_person_mask(face)


def paint_grey(image: torch.Tensor, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``image`` (3, H, W) in [-1, 1] with ``mask`` (H, W) painted grey 127 (as the release)."""
    m = torch.as_tensor(np.asarray(mask, bool)).to(image.device)
    grey = torch.tensor(GREY / 127.5 - 1.0, dtype=image.dtype, device=image.device)
    return torch.where(m[None], grey, image)


def _uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class RigFacePairDataset(Dataset):
    """Same-identity (source, target) pairs over prepared shards (see the module docstring).

    ``pairs_per_source``: pairs drawn per source frame (PairSampler epochs 0..k-1, fixed).
    ``segmentation``: passed to :func:`training_person_mask`."""

    def __init__(self, shards: Any, *, pairs_per_source: int = 1, min_frame_gap: int = 30, seed: int = 0,
                 segmentation: bool = True):
        from facerig.train.data import PairSampler

        if int(pairs_per_source) < 1:
            raise InvalidInput("pairs_per_source", "an integer >= 1", pairs_per_source)
        self.shards = shards
        self.segmentation = bool(segmentation)
        sampler = PairSampler(shards, min_frame_gap=min_frame_gap, seed=seed)
        self.pairs: list[tuple[int, int]] = []
        for epoch in range(int(pairs_per_source)):
            sampler.set_epoch(epoch)
            self.pairs.extend(sampler)
        if not self.pairs:
            raise InvalidInput(
                "data", f"at least two frames of one identity (>= {min_frame_gap} frames apart for videos)",
                f"{len(shards)} samples, identities {getattr(shards, 'identities', '?')}",
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s, t = self.pairs[i]
        src, tgt = self.shards[s], self.shards[t]
        if "buffers" not in tgt:
            raise InvalidInput("data", "shards read with buffers (render, mask)", "no buffers")
        masks = [training_person_mask(_uint8(it["image"]), it["buffers"]["mask"][0].numpy(),
                                      segmentation=self.segmentation) for it in (src, tgt)]
        expression = self.shards.params(t).expression[0].float()
        return {
            "source": src["image"],
            "target": tgt["image"],
            "background": paint_grey(src["image"], masks[0] | masks[1]),
            "render": tgt["buffers"]["render"].clamp(0, 1) * 2 - 1,
            "expression": expression,
        }


# ---- the objective -----------------------------------------------------------------------------
def _dead_tail(unets: RigFaceUNets) -> list[str]:
    """Names of the identity UNet's parameters that no recorded state depends on (probed with a
    backward of the states of a small input)."""
    u = unets.unet_id
    dev, dt = unets.device, unets.dtype
    with torch.enable_grad():
        for p in u.parameters():
            p.grad = None
        x = torch.zeros(1, 4, 8, 8, device=dev, dtype=dt)
        text = torch.zeros(1, 4, unets.cross_attention_dim, device=dev, dtype=dt)
        was = u.training
        u.eval()
        states = unets.identity_states(x, text, stop_early=False)
        sum(s.float().sum() for s in states).backward()  # type: ignore[union-attr]
        u.train(was)
    dead = [n for n, p in u.named_parameters() if p.requires_grad and p.grad is None]
    for p in u.parameters():
        p.grad = None
    return dead


class RigFaceTrainModule(nn.Module):
    """The RigFace epsilon objective (see the module docstring). ``vae`` (frozen, not part of the
    state dict) is needed only for batches of images; ``text_embeds`` is the fixed prompt's
    (1, 77, D) embedding."""

    alphas_cumprod: torch.Tensor
    text_embeds: torch.Tensor

    def __init__(self, unets: RigFaceUNets, text_embeds: torch.Tensor, vae: Any = None, *,
                 alphas_cumprod: torch.Tensor | None = None, freeze_dead_tail: bool = True):
        super().__init__()
        if not isinstance(unets, RigFaceUNets):
            raise InvalidInput("unets", "a RigFaceUNets", type(unets).__name__)
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] != 1:
            raise InvalidInput("text_embeds", "the prompt's (1, 77, D) embedding", getattr(text_embeds, "shape", None))
        self.unets = unets
        self.register_buffer("text_embeds", text_embeds.detach().clone(), persistent=False)
        ac = sd_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self._vae = [vae]  # a list: the frozen VAE is neither a submodule nor in the state dict
        if vae is not None:
            vae.requires_grad_(False)
            vae.eval()
        self.frozen: list[str] = []
        if freeze_dead_tail:
            self.frozen = _dead_tail(unets)
            params = dict(unets.unet_id.named_parameters())
            for n in self.frozen:
                params[n].requires_grad_(False)

    @property
    def vae(self) -> Any:
        return self._vae[0]

    def _latents(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        keys = ("source", "background", "render", "target")
        if all(f"{k}_latent" in batch for k in keys):
            return {k: batch[f"{k}_latent"] for k in keys}
        vae = self.vae
        if vae is None:
            raise InvalidInput("batch", "latents (source_latent, ...) or a RigFaceTrainModule with a vae",
                               sorted(batch))
        missing = [k for k in keys if k not in batch]
        if missing:
            raise InvalidInput("batch", f"images {list(keys)}", f"missing {missing}")
        dev = batch["source"].device
        p = next(vae.parameters())
        if p.device != dev:
            vae.to(dev)
        b = batch["source"].shape[0]
        with torch.no_grad():
            x = torch.cat([batch[k] for k in keys], 0).to(dev, p.dtype)
            mean = vae.encode(x).latent_dist.mean
        parts = mean.chunk(4, 0)
        out = {k: v for k, v in zip(keys, parts, strict=True)}
        out["target"] = out["target"] * float(vae.config.scaling_factor)
        assert out["source"].shape[0] == b
        return out

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(batch, generator)

    def loss(self, batch: dict[str, Any], generator: torch.Generator | None = None,
             timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        lat = self._latents(batch)
        x0 = lat["target"]
        b, dev = x0.shape[0], x0.device
        t = timesteps
        if t is None:
            t = torch.randint(0, self.alphas_cumprod.shape[0], (b,), generator=generator, device="cpu")
        t = t.to(dev)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=torch.float32)
        noise = noise.to(dev)
        a = self.alphas_cumprod.to(dev)[t].float().view(b, 1, 1, 1)
        x_t = a.sqrt() * x0.float() + (1 - a).sqrt() * noise
        expr = batch["expression"]
        states = self.unets.identity_states(lat["source"], self.text_embeds)
        eps = self.unets.predict_noise(x_t, t, lat["background"], lat["render"], expr, states, self.text_embeds)
        return F.mse_loss(eps.float(), noise.float())


def use_adam8bit(trainer: Any) -> None:
    """Replace the trainer's Adam by bitsandbytes' 8-bit Adam (same LR, betas, eps, schedule)."""
    try:
        import bitsandbytes as bnb  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise MissingDependency("bitsandbytes", "8-bit Adam (model.optimizer: adam8bit)") from None
    from facerig.train.trainer import lr_lambda

    cfg = trainer.config
    params = [p for p in trainer.unwrapped.parameters() if p.requires_grad]
    opt = bnb.optim.Adam8bit(params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, cfg.max_steps))
    trainer.optimizer = trainer.acc.prepare_optimizer(opt)


# ---- the run -----------------------------------------------------------------------------------
MODEL_KEYS = ("unet", "init", "expression_kind", "image_size", "prompt", "pairs_per_source", "min_frame_gap",
              "optimizer", "segmentation")


class _LoadedBase:
    def __init__(self, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any = None):
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet


def _shard_crop(data: Path) -> str:
    """The crop the shards were prepared with (``index.json`` options; ``facerig prepare``'s default
    "ffhq" when unrecorded), recorded in rigface.json so inference frames faces the same way."""
    try:
        crop = json.loads((data / "index.json").read_text()).get("options", {}).get("crop", "ffhq")
    except (OSError, ValueError):
        crop = "ffhq"
    return str(crop) if crop in ("ffhq", "square") else "ffhq"


def _load_base(base: str | os.PathLike | None, need_unet: bool) -> _LoadedBase:
    """The SD 1.5 base (VAE, CLIP text encoder, tokenizer [, UNet]) through the SD substrate's
    :func:`facerig.engines.sd.base.load_sd_base` (a diffusers folder or a single-file checkpoint)."""
    from facerig.engines.sd.base import load_sd_base

    b = load_sd_base(base)
    unet = None
    if need_unet:
        from diffusers import UNet2DConditionModel

        udir = Path(b.source) / "unet"
        if not udir.is_dir():
            from facerig.errors import AssetMissing

            raise AssetMissing("the SD 1.5 UNet (unet/ of a diffusers folder) for model.init 'sd'", str(udir),
                               "give --base a diffusers folder with unet/, or set model.init to RigFace weights")
        unet = UNet2DConditionModel.from_pretrained(udir)
    return _LoadedBase(b.vae, b.text_encoder, b.tokenizer, unet)


def prompt_embedding(text_encoder: Any, tokenizer: Any, prompt: str = DEFAULT_PROMPT) -> torch.Tensor:
    """(1, 77, D) last hidden state of the prompt padded to the tokenizer's max length (the SD
    substrate's cached :func:`facerig.engines.sd.prompt.encode_prompt`)."""
    from facerig.engines.sd.prompt import encode_prompt

    return encode_prompt(text_encoder, tokenizer, prompt)


def _initial_unets(model_cfg: dict[str, Any], base: _LoadedBase, expression_dim: int, seed: int) -> RigFaceUNets:
    init = model_cfg.get("init", "sd")
    kind = str(model_cfg.get("expression_kind", "facerig"))
    prompt = str(model_cfg.get("prompt", DEFAULT_PROMPT))
    if init == "sd":
        if base.unet is None:
            raise InvalidInput("model.init", "a base with unet/ for init 'sd'", None)
        return RigFaceUNets.from_sd_unet(base.unet, expression_kind=kind, expression_dim=expression_dim, prompt=prompt)
    if init == "config":
        if "unet" not in model_cfg:
            raise InvalidInput("model.unet", "a UNet config for init 'config'", None)
        return RigFaceUNets.from_config(model_cfg["unet"], expression_kind=kind, expression_dim=expression_dim,
                                        seed=seed, prompt=prompt)
    m = load_rigface_weights(init)  # fine-tune released / facerig weights
    if m.expression_kind == "facerig" and m.expression_dim != expression_dim:
        raise InvalidInput("model.init", f"weights with {expression_dim} facerig expression coefficients",
                           m.expression_dim)
    if m.expression_kind == "deep3d":
        raise InvalidInput("model.init", "facerig-conditioned weights (training uses facerig's expression "
                           "coefficients; the release's Deep3D vectors are not produced here)", str(init))
    return m


def train_rigface(
    config: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    identities: Sequence[str] | None = None,
    sample_fn: Callable[[nn.Module, int], torch.Tensor] | None = None,
) -> Path:
    """Train RigFace on prepared shards with a recipe (``configs/rigface/*.yaml`` or a path);
    returns ``OUT/final`` (a :meth:`RigFaceUNets.save_pretrained` folder; EMA weights when the
    recipe keeps an EMA). ``base``: the SD 1.5 diffusers folder (VAE, text encoder, tokenizer, and
    unet/ for ``init: sd``; default ``$FACERIG_SD15``)."""
    from facerig.train.config import load_recipe
    from facerig.train.data import ShardDataset
    from facerig.train.trainer import Trainer

    recipe = load_recipe(config, engine="rigface")
    if recipe.engine != "rigface":
        raise InvalidInput("--config", "a rigface recipe", recipe.engine)
    mc = dict(recipe.model)
    extra = sorted(set(mc) - set(MODEL_KEYS))
    if extra:
        raise InvalidInput("model", f"only the keys {list(MODEL_KEYS)}", f"unknown {extra}")
    tc = recipe.train
    if max_steps is not None:
        tc = dataclasses.replace(tc, max_steps=int(max_steps), save_every=min(tc.save_every, int(max_steps)),
                                 sample_every=0)
    size = int(mc.get("image_size", 512))
    if size % 8:
        raise InvalidInput("model.image_size", "a multiple of 8", size)
    shards = ShardDataset(data, size=size, identities=identities)
    ds = RigFacePairDataset(shards, pairs_per_source=int(mc.get("pairs_per_source", 1)),
                            min_frame_gap=int(mc.get("min_frame_gap", 30)), seed=tc.seed,
                            segmentation=bool(mc.get("segmentation", True)))
    exp_dim = int(shards.params(0).expression.shape[-1])
    b = _load_base(base, need_unet=mc.get("init", "sd") == "sd")
    unets = _initial_unets(mc, b, exp_dim, tc.seed)
    if unets.cross_attention_dim != int(b.text_encoder.config.hidden_size):
        raise InvalidInput("base", f"a text encoder of width {unets.cross_attention_dim}",
                           b.text_encoder.config.hidden_size)
    text = prompt_embedding(b.text_encoder, b.tokenizer, unets.prompt)
    unets.meta = {**unets.meta, "face_model": shards.params(0).model, "trained_on": str(data),
                  "crop": _shard_crop(Path(data))}
    module = RigFaceTrainModule(unets.train(), text, b.vae)
    if len(ds) < tc.batch_size:
        tc = dataclasses.replace(tc, batch_size=len(ds))
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "rigface_run.json").write_text(json.dumps({"recipe": recipe.name, "data": str(data), "pairs": len(ds),
                                                       "frozen_dead_tail": module.frozen}, indent=1))

    def export(mod: nn.Module, dest: Path) -> None:
        cast(RigFaceTrainModule, mod).unets.save_pretrained(dest)

    trainer = Trainer(module, ds, tc, outp, export_fn=export, sample_fn=sample_fn)
    if mc.get("optimizer", "adam") == "adam8bit":
        use_adam8bit(trainer)
    elif mc.get("optimizer", "adam") != "adam":
        raise InvalidInput("model.optimizer", "adam or adam8bit", mc.get("optimizer"))
    trainer.run(resume="latest" if resume and (outp / "checkpoints" / "latest").exists() else None)
    return outp / "final"
