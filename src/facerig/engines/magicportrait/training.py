"""Training MagicPortrait, stage 1 (frame pairs) and stage 2 (clips): docs/magicportrait-training.md.

The authors' snapshot has no training code; this follows the lineage (Champ, Moore-AnimateAnyone):

* stage 1: (reference, target) frame pairs of one person; the denoiser's spatial weights, the
  reference UNet (less its dead tail) and the three guidance encoders are trained; the temporal
  (motion) modules are present in the ``UNetMotionModel`` but have ZERO output projections (an exact
  identity, so the denoiser is the 2D UNet) and are frozen: they are untouched by stage 1;
* stage 2: clips of F consecutive frames + a reference frame; only the motion modules are trained
  (fresh zero-output modules, or AnimateDiff's ``motion_module.pth`` via :func:`load_motion_adapter`),
  everything else frozen, initialised from a stage-1 run.

Objective (:class:`MagicPortraitTrainModule`): v-prediction MSE on the release's schedule (linear
betas rescaled to zero terminal SNR, :func:`~.pipeline.release_scheduler`), the reference UNet at
t = 0 on the scaled reference latent -> the readers' bank, guidance features added after conv_in.
With probability ``reference_drop`` (per batch) the reference is dropped (readers see their own
tokens only: the unconditional half the sampler's CFG uses).

Output: ``OUT/final`` is a :meth:`~.pipeline.MagicPortraitPipeline.save_pretrained` folder
(``model_index.json``), loadable by ``MagicPortraitPipeline.from_pretrained`` and :func:`load_trained`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from facerig.errors import AssetMissing, InvalidInput

__all__ = [
    "MODEL_KEYS",
    "MagicPortraitClipDataset",
    "MagicPortraitTrainModule",
    "conditioner_maps",
    "fresh_motion_adapter",
    "is_motion_param",
    "load_trained",
    "release_alphas_cumprod",
    "train_magicportrait",
    "zero_motion_outputs",
]

log = logging.getLogger(__name__)

MAP_NAMES = ("depth", "normal", "render")


def release_alphas_cumprod() -> torch.Tensor:
    """The release's training schedule: linear betas 0.00085..0.012 over 1000 steps rescaled to zero
    terminal SNR (the scheduler :func:`~.pipeline.release_scheduler` samples with), float64."""
    from .pipeline import release_scheduler

    return torch.as_tensor(release_scheduler().alphas_cumprod, dtype=torch.float64)


def is_motion_param(name: str) -> bool:
    """A parameter of the denoiser's temporal (AnimateDiff) modules."""
    return "motion_modules." in name


def zero_motion_outputs(denoiser: Any) -> int:
    """Zero the output projections of every temporal module (AnimateDiff's initialisation: the
    module is then an exact identity); returns how many were zeroed."""
    n = 0
    with torch.no_grad():
        for name, mod in denoiser.named_modules():
            if is_motion_param(name + ".") and name.endswith("proj_out") and isinstance(mod, nn.Linear):
                mod.weight.zero_()
                if mod.bias is not None:
                    mod.bias.zero_()
                n += 1
    return n


def fresh_motion_adapter(unet_config: Mapping[str, Any], *, heads: int = 8, norm_groups: int = 32,
                         max_len: int = 32) -> Any:
    """A MotionAdapter for the UNet config with zero output projections (identity modules)."""
    from diffusers import MotionAdapter

    from .checkpoints import per_frame_motion_norm

    ad = MotionAdapter(block_out_channels=tuple(unet_config["block_out_channels"]),
                       motion_layers_per_block=int(unet_config.get("layers_per_block", 2)),
                       motion_num_attention_heads=int(heads), motion_norm_num_groups=int(norm_groups),
                       motion_max_seq_length=int(max_len), use_motion_mid_block=True)
    per_frame_motion_norm(ad)
    zero_motion_outputs(ad)
    return ad


def load_motion_weights(denoiser: Any, path: str | os.PathLike[str], unet_config: Any, *, heads: int = 8,
                        norm_groups: int = 32) -> None:
    """AnimateDiff's ``motion_module.pth`` into the denoiser's temporal modules (strict on them)."""
    from .checkpoints import load_motion_adapter

    ad = load_motion_adapter(path, unet_config, num_attention_heads=heads, norm_num_groups=norm_groups)
    mine = {k for k in denoiser.state_dict() if is_motion_param(k)}
    theirs = ad.state_dict()
    if set(theirs) != mine:
        from facerig.errors import CheckpointMismatch

        raise CheckpointMismatch(str(path), sorted(mine - set(theirs))[:5], sorted(set(theirs) - mine)[:5], {},
                                 layout="the denoiser's motion modules")
    denoiser.load_state_dict(theirs, strict=False)


# ---- data --------------------------------------------------------------------------------------
def _uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


_CONDITIONERS: dict[tuple[int, int], Any] = {}


def conditioner_maps(shards: Any, index: int, size: int) -> dict[str, torch.Tensor]:
    """The default ``maps_fn``: depth / normal / render (3, S, S) in [0, 1] of sample ``index`` from
    :class:`~.conditions.FacerigMagicConditioner` on its own aligned crop (the frame's own params as
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
    """Items ``{"reference": (3, S, S), "target": (3, F, S, S), "depth"/"normal"/"render": (3, F, S, S)}``
    in [0, 1] from prepared shards. ``frames`` = 1: stage-1 pairs (reference, target) of one identity
    (:class:`facerig.train.data.PairSampler`, ``pairs_per_source`` epochs, fixed at construction);
    ``frames`` > 1: stage-2 clips of ``frames`` consecutive samples of one identity (shard order =
    frame order for videos) with a reference drawn (seeded) among that identity's other samples.
    ``maps_fn(shards, index, size) -> {depth, normal, render}``: the target maps (default
    :func:`conditioner_maps`)."""

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
            rows = shards.samples
            by: dict[str, list[int]] = {}
            for i, r in enumerate(rows):
                by.setdefault(str(r["identity"]), []).append(i)
            rng = random.Random(seed)
            for ident in sorted(by):
                idx = by[ident]
                for s in range(0, len(idx) - self.frames + 1, max(1, int(clip_stride))):
                    clip = idx[s:s + self.frames]
                    others = [j for j in idx if j not in clip] or clip
                    self.items.append((rng.choice(others), clip))
        if not self.items:
            raise InvalidInput("data", f"identities with enough samples ({max(2, self.frames)} or more)",
                               f"{len(shards)} samples")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r, clip = self.items[i]
        ref = (self.shards[r]["image"] + 1) / 2
        size = int(ref.shape[-1])
        tg: list[torch.Tensor] = []
        maps: dict[str, list[torch.Tensor]] = {n: [] for n in MAP_NAMES}
        for t in clip:
            tg.append((self.shards[t]["image"] + 1) / 2)
            m = self.maps_fn(self.shards, t, size)
            for n in MAP_NAMES:
                maps[n].append(torch.as_tensor(m[n]).float())
        out = {"reference": ref.clamp(0, 1), "target": torch.stack(tg, 1).clamp(0, 1)}
        out.update({n: torch.stack(v, 1) for n, v in maps.items()})
        return out


# ---- the objective -----------------------------------------------------------------------------
class MagicPortraitTrainModule(nn.Module):
    """The v-prediction objective of one stage (see the module docstring).

    ``model``: a :class:`~.model.MagicPortraitModel`; ``text_embeds``: the fixed prompt's (1, 77, D)
    embedding; ``vae`` (frozen, not in the state dict): needed only for batches of images (else give
    ``reference_latent`` (B, 4, h, w) and ``target_latent`` (B, 4, F, h, w), both scaled).
    ``reference_drop``: per-batch probability of dropping the reference (CFG's unconditional half).
    """

    alphas_cumprod: torch.Tensor
    text_embeds: torch.Tensor

    def __init__(self, model: Any, text_embeds: torch.Tensor, vae: Any = None, *, stage: int,
                 reference_drop: float = 0.1, alphas_cumprod: torch.Tensor | None = None,
                 freeze_dead_tail: bool = True):
        super().__init__()
        for attr in ("reference_unet", "denoiser", "guidance_encoders", "recorder"):
            if not hasattr(model, attr):
                raise InvalidInput("model", "a MagicPortraitModel", type(model).__name__)
        if stage not in (1, 2):
            raise InvalidInput("stage", "1 or 2", stage)
        if not 0.0 <= float(reference_drop) < 1.0:
            raise InvalidInput("reference_drop", "a probability in [0, 1)", reference_drop)
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 or text_embeds.shape[0] != 1:
            raise InvalidInput("text_embeds", "the prompt's (1, 77, D) embedding", getattr(text_embeds, "shape", None))
        self.stage, self.reference_drop = int(stage), float(reference_drop)
        self.reference_unet = model.reference_unet
        self.denoiser = model.denoiser
        self.guidance_encoders = nn.ModuleDict(dict(model.guidance_encoders))
        self._model = [model]  # a list: the dataclass is not a module
        self.register_buffer("text_embeds", text_embeds.detach().clone(), persistent=False)
        ac = release_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self._vae = [vae]
        if vae is not None:
            vae.requires_grad_(False)
            vae.eval()
        self.frozen: list[str] = []
        if self.stage == 1:
            self.requires_grad_(True)
            for n, p in self.denoiser.named_parameters():
                p.requires_grad_(not is_motion_param(n))
            if freeze_dead_tail:
                self.frozen = self._dead_tail()
                params = dict(self.reference_unet.named_parameters())
                for n in self.frozen:
                    params[n].requires_grad_(False)
        else:
            self.requires_grad_(False)
            for n, p in self.denoiser.named_parameters():
                p.requires_grad_(is_motion_param(n))

    @property
    def model(self) -> Any:
        return self._model[0]

    @property
    def vae(self) -> Any:
        return self._vae[0]

    def _dead_tail(self) -> list[str]:
        """The reference UNet's parameters no recorded state depends on (a backward probe)."""
        u = self.reference_unet
        p0 = next(u.parameters())
        cross = int(u.config.cross_attention_dim)
        s = int(u.config.sample_size)
        with torch.enable_grad():
            for p in u.parameters():
                p.grad = None
            x = torch.zeros(1, 4, s, s, device=p0.device, dtype=p0.dtype)
            text = torch.zeros(1, 4, cross, device=p0.device, dtype=p0.dtype)
            t = torch.zeros(1, device=p0.device, dtype=torch.long)
            states = self.model.recorder.capture(lambda: u(x, t, text), stop_early=False)
            cast(torch.Tensor, sum(st.float().sum() for st in states)).backward()
        dead = [n for n, p in u.named_parameters() if p.requires_grad and p.grad is None]
        for p in u.parameters():
            p.grad = None
        return dead

    def _latents(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "reference_latent" in batch and "target_latent" in batch:
            return batch["reference_latent"], batch["target_latent"]
        if self.vae is None:
            raise InvalidInput("batch", "reference_latent/target_latent or a module with a vae", sorted(batch))
        missing = [k for k in ("reference", "target") if k not in batch]
        if missing:
            raise InvalidInput("batch", "images 'reference' (B, 3, S, S) and 'target' (B, 3, F, S, S)",
                               f"missing {missing}")
        from facerig.engines.sd.latents import encode_images

        ref, tgt = batch["reference"], batch["target"]
        if tgt.ndim != 5:
            raise InvalidInput("batch['target']", "(B, 3, F, S, S) in [0, 1]", tuple(tgt.shape))
        b, _, f = tgt.shape[:3]
        with torch.no_grad():
            rl = encode_images(self.vae, ref * 2 - 1, scaled=True)
            frames = tgt.permute(0, 2, 1, 3, 4).reshape(b * f, *tgt.shape[1:2], *tgt.shape[3:])
            tl = encode_images(self.vae, frames * 2 - 1, scaled=True)
        tl = tl.reshape(b, f, *tl.shape[1:]).permute(0, 2, 1, 3, 4)
        return rl, tl

    def forward(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(batch, generator)

    def loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
             timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             drop: bool | None = None) -> torch.Tensor:
        from .guidance import guidance_features

        ref_lat, x0 = self._latents(batch)
        p = next(self.denoiser.parameters())
        ref_lat, x0 = ref_lat.to(p.device, p.dtype), x0.to(p.device, torch.float32)
        b, dev = x0.shape[0], x0.device
        t = timesteps if timesteps is not None else torch.randint(0, self.alphas_cumprod.shape[0], (b,),
                                                                  generator=generator, device="cpu")
        t = torch.as_tensor(t).to(dev).long().expand(b)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=torch.float32)
        noise = noise.to(dev, torch.float32)
        if drop is None:
            drop = bool(self.reference_drop > 0 and
                        torch.rand((), generator=generator).item() < self.reference_drop)
        a = self.alphas_cumprod.to(dev)[t].float().view(b, 1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        v = a.sqrt() * noise - (1 - a).sqrt() * x0
        grad = self.stage == 1 and torch.is_grad_enabled()
        text = self.text_embeds
        with torch.set_grad_enabled(grad):
            maps = [batch[n].to(dev) for n in MAP_NAMES]
            feats = guidance_features(cast(Any, dict(self.guidance_encoders.items())), *maps)
            bank = None
            if not drop:
                ru = self.reference_unet
                t0 = torch.zeros(b, device=dev, dtype=torch.long)
                txt = text.to(dev, p.dtype).expand(b, -1, -1)
                bank = self.model.recorder.capture(lambda: ru(ref_lat, t0, txt))
        pred = self.model.predict(x_t.to(p.dtype), t, text, feats, bank, uncond=drop)
        return F.mse_loss(pred.float(), v)


# ---- model construction ------------------------------------------------------------------------
MODEL_KEYS = ("init", "unet", "guidance", "motion_heads", "motion_norm_groups", "motion_module", "frames",
              "image_size", "pairs_per_source", "min_frame_gap", "clip_stride", "reference_drop")


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def stage1_model(mc: Mapping[str, Any], base: Any, seed: int = 0) -> Any:
    """The stage-1 MagicPortraitModel of a recipe's ``model`` section: ``init`` = ``config`` (fresh
    UNets of ``model.unet`` + guidance encoders of ``model.guidance``), ``sd`` (both UNets from the
    base's SD UNet, fresh guidance encoders), a released ckpts folder or a facerig pipeline folder
    (fine-tuning; its motion modules are reset to identity). bank dtype: None (fp32 states)."""
    from diffusers import UNet2DConditionModel

    from .checkpoints import build_denoiser, strip_reference_tail
    from .guidance import GuidanceEncoder
    from .model import MagicPortraitModel
    from .pipeline import MagicPortraitPipeline

    init = str(mc.get("init", "sd"))
    heads, groups = int(mc.get("motion_heads", 8)), int(mc.get("motion_norm_groups", 32))
    if init in ("config", "sd"):
        if init == "sd":
            if base is None or not getattr(base, "unet_config", None):
                raise AssetMissing("the SD 1.5 UNet (unet/ of the base) for model.init 'sd'", str(getattr(base, "source", None)),
                                   "give --base a diffusers folder with unet/")
            udir = Path(base.source) / "unet"
            ref = strip_reference_tail(UNet2DConditionModel.from_pretrained(udir))
            den2d = UNet2DConditionModel.from_pretrained(udir)
        else:
            if "unet" not in mc:
                raise InvalidInput("model.unet", "a UNet config for init 'config'", None)
            ref = strip_reference_tail(_seeded(seed + 1, lambda: UNet2DConditionModel(**dict(mc["unet"]))))
            den2d = _seeded(seed + 2, lambda: UNet2DConditionModel(**dict(mc["unet"])))
        cfg = dict(den2d.config)
        ad = _seeded(seed + 3, lambda: fresh_motion_adapter(cfg, heads=heads, norm_groups=groups))
        den = build_denoiser(den2d, ad)
        gcfg = dict(mc.get("guidance", {}))
        encs = {t: _seeded(seed + 10 + i, lambda: GuidanceEncoder(**gcfg)) for i, t in enumerate(MAP_NAMES)}
        model = MagicPortraitModel(ref, den, encs, bank_dtype=None)
    else:
        if (Path(init) / "model_index.json").is_file() or (Path(init) / "final" / "model_index.json").is_file():
            model = load_trained(init)
        else:
            model = MagicPortraitPipeline.from_released(init, base, motion_heads=heads, motion_norm_groups=groups).model
        zero_motion_outputs(model.denoiser)
        model.bank.round_to = model.bank_dtype = None
    return model


def load_trained(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> Any:
    """The MagicPortraitModel of a training run (``RUN/final``) or of a pipeline folder."""
    from .pipeline import MagicPortraitPipeline

    d = Path(run_dir)
    if not (d / "model_index.json").is_file() and (d / "final" / "model_index.json").is_file():
        d = d / "final"
    return MagicPortraitPipeline.from_pretrained(d, device=device, dtype=dtype).model


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
    resume: bool | str | None = None,
    identities: Sequence[str] | None = None,
    maps_fn: Callable[[Any, int, int], Mapping[str, torch.Tensor]] | None = None,
) -> Path:
    """Train one stage on prepared shards with a recipe (``configs/magicportrait/*.yaml`` or a path);
    returns ``OUTPUT/final`` (a MagicPortraitPipeline folder). ``base``: SD 1.5 diffusers folder
    (VAE, text encoder, tokenizer; default ``$FACERIG_SD15``). ``init``: stage 2's stage-1 run (or
    pipeline folder); for stage 1 it overrides ``model.init``. ``resume``: continue from the run's
    latest checkpoint."""
    from facerig.engines.sd.base import load_sd_base
    from facerig.engines.sd.prompt import encode_prompt
    from facerig.train.config import load_recipe
    from facerig.train.data import ShardDataset
    from facerig.train.trainer import Trainer

    from .pipeline import PROMPT, MagicPortraitPipeline

    if stage not in (1, 2):
        raise InvalidInput("--stage", "1 or 2", stage)
    recipe = load_recipe(config, engine="magicportrait")
    if recipe.engine != "magicportrait":
        raise InvalidInput("--config", "a magicportrait recipe", recipe.engine)
    if recipe.stage != stage:
        raise InvalidInput("--config", f"a stage-{stage} recipe", f"{recipe.name} (stage {recipe.stage})")
    mc = dict(recipe.model)
    extra = sorted(set(mc) - set(MODEL_KEYS))
    if extra:
        raise InvalidInput("model", f"only the keys {list(MODEL_KEYS)}", f"unknown {extra}")
    tc = recipe.train
    if max_steps is not None:
        tc = dataclasses.replace(tc, max_steps=int(max_steps), save_every=min(tc.save_every, int(max_steps)),
                                 sample_every=0)
    sd = load_sd_base(base)
    if stage == 1:
        if init is not None:
            mc["init"] = str(init)
        model = stage1_model(mc, sd, tc.seed)
    else:
        if init is None:
            raise InvalidInput("--init", "the stage-1 run folder for stage 2", None)
        model = load_trained(init)
        model.bank.round_to = model.bank_dtype = None
        if mc.get("motion_module"):
            load_motion_weights(model.denoiser, mc["motion_module"], dict(model.denoiser.config),
                                heads=int(mc.get("motion_heads", 8)), norm_groups=int(mc.get("motion_norm_groups", 32)))
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
                                      reference_drop=float(mc.get("reference_drop", 0.1)))
    if len(ds) < tc.batch_size:
        tc = dataclasses.replace(tc, batch_size=len(ds))
    outp = Path(output)
    outp.mkdir(parents=True, exist_ok=True)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    (outp / "magicportrait_run.json").write_text(json.dumps(
        {"recipe": recipe.name, "stage": stage, "data": str(data), "items": len(ds), "frames": frames,
         "init": str(init if init is not None else mc.get("init")), "trainable_parameters": trainable,
         "frozen_dead_tail": module.frozen}, indent=1))

    def export(mod: nn.Module, dest: Path) -> None:
        MagicPortraitPipeline.from_parts(cast(MagicPortraitTrainModule, mod).model, sd).save_pretrained(dest)

    trainer = Trainer(module, ds, tc, outp, export_fn=export)
    latest = outp / "checkpoints" / "latest"
    trainer.run(resume="latest" if resume and latest.exists() else None)
    return outp / "final"
