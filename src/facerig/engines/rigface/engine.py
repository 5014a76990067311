"""The RigFace engine: ``facerig edit --engine rigface --weights W --base SD15`` (docs/rigface.md).

``RigFaceEngine(weights=W, base=SD15)``:

* ``weights``: anything :func:`~.model.load_rigface_weights` reads (the release root with
  ``pre_trained/unet_id/checkpoint-*``, the two folders ``unet_id/`` + ``unet_denoise/``, a facerig
  RigFace ``save_pretrained`` / pipeline / training-run folder);
* ``base``: the user's Stable Diffusion 1.5 (diffusers folder or single file; default
  ``$FACERIG_SD15``), giving the VAE, the CLIP text encoder, the tokenizer and the scheduler config;
* ``steps`` (UniPC steps, default 50 as released; fewer are faster), ``seed`` (starting noise,
  default 0, the same noise for every edit of a photo), ``dtype`` (fp32 default; bf16/fp16 opt-in on
  a GPU), ``device``, ``offload`` ("model"/"sequential" for small GPUs), ``compile``.

Conditioning follows what the weights were trained on:

* facerig-trained weights (``expression_kind == "facerig"``): :class:`~.conditions.FacerigConditioner`
  on facerig's own fit (builtin model render, facerig expression coefficients): every facerig
  edit (presets, sliders, text, pose, --reference) works;
* the released weights (``expression_kind == "deep3d"``): :class:`~.conditions.ReleasedConditioner`,
  which needs the user's FLAME (``flame=`` / ``$FACERIG_FLAME``), DECA ``deca_model.tar`` (``deca=`` /
  ``$FACERIG_DECA``) and Deep3DFaceRecon checkpoint (``deep3d=`` / ``$FACERIG_DEEP3D``). Their
  expression input is a Deep3D vector measured on a photo, so an expression comes from
  ``--reference PHOTO --take expression`` (the engine asks :func:`facerig.edit` for the reference
  image: ``wants_reference_image``); pose edits become a (yaw, pitch, roll) delta of the DECA pose.

The result is the generated crop pasted back into the photo through the crop transform with the
conditions' person mask, feathered INSIDE the mask: pixels outside the person region are the
source's own.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange, _check_image
from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["RigFaceEngine", "RigFaceState", "feathered_inside"]

#: engine option -> env var of the released conditioning's assets
_RELEASED_ASSETS = {
    "flame": ("FACERIG_FLAME", "FLAME 2020 generic_model.pkl (flame.is.tue.mpg.de)"),
    "deca": ("FACERIG_DECA", "DECA's deca_model.tar"),
    "deep3d": ("FACERIG_DEEP3D", "Deep3DFaceRecon_pytorch's epoch_20.pth (or RigFace's d3dfr_res50_nofc.pth)"),
}


@dataclass
class RigFaceState:
    """A prepared source (:meth:`RigFaceEngine.prepare`)."""

    frame: np.ndarray
    params: Any
    model: Any
    conditioner: Any
    source: Any                      # the conditioner's source state
    identity: list[torch.Tensor] | None = None
    reference_cache: dict[int, Any] = field(default_factory=dict)


def feathered_inside(mask: np.ndarray, feather_px: float, border_px: float | None = None) -> np.ndarray:
    """Float weights in [0, 1]: ``mask`` eroded by ``feather_px``, blurred, and zero wherever
    ``mask`` is (so a paste-back with them leaves everything outside ``mask`` untouched), also faded
    towards the crop border over ``border_px`` (default ``4 * feather_px``: the crop usually cuts
    through the clothes, and a short fade there leaves a visible straight seam)."""
    import cv2

    m = np.asarray(mask) > 0.5
    s = m.shape[0]
    r = max(1, int(round(feather_px)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    er = cv2.erode(m.astype(np.uint8), k).astype(np.float32)
    w = cv2.GaussianBlur(er, (0, 0), sigmaX=max(0.5, r / 2.0), borderType=cv2.BORDER_REPLICATE)
    c = np.arange(s, dtype=np.float32) + 0.5
    b = float(border_px) if border_px is not None else 4.0 * r
    ramp = np.clip(np.minimum(c, s - c) / max(b, 1.0), 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)
    w = w * np.minimum(ramp[:, None], ramp[None, :])
    # the paste-back warps these weights bilinearly: keep a one-pixel zero margin inside the mask
    inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    return np.clip(w * inner, 0.0, 1.0)


def _env_or(option: Any, env: str) -> Any:
    if option is not None and str(option) != "":
        return option
    v = os.environ.get(env, "")
    return v or None


class RigFaceEngine(Engine):
    """RigFace (Wei et al.): SD 1.5 identity UNet + denoiser with FaceFusion, conditioned on a
    grey-painted background, a lambertian render and an expression vector (module docstring).

    Pose range: RigFace is trained on frame pairs of one person from talking-head videos
    (Aff-Wild), whose head turns are moderate, and its paper shows pose edits of about a quarter
    turn at most; beyond that the generated head loses the identity and the background's grey
    region no longer covers the moved head. So +-30 degrees yaw, +-20 pitch, +-20 roll relative to
    the source, sources within +-45 yaw (warned above 30, where the hidden cheek must be invented).
    """

    name: ClassVar[str] = "rigface"
    requires_weights: ClassVar[bool] = True
    description: ClassVar[str] = ("RigFace: SD 1.5 identity UNet + denoiser (needs --weights and --base SD 1.5; "
                                  "released weights also FLAME/DECA/Deep3D)")
    pose_anchor: ClassVar[str] = "face"
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=30.0, pitch=20.0, roll=20.0, source_yaw=45.0,
                                                source_pitch=30.0, warn_source_yaw=30.0)
    #: facerig.edit passes the --reference photo as ``reference_image=`` (and ``reference_take=``)
    wants_reference_image: ClassVar[bool] = True

    def __init__(self, weights: Any = None, device: str = "cpu", *, base: Any = None, steps: int = 50,
                 seed: int = 0, dtype: Any = None, flame: Any = None, deca: Any = None, deep3d: Any = None,
                 texture: Any = None, tokenizer: Any = None, offload: str | None = None, compile: bool = False,
                 progress: Any = None, pipeline: Any = None, conditioner: Any = None, **options: Any) -> None:
        if pipeline is not None and weights is None:
            weights = "<in-memory pipeline>"
        super().__init__(weights, device, **options)
        if options:
            raise InvalidInput("engine options", "base, steps, seed, dtype, device, flame, deca, deep3d, texture, "
                               "tokenizer, offload, compile, progress", sorted(options))
        self.steps = _as_int("steps", steps, 1, 1000)
        self.seed = _as_int("seed", seed, 0, 2**63 - 1)
        # a progress bar by default only where someone watches (a terminal): SD-size steps take seconds
        self.progress = _as_bool("progress", progress) if progress is not None else sys.stderr.isatty()
        compile = _as_bool("compile", compile)
        from facerig.engines.sd.runtime import resolve_device, resolve_dtype

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        self.device = str(dev)
        if pipeline is None:
            pipeline = self._load(weights, base, dev, dt, tokenizer)
        self.pipe = pipeline
        if offload is not None or compile:
            from facerig.engines.sd.runtime import apply_runtime

            self.runtime = apply_runtime([self.pipe.unets, self.pipe.vae], device=dev, dtype=dt, offload=offload,
                                         compile=compile)
        self.expression_kind = str(self.pipe.unets.expression_kind)
        self.released_assets = {"flame": flame, "deca": deca, "deep3d": deep3d}
        self.texture = _env_or(texture, "FACERIG_FLAME_TEXTURE")
        self._conditioner = conditioner
        if conditioner is None and self.expression_kind == "deep3d":
            self._conditioner = self._released_conditioner()
        self._facerig_conditioners: dict[int, Any] = {}

    # ---- loading -----------------------------------------------------------------------------
    @staticmethod
    def _load(weights: Any, base: Any, dev: torch.device, dt: torch.dtype, tokenizer: Any) -> Any:
        from pathlib import Path

        from facerig.engines.sd.base import load_sd_base

        from .model import load_rigface_weights
        from .pipeline import RigFacePipeline

        wp = Path(os.fspath(weights))
        if not wp.exists():
            raise AssetMissing("RigFace weights", str(wp), "pass --weights with the release root (pre_trained/...), "
                               "the unet_id/ + unet_denoise/ folders, or a facerig RigFace run")
        if (wp / "model_index.json").is_file() and (wp / "vae").is_dir() and base is None:
            return RigFacePipeline.from_pretrained(wp, device=dev, dtype=dt)  # a whole saved pipeline
        sd = load_sd_base(base, device=dev, dtype=dt, tokenizer=tokenizer)
        unets = load_rigface_weights(wp, device=dev, dtype=dt)
        unets.eval().requires_grad_(False)
        return RigFacePipeline.from_parts(unets, sd)

    def _released_conditioner(self) -> Any:
        paths = {}
        for opt, (env, what) in _RELEASED_ASSETS.items():
            p = _env_or(self.released_assets.get(opt), env)
            if p is None:
                raise AssetMissing(f"{what} for the released RigFace weights", f"engine option {opt}= and ${env} (unset)",
                                   f"pass --engine-option {opt}=PATH or set {env}")
            if not os.path.exists(os.fspath(p)):
                raise AssetMissing(f"{what} for the released RigFace weights", str(p),
                                   f"pass --engine-option {opt}=PATH or set {env}")
            paths[opt] = p
        from .conditions import ReleasedConditioner

        return ReleasedConditioner(flame=paths["flame"], deca=paths["deca"], deep3d=paths["deep3d"],
                                   size=self.pipe.image_size, device=self.pipe.unets.device, texture=self.texture)

    # ---- engine protocol ---------------------------------------------------------------------
    def _facerig_conditioner(self, model: Any) -> Any:
        if self._conditioner is not None:
            return self._conditioner
        key = id(model)
        if key not in self._facerig_conditioners:
            from .conditions import FacerigConditioner

            # weights trained on prepared shards record the crop they were framed with
            crop = str(getattr(self.pipe.unets, "meta", {}).get("crop", "rigface"))
            self._facerig_conditioners[key] = FacerigConditioner(model, size=self.pipe.image_size, crop=crop)
        return self._facerig_conditioners[key]

    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> RigFaceState:
        _check_image(source_image)
        if self.expression_kind == "deep3d":
            cond = self._conditioner
            src = cond.source_state(source_image)
        else:
            cond = self._facerig_conditioner(model)
            d = cond.expression_dim(source_params)
            if d != self.pipe.unets.expression_dim:
                raise IncompatibleModel(f"these RigFace weights take {self.pipe.unets.expression_dim} expression "
                                        f"coefficients, the {getattr(source_params, 'model', '?')} face model gives {d} "
                                        "(use the face model the weights were trained with: --model)")
            src = cond.source_state(source_image, source_params)
        return RigFaceState(np.asarray(source_image), source_params, model, cond, src)

    def _conditions(self, state: RigFaceState, target_params: Any, kw: dict[str, Any]) -> Any:
        if self.expression_kind != "deep3d":
            return state.conditioner.conditions(state.source, target_params)
        from facerig.rotations import axis_angle_to_ypr

        ref = kw.get("reference_image")
        take = tuple(kw.get("reference_take") or (("expression",) if ref is not None else ()))
        src_p = state.params
        exp_changed = not torch.allclose(src_p.expression, target_params.expression)
        if exp_changed and not (ref is not None and "expression" in take):
            raise InvalidInput("expression edit", "an expression taken from a photo with the released RigFace weights",
                               "a preset/slider expression",
                               hint="their expression input is a Deep3DFaceRecon vector: use --reference PHOTO "
                                    "--take expression, or facerig-trained RigFace weights for presets")
        if src_p.light is not None and target_params.light is not None and not torch.allclose(
                src_p.light, target_params.light) and "light" not in take:
            raise InvalidInput("light edit", "light taken from a photo (--reference PHOTO --take light) with the "
                               "released RigFace weights", "a light preset")
        pose_delta = None
        if "pose" not in take:
            d = (axis_angle_to_ypr(target_params.rotation.double().cpu())
                 - axis_angle_to_ypr(src_p.rotation.double().cpu()))[0]
            if float(d.abs().max()) > 1e-3:
                pose_delta = d.numpy()
        return state.conditioner.conditions(state.source, pose_delta=pose_delta,
                                            reference_image=ref if take else None, take=take or ("expression",))

    def render_frame(self, state: RigFaceState, target_params: Any, *, generator: Any = None,
                     **kw: Any) -> np.ndarray:
        from facerig.detect.crops import paste_back

        if not isinstance(state, RigFaceState):
            raise InvalidInput("state", "a RigFaceState from RigFaceEngine.prepare", type(state).__name__)
        cond = self._conditions(state, target_params, kw)
        if state.identity is None:
            state.identity = self.pipe.identity_states_for(cond)
        gen = generator
        if gen is None or isinstance(gen, int):
            gen = torch.Generator("cpu").manual_seed(self.seed if gen is None else int(gen))
        else:  # a shared generator: draw this edit's seed from it, so edits stay reproducible
            gen = torch.Generator("cpu").manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
        crop_img = self.pipe(cond, num_inference_steps=self.steps, generator=gen, identity_states=state.identity,
                             progress=self.progress)
        mask = cond.mask[0, 0].detach().cpu().numpy()
        weights = feathered_inside(mask, max(2.0, cond.size / 64.0))
        return paste_back(state.frame, crop_img, cond.crop, weights, feather_px=0.0)


def _as_int(name: str, v: Any, lo: int, hi: int) -> int:
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise InvalidInput(name, f"an integer in {lo}..{hi}", v) from None
    if isinstance(v, bool) or i != float(v) or not lo <= i <= hi:
        raise InvalidInput(name, f"an integer in {lo}..{hi}", v)
    return i


def _as_bool(name: str, v: Any) -> bool:
    """A flag from Python or from ``--engine-option KEY=VALUE`` text."""
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off", ""):
            return False
        raise InvalidInput(name, "true or false", v)
    return bool(v)
