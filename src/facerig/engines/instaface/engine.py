"""The InstaFace engine: ``facerig edit --engine instaface --weights W --base SD15 [--engine-option clip=CLIP]``.

``InstaFaceEngine(weights=W, base=SD15, clip=None)`` (docs/instaface.md):

* ``weights``: a :meth:`~.model.InstaFaceModel.save_pretrained` folder (stage-1 training output,
  ``OUT/final``, or a personalized folder written by :meth:`InstaFaceEngine.personalize`);
* ``base``: the user's Stable Diffusion 1.5 (VAE, text encoder, tokenizer; default ``$FACERIG_SD15``);
* ``clip``: a local ``CLIPVisionModelWithProjection`` folder; without it the Identity Preserver
  runs on face-recognition tokens only (logged);
* ``steps`` (DDIM, default 20 as the paper), ``seed`` (default 0), ``size`` (crop side, default
  256 as the paper's stage 1), ``finetune_steps`` / ``finetune_lr`` / ``finetune_copies`` (the
  paper's stage 2: 50 / 1e-5 / 8; ``finetune_steps=0`` skips it), ``dtype``, ``device``.

Per source (:meth:`prepare`): an FFHQ-style aligned crop placed by the fitted model's own landmarks;
its scaled VAE latent (the stage-2 target), the fused latents of its own albedo/normal/render
buffers, the face-recognition descriptor (dlib-port, on the crop with the model's 5 dlib points)
and CLIP embedding; then the stage-2 fine-tune of the projection and the diffusion network on that
one image -- skipped when the weights were personalized for this very crop
(``meta.personalized_for``). Per edit (:meth:`render_frame`): the target's buffers in the same crop,
DDIM sampling, the crop pasted back inside the union of the source and target face masks
(dilated, feathered inside), so pixels outside the face region are the photo's own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange, _check_image
from facerig.engines.rigface.engine import _as_int
from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["InstaFaceEngine", "InstaFaceParts", "InstaFaceState"]


@dataclass
class InstaFaceParts:
    """What the engine runs: the networks, the frozen VAE, the fixed prompt's embedding (or None)."""

    model: Any                       # InstaFaceModel
    vae: Any
    text_embeds: torch.Tensor | None
    scheduler_config: dict[str, Any] | None = None


@dataclass
class InstaFaceState:
    """A prepared source (:meth:`InstaFaceEngine.prepare`)."""

    frame: np.ndarray
    params: Any
    model: Any                       # the face model
    crop: Any                        # CropTransform frame -> aligned crop
    net: Any                         # the (personalized) InstaFaceModel
    tokens: torch.Tensor             # (1, N, D) identity tokens
    source_mask: np.ndarray          # (S, S) bool rendered face of the source
    finetune_losses: list[float]
    fingerprint: str


def _sha1(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def _feather_inside(mask: np.ndarray, r: int) -> np.ndarray:
    """Weights in [0, 1]: ``mask`` eroded by ``r``, blurred, zero wherever ``mask`` is 0."""
    import cv2

    m = (np.asarray(mask) > 0.5).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    w = cv2.GaussianBlur(cv2.erode(m, k).astype(np.float32), (0, 0), sigmaX=max(0.5, r / 2.0))
    inner = cv2.erode(m, np.ones((3, 3), np.uint8)).astype(np.float32)
    return np.clip(w * inner, 0.0, 1.0)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(np.asarray(mask, np.uint8), k) > 0


class InstaFaceEngine(Engine):
    """InstaFace: SD guidance network over 3D-buffer latents + identity tokens, with a single-image
    fine-tune per source (module docstring).

    Pose range: the paper trains on single FFHQ images (no pairs of one person in two poses) and
    shows moderate pose edits; the generated region is the face masks' union, so large turns
    would leave the old head's outline in the photo. +-25 yaw, +-15 pitch, +-20 roll relative to the
    source; sources within +-45 yaw (warned above 30)."""

    name: ClassVar[str] = "instaface"
    requires_weights: ClassVar[bool] = True
    description: ClassVar[str] = ("InstaFace: SD guidance network over albedo/normal/render latents + identity tokens, "
                                  "single-image fine-tune per photo (needs --weights and --base SD 1.5; CLIP optional)")
    pose_anchor: ClassVar[str] = "face"
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=25.0, pitch=15.0, roll=20.0, source_yaw=45.0, source_pitch=30.0,
                                                warn_source_yaw=30.0)

    def __init__(self, weights: Any = None, device: str = "cpu", *, base: Any = None, clip: Any = None,
                 steps: int = 20, seed: int = 0, size: int = 256, finetune_steps: int = 50, finetune_lr: float = 1e-5,
                 finetune_copies: int = 8, dtype: Any = None, tokenizer: Any = None, parts: InstaFaceParts | None = None,
                 face_net: Any = None, **options: Any) -> None:
        if parts is not None and weights is None:
            weights = "<in-memory parts>"
        super().__init__(weights, device, **options)
        if options:
            raise InvalidInput("engine options", "base, clip, steps, seed, size, finetune_steps, finetune_lr, "
                               "finetune_copies, dtype, device, tokenizer", sorted(options))
        self.steps = _as_int("steps", steps, 1, 1000)
        self.seed = _as_int("seed", seed, 0, 2**63 - 1)
        self.size = _as_int("size", size, 64, 2048)
        if self.size % 8:
            raise InvalidInput("size", "a multiple of 8", size)
        self.finetune_steps = _as_int("finetune_steps", finetune_steps, 0, 100000)
        self.finetune_copies = _as_int("finetune_copies", finetune_copies, 1, 1024)
        try:
            self.finetune_lr = float(finetune_lr)
        except (TypeError, ValueError):
            raise InvalidInput("finetune_lr", "a positive learning rate", finetune_lr) from None
        if not self.finetune_lr > 0:
            raise InvalidInput("finetune_lr", "a positive learning rate", finetune_lr)
        from facerig.engines.sd.runtime import resolve_device, resolve_dtype

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        self.device = str(dev)
        self.parts = parts if parts is not None else self._load(weights, base, dev, dt, tokenizer)
        self.parts.model.to(dev, dt).eval().requires_grad_(False)
        from .conditions import FusionController, IdentityEncoder

        self.fusion = FusionController(self.parts.vae)
        self.identity = IdentityEncoder(clip, face_net, device=dev, dtype=dt)
        proj = self.parts.model.projection
        if self.identity.clip_dim and not proj.uses_clip:
            raise IncompatibleModel("a CLIP model was given but these InstaFace weights take no CLIP embedding "
                                    "(trained face-recognition-only): drop clip=")
        if self.identity.clip_dim and self.identity.clip_dim != int(proj.config.clip_dim):
            raise InvalidInput("clip", f"a CLIP vision model with projection_dim {proj.config.clip_dim} (as the weights)",
                               self.identity.clip_dim)
        if proj.uses_clip and not self.identity.clip_dim:
            log.warning("InstaFace: these weights were trained with CLIP image embeddings, none was given "
                        "(clip=): running on face-recognition tokens only")

    @staticmethod
    def _load(weights: Any, base: Any, dev: torch.device, dt: torch.dtype, tokenizer: Any) -> InstaFaceParts:
        from facerig.engines.sd.base import load_sd_base
        from facerig.engines.sd.prompt import encode_prompt

        from .model import InstaFaceModel

        wp = Path(os.fspath(weights))
        if not wp.exists():
            raise AssetMissing("InstaFace weights", str(wp), "pass --weights with a facerig InstaFace folder "
                               "(facerig train instaface OUT/final, or facerig personalize instaface)")
        sd = load_sd_base(base, device=dev, dtype=dt, tokenizer=tokenizer)
        net = InstaFaceModel.from_pretrained(wp, device=dev, dtype=dt)
        if int(sd.text_encoder.config.hidden_size) != net.cross_attention_dim:
            raise IncompatibleModel(f"the SD base's text encoder is {sd.text_encoder.config.hidden_size} wide, the "
                                    f"InstaFace weights' cross-attention {net.cross_attention_dim}")
        text = encode_prompt(sd.text_encoder, sd.tokenizer, net.prompt, device=dev, dtype=dt) if net.prompt else None
        return InstaFaceParts(net, sd.vae, text, sd.scheduler_config)

    # ---- helpers -----------------------------------------------------------------------------
    def _crop_points(self, model: Any, params: Any) -> np.ndarray:
        from facerig.fit.api import project_landmarks_to_frame

        idx = model.landmark_index.cpu().numpy()
        if len(idx) < 468 or not {10, 152, 263, 362, 33, 133, 164} <= set(idx.tolist()):
            raise IncompatibleModel(f"face model {getattr(model, 'name', type(model).__name__)!r}: the InstaFace crop "
                                    "and identity points need its MediaPipe landmarks (use --model builtin or ict)")
        lm = np.asarray(project_landmarks_to_frame(model, params)[0], np.float64)
        pts = np.zeros((478, 2))
        pts[idx] = lm
        if len(idx) < 478:
            pts[468:] = pts[:468].mean(0)
        return pts

    def _buffers(self, model: Any, params: Any, crop: Any) -> Any:
        from facerig.train.data import render_aligned

        with torch.no_grad():
            return render_aligned(model, params, self.size, crop)

    def _generator(self, gen: Any) -> torch.Generator:
        if gen is None or isinstance(gen, int):
            return torch.Generator("cpu").manual_seed(self.seed if gen is None else int(gen))
        return torch.Generator("cpu").manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))

    # ---- engine protocol ---------------------------------------------------------------------
    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> InstaFaceState:
        from facerig.detect.crops import ffhq_crop, warp_to_crop
        from facerig.eval.identity import mediapipe_to_dlib5

        from ..sd.latents import encode_images, image_to_tensor
        from .training import finetune_single_image

        _check_image(source_image)
        if getattr(source_params, "crop", None) is None or source_params.batch_size != 1:
            raise InvalidInput("source_params", "the FaceParams of one fitted face (batch 1, crop set)",
                               getattr(source_params, "batch_size", source_params))
        img = np.asarray(source_image)
        pts = self._crop_points(model, source_params)
        crop = ffhq_crop(pts, self.size, frame_size=img.shape[:2])
        aligned = warp_to_crop(img, crop, border="reflect", interpolation="cubic")
        fp = _sha1(aligned)
        p = self.parts
        net = p.model
        dev, dt = net.device, net.dtype
        x = image_to_tensor(aligned).to(dev, dt)
        with torch.no_grad():
            x0 = encode_images(p.vae, x, scaled=True)
            buf = self._buffers(model, source_params, crop)
            cond = self.fusion(buf)
        points5 = mediapipe_to_dlib5(crop.apply(pts))[None]
        face, clip = self.identity((x + 1) / 2, points5)
        losses: list[float] = []
        if self.finetune_steps and net.meta.get("personalized_for") != fp:
            net, losses = finetune_single_image(net, x0, cond, face, clip if net.projection.uses_clip else None,
                                                p.text_embeds, steps=self.finetune_steps, copies=self.finetune_copies,
                                                lr=self.finetune_lr, generator=self._generator(None))
            net.requires_grad_(False)
            net.meta = {**net.meta, "personalized_for": fp}
        elif self.finetune_steps:
            log.info("InstaFace: weights already personalized for this photo; no fine-tune")
        with torch.no_grad():
            tokens = net.identity_tokens(face, clip if net.projection.uses_clip else None)
        mask = buf.mask[0, 0].detach().cpu().numpy() > 0.5
        return InstaFaceState(img, source_params, model, crop, net, tokens, mask, losses, fp)

    def render_frame(self, state: InstaFaceState, target_params: Any, *, generator: Any = None,
                     **kw: Any) -> np.ndarray:
        from facerig.detect.crops import paste_back

        from ..sd.latents import tensor_to_image
        from .pipeline import generate, make_ddim

        if not isinstance(state, InstaFaceState):
            raise InvalidInput("state", "an InstaFaceState from InstaFaceEngine.prepare", type(state).__name__)
        if getattr(target_params, "batch_size", 0) != 1:
            raise InvalidInput("target_params", "the FaceParams of one face (batch 1)",
                               getattr(target_params, "batch_size", target_params))
        if target_params.crop is None:
            target_params = target_params.replace(crop=state.params.crop)
        with torch.no_grad():
            buf = self._buffers(state.model, target_params, state.crop)
            cond = self.fusion(buf)
        out = generate(state.net, self.parts.vae, cond, state.tokens, self.parts.text_embeds, steps=self.steps,
                       scheduler=make_ddim(self.parts.scheduler_config), generator=self._generator(generator))
        crop_img = tensor_to_image(out)
        region = _dilate(state.source_mask | (buf.mask[0, 0].cpu().numpy() > 0.5), max(1, self.size // 32))
        weights = _feather_inside(region, max(2, self.size // 64))
        return paste_back(state.frame, crop_img, state.crop, weights, feather_px=0.0)

    # ---- stage 2 as a command -------------------------------------------------------------------
    def personalize(self, source_image: np.ndarray, source_params: Any, model: Any,
                    out: str | os.PathLike[str]) -> Path:
        """``facerig personalize instaface --image PHOTO``: the stage-2 fine-tune on this photo,
        saved to ``out`` (weights for ``--weights``; an edit of the same photo then skips the fine-tune)."""
        if not self.finetune_steps:
            raise InvalidInput("finetune_steps", "at least 1 for personalize", self.finetune_steps)
        state = self.prepare(source_image, source_params, model)
        d = state.net.save_pretrained(out)
        log.info("InstaFace personalized for the photo (%d steps, loss %.4f -> %.4f) in %s", len(state.finetune_losses),
                 state.finetune_losses[0] if state.finetune_losses else float("nan"),
                 state.finetune_losses[-1] if state.finetune_losses else float("nan"), d)
        return d
