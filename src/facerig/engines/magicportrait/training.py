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
* ``noise_offset`` (default 0; Champ's configs: 0.05): a per-sample, per-channel constant added to
  the noise (``offset * randn(B, C, 1, 1, 1)``, the same over frames and pixels), as the lineage's
  training scripts do, so the model learns to shift a latent's mean (very dark / light frames).
* ``snr_gamma`` (default 0: plain MSE; Champ's configs: 5): min-SNR weighting of each sample's MSE,
  in the lineage's v-prediction form ``min(SNR + 1, gamma) / (SNR + 1)`` with ``SNR = a / (1 - a)``;
  at the zero-terminal-SNR last step it is 1 (no division by zero).

Runs (:func:`train_magicportrait`, ``facerig train magicportrait --stage 1|2``):

* :class:`MagicPortraitClipDataset` -- stage-1 (reference, target) pairs of one identity
  (:class:`facerig.train.data.PairSampler`) or stage-2 clips of F consecutive samples of one identity
  + a reference, from prepared shards; maps of each target frame from ``maps_fn`` (default
  :func:`conditioner_maps`: :class:`~.conditions.FacerigMagicConditioner` on that frame's own
  aligned crop, so maps and target image register). Shards prepared with ``facerig prepare
  --clip-crop`` keep one crop per video, so a clip's face moves inside a fixed crop as released.
* export: ``OUT/final`` is a :meth:`~.pipeline.MagicPortraitPipeline.save_pretrained` folder
  (``model_index.json``); a stage-1 denoiser is inflated with fresh zero-output motion modules (an
  exact identity) so that both stages export the same layout; :func:`load_trained` reads it back.
  Stage 2 also writes ``OUT/final/motion_module.pth``: the trained temporal modules in AnimateDiff's
  key layout (``checkpoints.save_motion_module``), loadable by ``load_motion_adapter``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from facerig.errors import AssetMissing, InvalidInput

from .guidance import guidance_features
from .model import MagicPortraitModel

__all__ = ["MODEL_KEYS", "MagicPortraitClipDataset", "MagicPortraitTrainModule", "conditioner_maps",
           "fresh_motion_adapter", "inflate", "load_trained", "min_snr_weights", "release_alphas_cumprod",
           "stage1_model", "train_magicportrait", "weighted_v_loss"]


def release_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The release's training schedule: linear betas rescaled to zero terminal SNR (diffusers'
    ``rescale_zero_terminal_snr``), float64 alpha-bars; the last one is 0."""
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float32)
    betas = rescale_zero_terminal_snr(betas).double()
    return torch.cumprod(1.0 - betas, 0)


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample min-SNR loss weights of a v-prediction objective (the lineage's form):
    ``min(SNR + 1, gamma) / (SNR + 1)``, ``SNR = a / (1 - a)``; 1 at a = 0 (zero terminal SNR) and
    ``gamma / (SNR + 1)`` -> 0 as a -> 1. ``gamma`` <= 0: all ones."""
    a = alphas_cumprod_t.double()
    if gamma <= 0:
        return torch.ones_like(a)
    snr1 = a / (1.0 - a).clamp_min(1e-12) + 1.0
    return torch.minimum(snr1, torch.full_like(snr1, float(gamma))) / snr1


def weighted_v_loss(pred: torch.Tensor, v: torch.Tensor, alphas_cumprod_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """MSE on v, each sample's mean weighted by :func:`min_snr_weights` (plain MSE at gamma 0)."""
    if gamma <= 0:
        return F.mse_loss(pred, v)
    per = ((pred - v) ** 2).flatten(1).mean(1)
    return (per * min_snr_weights(alphas_cumprod_t, gamma).to(per.dtype)).mean()


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
                 alphas_cumprod: torch.Tensor | None = None, reference_drop: float = 0.1, freeze_dead: bool = True,
                 noise_offset: float = 0.0, snr_gamma: float = 0.0):
        super().__init__()
        if not isinstance(model, MagicPortraitModel):
            raise InvalidInput("model", "a MagicPortraitModel", type(model).__name__)
        if stage not in (1, 2):
            raise InvalidInput("stage", "1 (image pairs) or 2 (clips, motion modules only)", stage)
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] != 1:
            raise InvalidInput("text_embeds", "the prompt's (1, 77, D) embedding", getattr(text_embeds, "shape", None))
        if not 0.0 <= float(reference_drop) < 1.0:
            raise InvalidInput("reference_drop", "a probability in [0, 1)", reference_drop)
        if not 0.0 <= float(noise_offset) < 1.0:
            raise InvalidInput("noise_offset", "a number in [0, 1) (Champ: 0.05)", noise_offset)
        if not float(snr_gamma) >= 0.0:
            raise InvalidInput("snr_gamma", "0 (plain MSE) or a positive min-SNR gamma (Champ: 5)", snr_gamma)
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
        self.noise_offset = float(noise_offset)
        self.snr_gamma = float(snr_gamma)
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
            if self.noise_offset > 0:
                noise = noise + self.noise_offset * torch.randn((b, x0.shape[1], 1, 1, 1), generator=generator,
                                                                dtype=torch.float32)
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
        return weighted_v_loss(pred.float(), v, a.view(b).double(), self.snr_gamma)


# ---- data --------------------------------------------------------------------------------------
MAP_NAMES = ("depth", "normal", "render")
_CONDITIONERS: dict[tuple[int, int], Any] = {}


def conditioner_maps(shards: Any, index: int, size: int) -> dict[str, torch.Tensor]:
    """The default ``maps_fn``: depth / normal / render (3, S, S) in [0, 1] of sample ``index`` from
    :class:`~.conditions.FacerigMagicConditioner` on its own aligned crop (the frame's params as
    source and target, so the maps register with the frame's image)."""
    from .conditions import FacerigMagicConditioner

    model = shards.face_model
    key = (id(model), int(size))
    if key not in _CONDITIONERS:
        _CONDITIONERS[key] = FacerigMagicConditioner(model, size)
    cond = _CONDITIONERS[key]
    p = shards.params(index)
    with torch.no_grad():
        fr = cond.frames(cond.source_state(shards.image(index), p), [p])
    return {n: getattr(fr, n)[0].float().clamp(0, 1) for n in MAP_NAMES}


class MagicPortraitClipDataset(Dataset):
    """Items ``{"reference": (3, S, S), "target": (F, 3, S, S)}`` in [-1, 1] and
    ``depth`` / ``normal`` / ``render`` (F, 3, S, S) in [0, 1] (the objective's batch layout) from
    prepared shards. ``frames`` = 1: stage-1 pairs of one identity (``pairs_per_source`` PairSampler
    epochs, fixed at construction so a resumed run sees the same pairs); ``frames`` > 1: clips of
    ``frames`` consecutive samples of one identity (shard order = frame order for videos) with a
    reference drawn (seeded) among the identity's other samples.
    ``maps_fn(shards, index, size) -> {depth, normal, render}`` (default :func:`conditioner_maps`)."""

    def __init__(self, shards: Any, *, frames: int = 1, pairs_per_source: int = 1, min_frame_gap: int = 30,
                 clip_stride: int = 1, seed: int = 0,
                 maps_fn: Callable[[Any, int, int], Mapping[str, torch.Tensor]] | None = None):
        from facerig.train.data import PairSampler

        if int(frames) < 1:
            raise InvalidInput("frames", "an integer >= 1", frames)
        self.shards, self.frames = shards, int(frames)
        self.maps_fn = maps_fn or conditioner_maps
        self.items: list[tuple[int, list[int]]] = []
        if self.frames == 1:
            sampler = PairSampler(shards, min_frame_gap=min_frame_gap, seed=seed)
            for epoch in range(int(pairs_per_source)):
                sampler.set_epoch(epoch)
                self.items.extend((s, [t]) for s, t in sampler)
        else:
            by: dict[str, list[int]] = {}
            for i, r in enumerate(shards.samples):
                by.setdefault(str(r["identity"]), []).append(i)
            rng = random.Random(seed)
            for ident in sorted(by):
                idx = by[ident]
                for s0 in range(0, len(idx) - self.frames + 1, max(1, int(clip_stride))):
                    clip = idx[s0:s0 + self.frames]
                    others = [j for j in idx if j not in clip] or clip
                    self.items.append((rng.choice(others), clip))
        if not self.items:
            raise InvalidInput("data", f"identities with enough samples ({max(2, self.frames)} or more)",
                               f"{len(shards)} samples")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r, clip = self.items[i]
        ref = self.shards[r]["image"]
        size = int(ref.shape[-1])
        tg: list[torch.Tensor] = []
        maps: dict[str, list[torch.Tensor]] = {n: [] for n in MAP_NAMES}
        for t in clip:
            tg.append(self.shards[t]["image"])
            m = self.maps_fn(self.shards, t, size)
            for n in MAP_NAMES:
                maps[n].append(torch.as_tensor(m[n]).float())
        out = {"reference": ref, "target": torch.stack(tg, 0)}
        out.update({n: torch.stack(v, 0) for n, v in maps.items()})
        return out


# ---- models of a run ---------------------------------------------------------------------------
MODEL_KEYS = ("init", "unet", "guidance", "motion_heads", "motion_norm_groups", "motion_module", "frames",
              "image_size", "pairs_per_source", "min_frame_gap", "clip_stride", "reference_drop",
              "noise_offset", "snr_gamma")


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def stage1_model(mc: Mapping[str, Any], base: Any, seed: int = 0) -> MagicPortraitModel:
    """The stage-1 model (2D denoiser) of a recipe's ``model`` section: ``init`` = ``config``
    (fresh UNets of ``model.unet``), ``sd`` (both UNets from the base's ``unet/``); fresh guidance
    encoders of ``model.guidance`` (default: the release's config). The bank is not rounded."""
    from diffusers import UNet2DConditionModel

    from .checkpoints import strip_reference_tail
    from .guidance import GuidanceEncoder

    init = str(mc.get("init", "sd"))
    if init == "sd":
        udir = Path(str(getattr(base, "source", ""))) / "unet"
        if base is None or not udir.is_dir():
            raise AssetMissing("the SD 1.5 UNet (unet/ of the base) for model.init 'sd'", str(udir),
                               "give --base a diffusers folder with unet/, or model.init: config")
        ref = strip_reference_tail(UNet2DConditionModel.from_pretrained(udir))
        den = UNet2DConditionModel.from_pretrained(udir)
    elif init == "config":
        if "unet" not in mc:
            raise InvalidInput("model.unet", "a UNet config for init 'config'", None)
        ref = strip_reference_tail(_seeded(seed + 1, lambda: UNet2DConditionModel(**dict(mc["unet"]))))
        den = _seeded(seed + 2, lambda: UNet2DConditionModel(**dict(mc["unet"])))
    else:
        raise InvalidInput("model.init", "'sd' or 'config'", init)
    gcfg = dict(mc.get("guidance", {}))
    encs = {t: _seeded(seed + 10 + i, lambda: GuidanceEncoder(**gcfg)) for i, t in enumerate(MAP_NAMES)}
    return MagicPortraitModel(ref, den, encs, bank_dtype=None)


def inflate(model: MagicPortraitModel, *, heads: int = 8, norm_groups: int = 32, seed: int = 0) -> MagicPortraitModel:
    """A stage-1 model with its 2D denoiser inflated to a ``UNetMotionModel`` with fresh zero-output
    motion modules (an exact identity per frame); a model that already has motion modules is returned."""
    from diffusers import UNetMotionModel

    from .checkpoints import build_denoiser

    if isinstance(model.denoiser, UNetMotionModel):
        return model
    ad = _seeded(seed, lambda: fresh_motion_adapter(dict(model.denoiser.config), num_attention_heads=heads,
                                                    norm_num_groups=norm_groups, seed=seed))
    den = build_denoiser(model.denoiser, ad)
    return MagicPortraitModel(model.reference_unet, den, model.guidance_encoders, bank_dtype=model.bank_dtype)


def load_trained(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> MagicPortraitModel:
    """The MagicPortraitModel of a training run (``RUN/final``) or of a pipeline folder."""
    from .pipeline import MagicPortraitPipeline

    d = Path(run_dir)
    if not (d / "model_index.json").is_file() and (d / "final" / "model_index.json").is_file():
        d = d / "final"
    return MagicPortraitPipeline.from_pretrained(d, device=device, dtype=dtype).model


def _load_motion_weights(denoiser: Any, path: str, heads: int, norm_groups: int) -> None:
    """AnimateDiff's ``motion_module.pth`` into the denoiser's temporal modules (strict on them)."""
    from facerig.errors import CheckpointMismatch

    from .checkpoints import load_motion_adapter

    ad = load_motion_adapter(path, dict(denoiser.config), num_attention_heads=heads, norm_num_groups=norm_groups)
    mine = {k for k in denoiser.state_dict() if ".motion_modules." in f".{k}"}
    theirs = ad.state_dict()
    if set(theirs) != mine:
        raise CheckpointMismatch(str(path), sorted(mine - set(theirs))[:5], sorted(set(theirs) - mine)[:5], {},
                                 layout="the denoiser's motion modules")
    denoiser.load_state_dict(theirs, strict=False)


# ---- the run -----------------------------------------------------------------------------------
def train_magicportrait(
    config: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    stage: int,
    base: str | os.PathLike | None = None,
    init: str | os.PathLike | None = None,
    max_steps: int | None = None,
    resume: bool | None = None,
    identities: Sequence[str] | None = None,
    maps_fn: Callable[[Any, int, int], Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Train one stage on prepared shards with a recipe (``configs/magicportrait/*.yaml`` or a path);
    returns ``OUTPUT/final`` (a MagicPortraitPipeline folder). ``base``: the SD 1.5 diffusers folder
    (default ``$FACERIG_SD15``). ``init``: stage 2's stage-1 run (required there). ``resume``:
    continue from the run's latest checkpoint."""
    from facerig.engines.sd.base import load_sd_base
    from facerig.engines.sd.prompt import encode_prompt
    from facerig.train.config import load_recipe
    from facerig.train.data import ShardDataset
    from facerig.train.trainer import Trainer

    from .pipeline import PROMPT, MagicPortraitPipeline

    if stage not in (1, 2):
        raise InvalidInput("--stage", "1 or 2", stage)
    recipe = load_recipe(config, engine="magicportrait")
    if recipe.engine != "magicportrait" or recipe.stage != stage:
        raise InvalidInput("--config", f"a magicportrait stage-{stage} recipe", f"{recipe.name} ({recipe.engine}, "
                           f"stage {recipe.stage})")
    mc = dict(recipe.model)
    extra = sorted(set(mc) - set(MODEL_KEYS))
    if extra:
        raise InvalidInput("model", f"only the keys {list(MODEL_KEYS)}", f"unknown {extra}")
    tc = recipe.train
    if max_steps is not None:
        tc = dataclasses.replace(tc, max_steps=int(max_steps), save_every=min(tc.save_every, int(max_steps)),
                                 sample_every=0)
    heads, groups = int(mc.get("motion_heads", 8)), int(mc.get("motion_norm_groups", 32))
    sd = load_sd_base(base)
    if stage == 1:
        if init is not None:
            raise InvalidInput("--init", "no init for stage 1 (set model.init in the recipe)", str(init))
        model = stage1_model(mc, sd, tc.seed)
    else:
        if init is None:
            raise InvalidInput("--init", "the stage-1 run folder for stage 2", None)
        model = load_trained(init)
        if mc.get("motion_module"):
            _load_motion_weights(model.denoiser, str(mc["motion_module"]), heads, groups)
    size = int(mc.get("image_size", 512))
    if size != 8 * int(model.denoiser.config.sample_size):
        raise InvalidInput("model.image_size", f"8 x the UNet's sample_size ({8 * int(model.denoiser.config.sample_size)})",
                           size)
    frames = 1 if stage == 1 else int(mc.get("frames", 12))
    shards = ShardDataset(data, size=size, identities=identities)
    ds = MagicPortraitClipDataset(shards, frames=frames, pairs_per_source=int(mc.get("pairs_per_source", 1)),
                                  min_frame_gap=int(mc.get("min_frame_gap", 30)),
                                  clip_stride=int(mc.get("clip_stride", 1)), seed=tc.seed, maps_fn=maps_fn)
    text = encode_prompt(sd.text_encoder, sd.tokenizer, PROMPT)
    module = MagicPortraitTrainModule(model, text, sd.vae, stage=stage,
                                      reference_drop=float(mc.get("reference_drop", 0.1)),
                                      noise_offset=float(mc.get("noise_offset", 0.0)),
                                      snr_gamma=float(mc.get("snr_gamma", 0.0)))
    if len(ds) < tc.batch_size:
        tc = dataclasses.replace(tc, batch_size=len(ds))
    outp = Path(output)
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "magicportrait_run.json").write_text(json.dumps(
        {"recipe": recipe.name, "stage": stage, "data": str(data), "items": len(ds), "frames": frames,
         "init": str(init if init is not None else mc.get("init")),
         "trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
         "frozen": module.frozen}, indent=1))

    def export(mod: nn.Module, dest: Path) -> None:
        m = inflate(cast(MagicPortraitTrainModule, mod).model, heads=heads, norm_groups=groups, seed=tc.seed)
        MagicPortraitPipeline.from_parts(m, sd).save_pretrained(dest)
        if stage == 2:  # what stage 2 trained, also in the AnimateDiff file layout (for other tools)
            from .checkpoints import MOTION_FILE, save_motion_module

            save_motion_module(m.denoiser, Path(dest) / MOTION_FILE)

    trainer = Trainer(module, ds, tc, outp, export_fn=export)
    latest = outp / "checkpoints" / "latest"
    trainer.run(resume="latest" if resume and latest.exists() else None)
    return outp / "final"
