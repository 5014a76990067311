"""The RigFace sampling pipeline: conditions -> edited aligned crop (docs/rigface.md).

:class:`RigFacePipeline` is a diffusers ``DiffusionPipeline`` with the modules ``unets``
(:class:`~.model.RigFaceUNets`), ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler``
(UniPC as released). One call:

1. the fixed prompt's embedding (computed once per encoder, :func:`facerig.engines.sd.prompt.encode_prompt`);
2. the identity states of the source: the identity UNet run once at t = 0 on the UNSCALED source
   latent (posterior mean); cached per source (by content), so every step and every further edit
   of the same source reuses them (:meth:`RigFacePipeline.identity_states_for`);
3. the background and render latents (unscaled posterior means), encoded once per call;
4. noise in the scaled latent space, ``num_inference_steps`` UniPC steps (50 by default, as
   released), each ONE conditional UNet call on a batch of one: the release's "guidance" batch is
   two identical copies of the conditional batch, so it would change nothing and cost twice;
5. decode ``latents / scaling_factor`` -> uint8 RGB crop.

``save_pretrained(dir)`` writes ``dir/unets/`` (the RigFace layout, see
:meth:`~.model.RigFaceUNets.save_pretrained`), ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/`` and ``model_index.json``; :meth:`RigFacePipeline.from_pretrained` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline as _DiffusionPipeline

from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["RigFacePipeline"]

#: typed as Any: diffusers' lazy module hides the class's members from mypy
DiffusionPipeline: Any = _DiffusionPipeline

_MODEL_INDEX = "model_index.json"


def _fingerprint(t: torch.Tensor) -> str:
    a = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha1(a.tobytes()).hexdigest() + str(tuple(a.shape))


class RigFacePipeline(DiffusionPipeline):
    """RigFace sampling (see the module docstring)."""

    model_cpu_offload_seq = "unets->vae"
    _optional_components: list[str] = []

    def __init__(self, unets: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 identity_cache_size: int = 4) -> None:
        super().__init__()
        if not hasattr(unets, "identity_states") or not hasattr(unets, "predict_noise"):
            raise InvalidInput("unets", "a RigFaceUNets", type(unets).__name__)
        te_dim = int(text_encoder.config.hidden_size)
        if int(unets.cross_attention_dim) != te_dim:
            raise IncompatibleModel(f"RigFace UNets expect text embeddings of width {unets.cross_attention_dim}, "
                                    f"the base's text encoder gives {te_dim} (a different base model?)")
        if int(vae.config.latent_channels) != 4:
            raise InvalidInput("vae", "an SD VAE with 4 latent channels", vae.config.latent_channels)
        self.register_modules(unets=unets, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)
        self._identity_cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self._identity_cache_size = int(identity_cache_size)

    # ---- pieces --------------------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def image_size(self) -> int:
        """The side of the crops the UNets were built for (sample_size x the VAE's down-sampling)."""
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unets.unet_denoise.config.sample_size) * down

    def prompt_embeds(self) -> torch.Tensor:
        from facerig.engines.sd.prompt import encode_prompt

        return encode_prompt(self.text_encoder, self.tokenizer, self.unets.prompt, device=self.unets.device,
                             dtype=self.unets.dtype)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        from facerig.engines.sd.latents import encode_images

        return encode_images(self.vae, images, scaled=False)

    def identity_states_for(self, conditions: Any) -> list[torch.Tensor]:
        """The identity UNet's states for ``conditions.source`` (cached by the source's content:
        the same source -- every edit of one photo -- runs the identity UNet once)."""
        src = getattr(conditions, "source", conditions)
        if not isinstance(src, torch.Tensor) or src.ndim != 4 or src.shape[:2] != (1, 3):
            raise InvalidInput("conditions.source", "a (1, 3, S, S) tensor in [-1, 1]", getattr(src, "shape", src))
        key = f"{id(self.unets)}:{self.unets.dtype}:{_fingerprint(src)}"
        if key in self._identity_cache:
            self._identity_cache.move_to_end(key)
            return self._identity_cache[key]
        with torch.no_grad():
            states = self.unets.identity_states(self._encode(src), self.prompt_embeds())
        self._identity_cache[key] = states
        while len(self._identity_cache) > self._identity_cache_size:
            self._identity_cache.popitem(last=False)
        return states

    def clear_identity_cache(self) -> None:
        self._identity_cache.clear()

    def _check(self, conditions: Any, num_inference_steps: int) -> None:
        for name in ("source", "background", "render", "expression", "expression_kind"):
            if not hasattr(conditions, name):
                raise InvalidInput("conditions", "a RigFaceConditions", type(conditions).__name__)
        if conditions.expression_kind != self.unets.expression_kind:
            raise IncompatibleModel(f"conditions of expression kind {conditions.expression_kind!r} for RigFace weights "
                                    f"trained on {self.unets.expression_kind!r}")
        if int(conditions.expression.shape[-1]) != self.unets.expression_dim:
            raise IncompatibleModel(f"a {conditions.expression.shape[-1]}-d expression vector for RigFace weights "
                                    f"that take {self.unets.expression_dim}")
        s = int(conditions.source.shape[-1])
        if s % 8:
            raise InvalidInput("conditions.source", "a side that is a multiple of 8", s)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or not (
                1 <= num_inference_steps <= 1000):
            raise InvalidInput("num_inference_steps", "an integer in 1..1000", num_inference_steps)

    # ---- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, conditions: Any, num_inference_steps: int = 50, generator: Any = None,
                 identity_states: list[torch.Tensor] | None = None, progress: bool = True,
                 output_type: str = "np") -> Any:
        """The edited aligned crop: uint8 ``(S, S, 3)`` (``output_type="pt"``: the (1, 3, S, S)
        tensor in [-1, 1]; ``"latent"``: the final scaled latent). ``generator``: a
        torch.Generator or an int seed for the starting noise."""
        from facerig.engines.sd.latents import decode_latents, tensor_to_image

        self._check(conditions, num_inference_steps)
        if output_type not in ("np", "pt", "latent"):
            raise InvalidInput("output_type", "np, pt or latent", output_type)
        dev, dt = self.unets.device, self.unets.dtype
        text = self.prompt_embeds()
        states = identity_states if identity_states is not None else self.identity_states_for(conditions)
        if len(states) != self.unets.num_states:
            raise InvalidInput("identity_states", f"{self.unets.num_states} tensors (one per transformer block)",
                               len(states))
        bg = self._encode(conditions.background)
        rd = self._encode(conditions.render)
        expr = conditions.expression.to(dev, dt)
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator("cpu").manual_seed(generator)
        shape = (1, 4, bg.shape[-2], bg.shape[-1])
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(dev, dt)
        self.scheduler.set_timesteps(num_inference_steps, device=dev)
        latents = latents * self.scheduler.init_noise_sigma
        self.set_progress_bar_config(disable=not progress, desc="RigFace")
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents, t)
            eps = self.unets.predict_noise(x, t, bg, rd, expr, states, text)
            latents = self.scheduler.step(eps, t, latents, return_dict=False)[0]
        if output_type == "latent":
            return latents
        img = decode_latents(self.vae, latents, scaled=True)
        return img if output_type == "pt" else tensor_to_image(img.float())

    # ---- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike[str], **_: Any) -> Path:
        """``dir/unets/`` (RigFace layout) + the base's parts in diffusers layout + model_index.json."""
        d = Path(save_directory)
        d.mkdir(parents=True, exist_ok=True)
        self.unets.save_pretrained(d / "unets")
        self.vae.save_pretrained(str(d / "vae"))
        self.text_encoder.save_pretrained(str(d / "text_encoder"))
        self.tokenizer.save_pretrained(str(d / "tokenizer"))
        self.scheduler.save_pretrained(str(d / "scheduler"))
        index = {"_class_name": type(self).__name__, "_facerig": "rigface-pipeline",
                 "unets": ["facerig.engines.rigface.model", type(self.unets).__name__],
                 "vae": ["diffusers", type(self.vae).__name__],
                 "text_encoder": ["transformers", type(self.text_encoder).__name__],
                 "tokenizer": ["transformers", type(self.tokenizer).__name__],
                 "scheduler": ["diffusers", type(self.scheduler).__name__]}
        (d / _MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **_: Any) -> RigFacePipeline:
        """A folder written by :meth:`save_pretrained` (local only)."""
        import diffusers

        from facerig.engines.sd.base import load_sd_base

        from .model import RigFaceUNets

        d = Path(pretrained_model_name_or_path)
        idx = d / _MODEL_INDEX
        if not idx.is_file() or not (d / "unets").is_dir():
            raise AssetMissing("RigFace pipeline folder (model_index.json, unets/, vae/, ...)", str(d),
                               "write one with RigFacePipeline.save_pretrained")
        info = json.loads(idx.read_text())
        base = load_sd_base(d, device=device, dtype=dtype)
        sched_name = str(info.get("scheduler", ["diffusers", "UniPCMultistepScheduler"])[1])
        sched_cls = getattr(diffusers, sched_name, None)
        if sched_cls is None or not sched_name.endswith("Scheduler"):
            raise InvalidInput(str(idx), "a diffusers scheduler class name", sched_name)
        scheduler = sched_cls.from_config(base.scheduler_config)
        unets = RigFaceUNets.from_pretrained(d / "unets", device=device, dtype=dtype)
        return cls(unets, base.vae, base.text_encoder, base.tokenizer, scheduler)

    @classmethod
    def from_parts(cls, unets: Any, base: Any, *, scheduler: Any = None) -> RigFacePipeline:
        """A pipeline from loaded RigFace UNets and an :class:`~facerig.engines.sd.base.SDBase`
        (scheduler: the release's UniPC from the base's config unless given)."""
        from facerig.engines.sd.schedulers import make_scheduler

        sched = scheduler if scheduler is not None else make_scheduler("unipc", base.scheduler_config)
        return cls(unets, base.vae, base.text_encoder, base.tokenizer, sched)

