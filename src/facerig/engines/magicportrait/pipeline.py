"""MagicPortrait sampling: :class:`MagicPortraitPipeline` and the release's context windows.

One call denoises a whole clip as the authors' ``pipeline_aggregation.py`` does (facts read from
their public code, commit 010332a; docs/magicportrait.md):

* the reference (the aligned source crop, [0, 1]) -> [-1, 1] -> VAE posterior MEAN x scaling factor;
  the reference UNet runs ONCE per call at t = 0 on it (:meth:`MagicPortraitModel.reference_bank`);
* the prompt "A close up of a person." is embedded once (both CFG halves use it: the release drops
  only the reference in the unconditional half);
* the guidance features (sum of the three encoders) of every frame;
* the release's scheduler: DDIM, v-prediction, zero-terminal-SNR rescale, "trailing" spacing,
  steps_offset 1, LINEAR betas 0.00085-0.012, clip_sample False (:func:`release_scheduler`);
* initial noise ``randn((1, 4, F, h, w), generator)`` (diffusers' ``randn_tensor``, as theirs);
* per step, per window of :func:`context_windows` (the same windows every step: their pipeline calls
  the ``uniform`` scheduler with ``step=0``): one batched ``[uncond, cond]`` denoiser call (row 0
  ignores the reference), the window's predictions SUMMED into per-frame accumulators with a counter;
  then the per-frame average, then guidance ``u + s (c - u)`` (scale 3.5), then the DDIM step;
* the VAE decodes frame by frame (``decode_chunk`` frames at a time).

Guidance features: the encoders are per-frame 2-D networks, so features of a frame do not depend on
the other frames. They are computed once for the whole clip (in chunks of ``context_frames`` frames)
when they fit in ``guidance_cache_mb``; longer clips compute them per window at each step (bounded
memory, more encoder time). Both give the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline as _DiffusionPipeline

from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["PROMPT", "RELEASED_SCHEDULER_CONFIG", "MagicPortraitPipeline", "context_windows", "release_scheduler"]

#: typed as Any: diffusers' lazy module hides the class's members from mypy
DiffusionPipeline: Any = _DiffusionPipeline

PROMPT = "A close up of a person."
#: configs/inference/inference.yaml's noise_scheduler_kwargs (zero-SNR options added by make_scheduler)
RELEASED_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                             "beta_schedule": "linear", "steps_offset": 1, "clip_sample": False}
_MODEL_INDEX = "model_index.json"
_MODEL_DIR = "magicportrait"
_GUIDANCE_TYPES = ("depth", "normal", "render")


def release_scheduler() -> Any:
    """The release's sampler: DDIM, v-prediction, zero-terminal SNR, trailing spacing, linear betas."""
    from facerig.engines.sd.schedulers import make_scheduler

    return make_scheduler("ddim", dict(RELEASED_SCHEDULER_CONFIG), prediction_type="v_prediction",
                          zero_terminal_snr=True, timestep_spacing="trailing")


def context_windows(num_frames: int, context_frames: int = 12, context_overlap: int = 1,
                    context_stride: int = 1, closed_loop: bool = True) -> list[list[int]]:
    """The frame windows of the release's ``uniform`` context scheduler as its pipeline calls it
    (``step=0``, so no per-step shift): windows of ``context_frames`` frames starting every
    ``context_frames - context_overlap`` frames, indices wrapping around the clip (the last window
    of 14 frames at 12/1 is ``[11, 12, 13, 0, ..., 8]``). One window ``[0..F-1]`` when
    ``num_frames <= context_frames``. ``context_stride > 1`` adds dilated windows as theirs does."""
    for name, v, lo in (("num_frames", num_frames, 1), ("context_frames", context_frames, 1),
                        ("context_stride", context_stride, 1), ("context_overlap", context_overlap, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidInput(name, f"an integer >= {lo}", v)
    f, size, overlap = int(num_frames), int(context_frames), int(context_overlap)
    if f <= size:
        return [list(range(f))]
    if overlap >= size:
        raise InvalidInput("context_overlap", f"less than context_frames ({size})", overlap)
    stride = min(int(context_stride), int(np.ceil(np.log2(f / size))) + 1)
    out: list[list[int]] = []
    for step in (1 << np.arange(stride)).tolist():
        hop = size * step - overlap
        for j in range(0, f + (0 if closed_loop else -overlap), hop):
            out.append([e % f for e in range(j, j + size * step, step)])
    return out


def _maps(frames: Any, name: str, channels: int) -> torch.Tensor:
    m = getattr(frames, name, None)
    if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[1] != channels or not m.is_floating_point():
        raise InvalidInput(f"frames.{name}", f"a float (F, {channels}, S, S) tensor in [0, 1]",
                           getattr(m, "shape", type(m).__name__))
    return m


class MagicPortraitPipeline(DiffusionPipeline):
    """MagicPortrait clip sampling (see the module docstring). Components: ``model``
    (:class:`~.model.MagicPortraitModel`, a plain attribute), ``vae``, ``text_encoder``,
    ``tokenizer``, ``scheduler``."""

    _optional_components: list[str] = []

    def __init__(self, model: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any) -> None:
        super().__init__()
        for attr in ("reference_bank", "guidance", "predict", "denoiser"):
            if not hasattr(model, attr):
                raise InvalidInput("model", "a MagicPortraitModel", type(model).__name__)
        te = int(text_encoder.config.hidden_size)
        ca = int(model.denoiser.config.cross_attention_dim)
        if ca != te:
            raise IncompatibleModel(f"MagicPortrait UNets expect text embeddings of width {ca}, the base's text "
                                    f"encoder gives {te} (a different base model?)")
        if int(vae.config.latent_channels) != 4:
            raise InvalidInput("vae", "an SD VAE with 4 latent channels", vae.config.latent_channels)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.model = model

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_parts(cls, model: Any, base: Any, *, scheduler: Any = None) -> MagicPortraitPipeline:
        """From a loaded :class:`~.model.MagicPortraitModel` and an :class:`~facerig.engines.sd.base.SDBase`
        (scheduler: :func:`release_scheduler` unless given)."""
        return cls(model, base.vae, base.text_encoder, base.tokenizer,
                   scheduler if scheduler is not None else release_scheduler())

    @classmethod
    def from_released(cls, ckpts_dir: str | os.PathLike[str], base: str | os.PathLike[str] | Any = None,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                      unet_config: Any = None, **released_kwargs: Any) -> MagicPortraitPipeline:
        """The released checkpoints (``ckpts_dir``, six .pth) on the SD 1.5 base ``base`` (path, an
        SDBase, or None for $FACERIG_SD15). The UNet config: ``unet_config`` if given, else the
        base's ``unet/config.json``, else the bundled SD 1.5 config. ``released_kwargs`` go to
        :func:`~.model.load_released` (tests pass tiny ``guidance_config`` etc.)."""
        from facerig.engines.sd.base import bundled_config, load_sd_base

        from .model import load_released

        sd: Any = base if hasattr(base, "vae") and hasattr(base, "text_encoder") else load_sd_base(base, device=device,
                                                                                            dtype=dtype)
        cfg = unet_config if unet_config is not None else (sd.unet_config or bundled_config("unet"))
        model = load_released(ckpts_dir, cfg, device=device, dtype=dtype, **released_kwargs)
        return cls.from_parts(model, sd)

    # ---- pieces --------------------------------------------------------------------------------
    @property
    def _param(self) -> torch.Tensor:
        return next(self.model.denoiser.parameters())

    @property
    def vae_scale_factor(self) -> int:
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def image_size(self) -> int:
        """8 x the denoiser's sample_size (512 for SD 1.5)."""
        return int(self.model.denoiser.config.sample_size) * self.vae_scale_factor

    def prompt_embeds(self) -> torch.Tensor:
        from facerig.engines.sd.prompt import encode_prompt

        p = self._param
        return encode_prompt(self.text_encoder, self.tokenizer, PROMPT, device=p.device, dtype=p.dtype)

    def reference_latent(self, reference: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) in [0, 1] -> the scaled VAE posterior mean (1, 4, S/8, S/8)."""
        from facerig.engines.sd.latents import encode_images

        with torch.no_grad():
            return encode_images(self.vae, reference * 2.0 - 1.0, scaled=True)

    def reference_bank_for(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """The reference UNet's states for a (1, 3, S, S) reference in [0, 1] (cache it across calls
        with the same source and pass it as ``reference_bank=``)."""
        return list(self.model.reference_bank(self.reference_latent(reference), self.prompt_embeds()))

    def guidance_features(self, frames: Any, idx: Sequence[int] | None = None) -> torch.Tensor:
        """(1, C0, n, h, w) guidance features of the frames ``idx`` (all when None)."""
        p = self._param
        sel = list(range(int(frames.depth.shape[0]))) if idx is None else list(idx)
        maps = [_maps(frames, n, 3)[sel].to(device=p.device, dtype=p.dtype).permute(1, 0, 2, 3)[None]
                for n in _GUIDANCE_TYPES]
        return self.model.guidance(*maps)

    def decode(self, latents: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(1, 4, F, h, w) scaled latents -> (F, 3, S, S) float in [0, 1], ``chunk`` frames per VAE call."""
        from facerig.engines.sd.latents import decode_latents

        z = latents[0].permute(1, 0, 2, 3)
        out = []
        with torch.no_grad():
            for i in range(0, z.shape[0], max(1, int(chunk))):
                out.append(decode_latents(self.vae, z[i:i + max(1, int(chunk))], scaled=True).float())
        return (torch.cat(out) / 2 + 0.5).clamp(0, 1)

    # ---- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, frames: Any, num_inference_steps: int = 20, guidance_scale: float = 3.5,
                 context_frames: int = 12, context_overlap: int = 1, generator: torch.Generator | None = None,
                 progress: bool | Callable[[int, int], None] = False, output_type: str = "np",
                 latents: torch.Tensor | None = None, *, reference_bank: Sequence[torch.Tensor] | None = None,
                 context_stride: int = 1, decode_chunk: int = 1, guidance_cache_mb: float = 2048.0,
                 ) -> np.ndarray | torch.Tensor:
        """Denoise the clip ``frames`` (a :class:`~.conditions.MagicPortraitFrames` or any object
        with ``reference`` (1, 3, S, S) and ``depth``/``normal``/``render`` (F, 3, S, S) in [0, 1]).

        Returns ``"np"``: (F, S, S, 3) uint8; ``"pt"``: (F, 3, S, S) float in [0, 1];
        ``"latent"``: (1, 4, F, h, w). ``progress``: True for a tqdm bar, or a callable getting
        ``(done, total)`` over steps x windows. ``latents``: the initial noise (else drawn from
        ``generator``). ``guidance_scale <= 1``: conditional half only (no CFG), as the release."""
        from diffusers.utils.torch_utils import randn_tensor

        if output_type not in ("np", "pt", "latent"):
            raise InvalidInput("output_type", "one of np, pt, latent", output_type)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidInput("num_inference_steps", "an integer >= 1", num_inference_steps)
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(float(guidance_scale)):
            raise InvalidInput("guidance_scale", "a finite number", guidance_scale)
        ref = _maps(frames, "reference", 3)
        depth = _maps(frames, "depth", 3)
        if ref.shape[0] != 1:
            raise InvalidInput("frames.reference", "one (1, 3, S, S) image", tuple(ref.shape))
        n, s = int(depth.shape[0]), int(depth.shape[-1])
        for name in _GUIDANCE_TYPES:
            m = _maps(frames, name, 3)
            if tuple(m.shape) != (n, 3, s, s) or tuple(ref.shape[-2:]) != (s, s):
                raise InvalidInput(f"frames.{name}", f"({n}, 3, {s}, {s}) like frames.depth and the reference",
                                   tuple(m.shape))
        if s % self.vae_scale_factor:
            raise InvalidInput("frames", f"a size S divisible by {self.vae_scale_factor}", s)
        p = self._param
        dev, dt = p.device, p.dtype
        h = w = s // self.vae_scale_factor
        shape = (1, 4, n, h, w)
        windows = context_windows(n, context_frames, context_overlap, context_stride)
        cfg = float(guidance_scale) > 1.0

        text = self.prompt_embeds()
        bank = list(reference_bank) if reference_bank is not None else self.reference_bank_for(ref)
        feat_bytes = n * int(self.model.denoiser.conv_in.out_channels) * h * w * p.element_size()
        cached: torch.Tensor | None = None
        if feat_bytes <= guidance_cache_mb * 2 ** 20:
            step = max(1, int(context_frames))
            cached = torch.cat([self.guidance_features(frames, range(i, min(n, i + step)))
                                for i in range(0, n, step)], dim=2)

        self.scheduler.set_timesteps(num_inference_steps, device=dev)
        if latents is None:
            x = randn_tensor(shape, generator=generator, device=dev, dtype=dt)
        else:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
                raise InvalidInput("latents", f"a {shape} tensor", getattr(latents, "shape", type(latents).__name__))
            x = latents.to(device=dev, dtype=dt)
        x = x * self.scheduler.init_noise_sigma

        total = len(self.scheduler.timesteps) * len(windows)
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="MagicPortrait", unit="window")
        done = 0
        halves = 2 if cfg else 1
        bank_obj = self.model.bank
        try:
            bank_obj.set_drop([True, False] if cfg else None)
            for t in self.scheduler.timesteps:
                acc = torch.zeros((halves, *shape[1:]), device=dev, dtype=dt)
                counter = torch.zeros((1, 1, n, 1, 1), device=dev, dtype=dt)
                for win in windows:
                    xin = self.scheduler.scale_model_input(x[:, :, win].repeat(halves, 1, 1, 1, 1), t)
                    g = cached[:, :, win] if cached is not None else self.guidance_features(frames, win)
                    pred = self.model.predict(xin, t, text, g.repeat(halves, 1, 1, 1, 1), bank)
                    acc[:, :, win] = acc[:, :, win] + pred.to(dt)
                    counter[:, :, win] = counter[:, :, win] + 1
                    done += 1
                    if bar is not None:
                        bar.update(1)
                    elif callable(progress):
                        progress(done, total)
                avg = acc / counter
                if cfg:
                    u, c = avg.chunk(2)
                    model_out = u + float(guidance_scale) * (c - u)
                else:
                    model_out = avg
                x = self.scheduler.step(model_out, t, x, eta=0.0, generator=generator).prev_sample
        finally:
            bank_obj.set_drop(None)
            if bar is not None:
                bar.close()
        if output_type == "latent":
            return x
        img = self.decode(x, decode_chunk)
        if output_type == "pt":
            return img
        return (img * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    # ---- device --------------------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> MagicPortraitPipeline:
        """Move the base parts (diffusers) and the MagicPortrait networks."""
        super().to(*args, **kwargs)
        for m in (self.model.reference_unet, self.model.denoiser, *self.model.guidance_encoders.values()):
            m.to(*args, **kwargs)
        return self

    # ---- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike[str], **_: Any) -> Path:
        """``dir/magicportrait/`` (the networks as safetensors + configs), the base's ``vae/``,
        ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and ``model_index.json``."""
        from safetensors.torch import save_file

        from .checkpoints import FrameGroupNorm

        d = Path(save_directory)
        m = d / _MODEL_DIR
        m.mkdir(parents=True, exist_ok=True)
        mp = self.model

        def _save(mod: Any, name: str) -> None:
            save_file({k: v.detach().contiguous().cpu() for k, v in mod.state_dict().items()},
                      str(m / f"{name}.safetensors"))

        _save(mp.reference_unet, "reference_unet")
        _save(mp.denoiser, "denoiser")
        for t, enc in mp.guidance_encoders.items():
            _save(enc, f"guidance_encoder_{t}")
        groups = next((x.num_groups for x in mp.denoiser.modules() if isinstance(x, FrameGroupNorm)), None)
        meta = {"format": "facerig-magicportrait-1",
                "reference_unet_config": dict(mp.reference_unet.config),
                "denoiser_config": dict(mp.denoiser.config),
                "guidance_config": {t: dict(e.config) for t, e in mp.guidance_encoders.items()},
                "motion_norm_groups": groups,
                "bank_dtype": str(mp.bank_dtype).replace("torch.", "") if mp.bank_dtype is not None else None}
        (m / "config.json").write_text(json.dumps(meta, indent=2, default=list) + "\n")
        self.vae.save_pretrained(str(d / "vae"))
        self.text_encoder.save_pretrained(str(d / "text_encoder"))
        self.tokenizer.save_pretrained(str(d / "tokenizer"))
        self.scheduler.save_pretrained(str(d / "scheduler"))
        index = {"_class_name": type(self).__name__, "_facerig": "magicportrait-pipeline",
                 "model": ["facerig.engines.magicportrait.model", "MagicPortraitModel"],
                 "vae": ["diffusers", type(self.vae).__name__],
                 "text_encoder": ["transformers", type(self.text_encoder).__name__],
                 "tokenizer": ["transformers", type(self.tokenizer).__name__],
                 "scheduler": ["diffusers", type(self.scheduler).__name__]}
        (d / _MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **_: Any) -> MagicPortraitPipeline:
        """A folder written by :meth:`save_pretrained` (local only; strict key matching)."""
        import diffusers
        from diffusers import UNet2DConditionModel, UNetMotionModel
        from safetensors.torch import load_file

        from facerig.engines.sd.base import load_sd_base

        from .checkpoints import _load_into, _place, per_frame_motion_norm, strip_reference_tail
        from .guidance import GuidanceEncoder
        from .model import MagicPortraitModel

        d = Path(pretrained_model_name_or_path)
        m = d / _MODEL_DIR
        if not (d / _MODEL_INDEX).is_file() or not (m / "config.json").is_file():
            raise AssetMissing("MagicPortrait pipeline folder (model_index.json, magicportrait/, vae/, ...)", str(d),
                               "write one with MagicPortraitPipeline.save_pretrained")
        meta = json.loads((m / "config.json").read_text())
        info = json.loads((d / _MODEL_INDEX).read_text())

        def _load(mod: Any, name: str) -> Any:
            f = m / f"{name}.safetensors"
            if not f.is_file():
                raise AssetMissing(f"MagicPortrait {name} weights", str(f), "write the folder with save_pretrained")
            _load_into(mod, load_file(str(f)), str(f), layout="the facerig MagicPortrait pipeline layout")
            return _place(mod, device, dtype)

        def _cfg(c: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in c.items() if not str(k).startswith("_")}

        ref = _load(strip_reference_tail(UNet2DConditionModel.from_config(_cfg(meta["reference_unet_config"]))),
                    "reference_unet")
        den = UNetMotionModel.from_config(_cfg(meta["denoiser_config"]))
        per_frame_motion_norm(den, meta.get("motion_norm_groups"))
        den = _load(den, "denoiser")
        encs = {t: _load(GuidanceEncoder(**_cfg(c)), f"guidance_encoder_{t}") for t, c in meta["guidance_config"].items()}
        bd = meta.get("bank_dtype")
        model = MagicPortraitModel(ref, den, encs, bank_dtype=getattr(torch, bd) if bd else None)
        base = load_sd_base(d, device=device, dtype=dtype)
        sched_name = str(info.get("scheduler", ["diffusers", "DDIMScheduler"])[1])
        sched_cls = getattr(diffusers, sched_name, None)
        if sched_cls is None or not sched_name.endswith("Scheduler"):
            raise InvalidInput(str(d / _MODEL_INDEX), "a diffusers scheduler class name", sched_name)
        return cls(model, base.vae, base.text_encoder, base.tokenizer, sched_cls.from_config(base.scheduler_config))
