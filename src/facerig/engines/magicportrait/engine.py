"""The MagicPortrait engine: ``facerig reenact SRC DRV -o out.mp4 --engine magicportrait --weights CKPTS --base SD15``
(docs/magicportrait-engine.md).

``MagicPortraitEngine(weights=W, base=SD15)``:

* ``weights``: the release's checkpoint folder (the six ``.pth`` files: ``denoising_unet``,
  ``reference_unet``, ``motion_module``, ``guidance_encoder_{depth,normal,render}``), or a facerig
  MagicPortrait pipeline folder (``model_index.json``, :meth:`~.pipeline.MagicPortraitPipeline.save_pretrained`);
* ``base``: the user's Stable Diffusion 1.5 (diffusers folder or single file; default ``$FACERIG_SD15``)
  giving the VAE, the CLIP text encoder, the tokenizer and the denoiser's config;
* ``steps`` (DDIM steps, 20 as released), ``guidance_scale`` (3.5), ``seed`` (the clip's starting
  noise), ``context_frames`` / ``context_overlap`` (the release's 12-frame windows, overlap 1),
  ``max_chunk`` / ``chunk_overlap`` (memory bound for long videos, below), ``dtype``, ``device``,
  ``paste`` ("crop": the whole generated crop, faded to the crop border, pasted back; "face": only the
  rendered head region).

Conditioning follows the weights: the released weights were trained on DECA/FLAME buffers with SMIRK
expressions, so they use :class:`~.conditions.ReleasedMagicConditioner` (the user's FLAME ``flame=`` /
``$FACERIG_FLAME``, DECA ``deca=`` / ``$FACERIG_DECA``, SMIRK ``smirk=`` / ``$FACERIG_SMIRK``, optional
FLAME texture ``texture=`` / ``$FACERIG_FLAME_TEXTURE``) on the driving video's frames; facerig-trained
weights (or an injected pipeline) use :class:`~.conditions.FacerigMagicConditioner` on facerig's own
structurally aligned target params (source identity, driver's expression, jaw and head rotation).

Long videos: the pipeline denoises a clip in overlapping context windows averaged per frame, as
released. To bound memory (512 px maps are 9 MB per frame) a clip longer than ``max_chunk`` frames is
cut into chunks of ``max_chunk`` frames overlapping by ``chunk_overlap`` frames; each chunk's noise is
the slice of ONE noise tensor drawn for the whole clip (so a clip that fits one chunk is exactly one
pipeline call), and the overlapping frames are cross-faded linearly between the two chunks. The
reference bank is computed once per clip and reused by every chunk.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange, _check_image
from facerig.errors import AssetMissing, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["RELEASED_FILES", "MagicPortraitEngine", "MagicPortraitState", "clip_chunks"]

#: the release's checkpoint files (ckpts/ of the authors' README)
RELEASED_FILES = ("denoising_unet.pth", "reference_unet.pth", "motion_module.pth", "guidance_encoder_depth.pth",
                  "guidance_encoder_normal.pth", "guidance_encoder_render.pth")

#: engine option -> (env var, what) of the released conditioning's assets
_RELEASED_ASSETS = {
    "flame": ("FACERIG_FLAME", "FLAME 2020 generic_model.pkl (flame.is.tue.mpg.de)"),
    "deca": ("FACERIG_DECA", "DECA's deca_model.tar"),
    "smirk": ("FACERIG_SMIRK", "SMIRK's SMIRK_em1.pt"),
}
PASTE_MODES = ("crop", "face")


@dataclass
class MagicPortraitState:
    """A prepared source (:meth:`MagicPortraitEngine.prepare`)."""

    frame: np.ndarray
    conditioner: Any
    source: Any                     # the conditioner's source state
    released: bool
    bank: list[torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def clip_chunks(n: int, max_chunk: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` with chunks of at most ``max_chunk`` frames,
    consecutive chunks sharing ``overlap`` frames (one chunk when ``n <= max_chunk``)."""
    if n < 1:
        raise InvalidInput("frames", "at least one frame", n)
    if max_chunk < 1 or not 0 <= overlap < max_chunk:
        raise InvalidInput("chunk_overlap", f"0 <= overlap < max_chunk ({max_chunk})", overlap)
    if n <= max_chunk:
        return [(0, n)]
    out = []
    a = 0
    while True:
        b = min(n, a + max_chunk)
        out.append((a, b))
        if b == n:
            return out
        a = b - overlap


def _env_or(option: Any, env: str) -> Any:
    if option is not None and str(option) != "":
        return option
    v = os.environ.get(env, "")
    return v or None


def _as_int(name: str, v: Any, lo: int, hi: int) -> int:
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise InvalidInput(name, f"an integer in {lo}..{hi}", v) from None
    if isinstance(v, bool) or i != float(v) or not lo <= i <= hi:
        raise InvalidInput(name, f"an integer in {lo}..{hi}", v)
    return i


def _as_float(name: str, v: Any, lo: float, hi: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InvalidInput(name, f"a number in [{lo:g}, {hi:g}]", v) from None
    if isinstance(v, bool) or not np.isfinite(f) or not lo <= f <= hi:
        raise InvalidInput(name, f"a number in [{lo:g}, {hi:g}]", v)
    return f


def is_released_folder(path: Any) -> bool:
    p = Path(os.fspath(path))
    return p.is_dir() and all((p / f).is_file() for f in RELEASED_FILES)


class MagicPortraitEngine(Engine):
    """MagicPortrait (Wei et al.): SD 1.5 with AnimateDiff temporal modules, a reference UNet and
    geometric guidance encoders (depth, normal, render), sampled over the whole driving clip.

    Pose range: the release is trained on CelebV-HQ talking-head clips, whose head turns are
    moderate (most within about +-30 degrees yaw of frontal), and its results show reenactment of
    frontal to 3/4 portraits; the whole head (hair, outline) is generated, so turns within that
    range stay plausible, larger ones invent an unseen side. So +-35 degrees yaw, +-20 pitch, +-20
    roll relative to the source, sources within +-45 yaw (warned above 30).
    """

    name: ClassVar[str] = "magicportrait"
    requires_weights: ClassVar[bool] = True
    description: ClassVar[str] = ("MagicPortrait: SD 1.5 video diffusion with temporal modules and depth/normal/render "
                                  "guidance (needs --weights CKPTS and --base SD 1.5; released weights also "
                                  "FLAME/DECA/SMIRK)")
    pose_anchor: ClassVar[str] = "face"
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=35.0, pitch=20.0, roll=20.0, source_yaw=45.0,
                                                source_pitch=30.0, warn_source_yaw=30.0)
    wants_reference_image: ClassVar[bool] = True

    def __init__(self, weights: Any = None, device: str = "cpu", *, base: Any = None, steps: int = 20,
                 guidance_scale: float = 3.5, seed: int = 0, dtype: Any = None, context_frames: int = 12,
                 context_overlap: int = 1, max_chunk: int = 48, chunk_overlap: int = 4, paste: str = "crop",
                 normals: str = "clamp", flame: Any = None, deca: Any = None, smirk: Any = None,
                 texture: Any = None, progress: Any = None, pipeline: Any = None, conditioner: Any = None,
                 conditioning: str | None = None, **options: Any) -> None:
        if pipeline is not None and weights is None:
            weights = "<in-memory pipeline>"
        super().__init__(weights, device, **options)
        if options:
            raise InvalidInput("engine options", "base, steps, guidance_scale, seed, dtype, device, context_frames, "
                               "context_overlap, max_chunk, chunk_overlap, paste, normals, flame, deca, smirk, "
                               "texture, progress, conditioning", sorted(options))
        self.steps = _as_int("steps", steps, 1, 1000)
        self.guidance_scale = _as_float("guidance_scale", guidance_scale, 0.0, 50.0)
        self.seed = _as_int("seed", seed, 0, 2**63 - 1)
        self.context_frames = _as_int("context_frames", context_frames, 1, 1024)
        self.context_overlap = _as_int("context_overlap", context_overlap, 0, self.context_frames - 1)
        self.max_chunk = _as_int("max_chunk", max_chunk, 1, 100000)
        self.chunk_overlap = _as_int("chunk_overlap", chunk_overlap, 0, self.max_chunk - 1)
        if paste not in PASTE_MODES:
            raise InvalidInput("paste", f"one of {PASTE_MODES}", paste)
        self.paste = paste
        self.normals = normals
        from facerig.engines.rigface.engine import _as_bool

        self.progress = _as_bool("progress", progress) if progress is not None else sys.stderr.isatty()
        from facerig.engines.sd.runtime import resolve_device, resolve_dtype

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        self.device = str(dev)
        released = False
        if pipeline is None:
            pipeline, released = self._load(weights, base, dev, dt)
        self.pipe = pipeline
        if conditioning is None:
            conditioning = "released" if released else "facerig"
        if conditioning not in ("released", "facerig"):
            raise InvalidInput("conditioning", "released or facerig", conditioning)
        self.released = conditioning == "released"
        self.released_assets = {"flame": flame, "deca": deca, "smirk": smirk}
        self.texture = _env_or(texture, "FACERIG_FLAME_TEXTURE")
        self._conditioner = conditioner
        if conditioner is None and self.released:
            self._conditioner = self._released_conditioner()
        self._facerig_conditioners: dict[int, Any] = {}

    # ---- loading -----------------------------------------------------------------------------
    @staticmethod
    def _load(weights: Any, base: Any, dev: torch.device, dt: torch.dtype) -> tuple[Any, bool]:
        from .pipeline import MagicPortraitPipeline

        wp = Path(os.fspath(weights))
        if not wp.exists():
            raise AssetMissing("MagicPortrait weights", str(wp), "pass --weights with the release's ckpts folder "
                               f"({', '.join(RELEASED_FILES)}) or a facerig MagicPortrait pipeline folder")
        if (wp / "model_index.json").is_file():
            return MagicPortraitPipeline.from_pretrained(wp, device=dev, dtype=dt), False
        if not is_released_folder(wp):
            missing = [f for f in RELEASED_FILES if not (wp / f).is_file()] if wp.is_dir() else list(RELEASED_FILES)
            raise AssetMissing("MagicPortrait weights", str(wp), f"the release's ckpts folder lacks {', '.join(missing)} "
                               "(the authors' motion_module-47360.pth must be renamed or linked to motion_module.pth)")
        return MagicPortraitPipeline.from_released(wp, base, device=dev, dtype=dt), True

    def _released_conditioner(self) -> Any:
        paths: dict[str, Any] = {}
        for opt, (env, what) in _RELEASED_ASSETS.items():
            p = _env_or(self.released_assets.get(opt), env)
            if p is None or not os.path.exists(os.fspath(p)):
                where = str(p) if p is not None else f"engine option {opt}= and ${env} (unset)"
                raise AssetMissing(f"{what} for the released MagicPortrait weights", where,
                                   f"pass --engine-option {opt}=PATH or set {env}")
            paths[opt] = p
        from .conditions import ReleasedMagicConditioner

        return ReleasedMagicConditioner(flame=paths["flame"], deca=paths["deca"], smirk=paths["smirk"],
                                        texture=self.texture, size=self.pipe.image_size, device=self.device)

    def _facerig_conditioner(self, model: Any) -> Any:
        if self._conditioner is not None:
            return self._conditioner
        key = id(model)
        if key not in self._facerig_conditioners:
            from .conditions import FacerigMagicConditioner

            self._facerig_conditioners[key] = FacerigMagicConditioner(model, size=self.pipe.image_size,
                                                                      normals=self.normals)
        return self._facerig_conditioners[key]

    # ---- engine protocol ---------------------------------------------------------------------
    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> MagicPortraitState:
        _check_image(source_image)
        if self.released:
            cond = self._conditioner
            src = cond.source_state(source_image)
        else:
            cond = self._facerig_conditioner(model)
            src = cond.source_state(source_image, source_params)
        return MagicPortraitState(np.asarray(source_image), cond, src, self.released)

    def _clip_frames(self, state: MagicPortraitState, targets: Sequence[Any], drivers: Sequence[Any] | None) -> Any:
        if state.released:
            return state.conditioner.frames(state.source, list(drivers or []))
        return state.conditioner.frames(state.source, list(targets))

    def _bank(self, state: MagicPortraitState, frames: Any) -> list[torch.Tensor]:
        if state.bank is None:
            state.bank = self.pipe.reference_bank_for(frames.reference)
        return state.bank

    def _noise(self, n: int, generator: Any) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        if generator is None or isinstance(generator, int):
            gen = torch.Generator("cpu").manual_seed(self.seed if generator is None else int(generator))
        else:  # a shared generator: draw this clip's seed from it, so runs stay reproducible
            gen = torch.Generator("cpu").manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        p = next(self.pipe.model.denoiser.parameters())
        h = self.pipe.image_size // self.pipe.vae_scale_factor
        return randn_tensor((1, 4, n, h, h), generator=gen, device=torch.device("cpu"), dtype=torch.float32).to(
            device=p.device, dtype=p.dtype)

    def _paste(self, state: MagicPortraitState, crop_img: np.ndarray, mask: torch.Tensor, crop: Any) -> np.ndarray:
        from facerig.detect.crops import paste_back
        from facerig.engines.rigface.engine import feathered_inside

        s = crop_img.shape[0]
        region = mask[0].detach().cpu().numpy() if self.paste == "face" else np.ones((s, s), np.float32)
        weights = feathered_inside(region, max(2.0, s / 64.0))
        return paste_back(state.frame, crop_img, crop, weights, feather_px=0.0)

    def _sample(self, frames: Any, bank: list[torch.Tensor], noise: torch.Tensor, progress: Any) -> np.ndarray:
        out = self.pipe(frames, num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                        context_frames=self.context_frames, context_overlap=self.context_overlap,
                        latents=noise, reference_bank=bank, progress=progress, output_type="np")
        return np.asarray(out)

    def generate(self, state: MagicPortraitState, targets: Sequence[Any], drivers: Sequence[Any] | None = None, *,
                 generator: Any = None, on_frame: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """Yield the clip's frames (source image size, uint8), sampled chunk by chunk (module docstring)."""
        if state.released and drivers is None:
            raise InvalidInput("driving image", "the driving frame(s) for the released MagicPortrait weights "
                               "(their expression comes from SMIRK on the driver)", None,
                               hint="use facerig reenact, or facerig edit --like PHOTO")
        n = len(drivers) if state.released and drivers is not None else len(targets)
        if drivers is not None and len(drivers) != n:
            raise InvalidInput("driving_frames", f"{n} frames (one per target)", len(drivers))
        noise = self._noise(n, generator)
        chunks = clip_chunks(n, self.max_chunk, self.chunk_overlap)
        prev_tail: np.ndarray | None = None    # the previous chunk's generated crops over the overlap
        done = 0
        for ci, (a, b) in enumerate(chunks):
            idx = list(range(a, b))
            frames = self._clip_frames(state, [targets[i] for i in idx] if not state.released else [],
                                       [drivers[i] for i in idx] if drivers is not None else None)
            if frames.num_frames != len(idx):
                raise InvalidInput("conditioner", f"{len(idx)} frames of maps", frames.num_frames)
            bank = self._bank(state, frames)
            crops = self._sample(frames, bank, noise[:, :, a:b], self.progress)
            ov = 0 if ci == 0 else (chunks[ci - 1][1] - a)
            if prev_tail is not None and ov > 0:
                w = (np.arange(1, ov + 1, dtype=np.float32) / (ov + 1))[:, None, None, None]
                crops[:ov] = np.clip(np.round((1 - w) * prev_tail + w * crops[:ov].astype(np.float32)), 0, 255).astype(
                    np.uint8)
            nxt_ov = (b - chunks[ci + 1][0]) if ci + 1 < len(chunks) else 0
            emit_end = len(idx) - nxt_ov
            for j in range(emit_end):  # the overlap with the previous chunk was cross-faded above
                yield self._paste(state, crops[j], frames.mask[j], frames.crop)
                done += 1
                if on_frame is not None:
                    on_frame(done, n)
            # the overlap with the next chunk is emitted by it, after the cross-fade
            prev_tail = crops[emit_end:].astype(np.float32) if nxt_ov else None

    def reenact(self, source_image: np.ndarray, source_params: Any, target_sequence: Any, model: Any, *,
                generator: Any = None, progress: Callable[[int, int], None] | None = None,
                driving_frames: Sequence[np.ndarray] | None = None, driving_params: Any = None,
                **kw: Any) -> Iterator[np.ndarray]:
        """Denoise the whole clip together (windows, chunks) and yield one pasted-back frame per target."""
        _check_image(source_image)
        state = self.prepare(source_image, source_params, model, **kw)
        n = len(target_sequence)
        for nm, seq in (("driving_frames", driving_frames), ("driving_params", driving_params)):
            if seq is not None and len(seq) != n:
                raise InvalidInput(nm, f"{n} items (one per target frame)", len(seq))
        targets = [target_sequence[i] for i in range(n)]
        yield from self.generate(state, targets, driving_frames, generator=generator, on_frame=progress)

    def render_frame(self, state: MagicPortraitState, target_params: Any, *, generator: Any = None,
                     **kw: Any) -> np.ndarray:
        if not isinstance(state, MagicPortraitState):
            raise InvalidInput("state", "a MagicPortraitState from MagicPortraitEngine.prepare", type(state).__name__)
        drv = kw.get("driving_image")
        if drv is None:
            drv = kw.get("reference_image")
        drivers = [drv] if drv is not None else None
        return next(iter(self.generate(state, [target_params], drivers, generator=generator)))
