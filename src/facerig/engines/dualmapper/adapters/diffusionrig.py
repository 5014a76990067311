"""DiffusionRig as a RigGenerator: w = the source's global code, psi = the face model's expression.

``render(w, psi)``: the source's params with expression ``psi`` -> DiffusionRig's buffers in the
source's FFHQ crop (:func:`facerig.train.data.render_aligned`, differentiable in the expression
through the rasteriser's barycentrics) -> a FEW-step deterministic DDIM (eta 0, ``steps`` of the
pipeline's schedule, "leading" spacing as :class:`~facerig.engines.diffusionrig.DiffusionRigPipeline`)
from ONE fixed noise (drawn from an explicit ``torch.Generator`` seeded with ``seed``) through the
UNet, each step wrapped in ``torch.utils.checkpoint`` (``checkpoint=True``) so that memory holds one
step's activations instead of ``steps`` of them; gradients reach ``w`` (the UNet's code scale-shift)
and ``psi`` (the buffers).

The code is laid out as tokens: the ``latent_dim`` vector reshaped to (``tokens``, latent_dim /
tokens), 8 tokens of 8 for the paper's 64-d code. ``render(w0, psi0)`` is DiffusionRig's own
reconstruction of the source with ``steps`` DDIM steps (not the photo: its error is the model's).

The UNet and encoder are set to eval mode and ``requires_grad_(False)`` (the mappers train, the
generator does not), which changes the pipeline object passed in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from facerig.errors import AssetMissing, InvalidInput

from .warp import check_source, detected_landmarks, frame_vertices

log = logging.getLogger(__name__)

__all__ = ["DiffusionRigGenerator", "build_diffusionrig"]


class DiffusionRigGenerator:
    """RigGenerator over a :class:`~facerig.engines.diffusionrig.DiffusionRigPipeline` (see the module
    docstring). ``pipeline``; ``image`` (H, W, 3) uint8 and ``params`` its batch-1 fit; ``model`` the
    face model the weights' buffers were made with. Options: ``steps`` DDIM steps (6), ``seed`` of the
    fixed noise (0), ``tokens`` rows of w (8; must divide latent_dim), ``checkpoint`` per-step
    gradient checkpointing (True), ``clip_denoised`` clamp each step's predicted clean image to
    [-1, 1] as the released sampler does (True), ``identity`` (1, K_id) to render the buffers with
    instead of the fitted one (personalised weights' album identity), or None.
    """

    name = "diffusionrig"

    def __init__(
        self,
        pipeline: Any,
        image: np.ndarray,
        params: Any,
        model: Any,
        *,
        steps: int = 6,
        seed: int = 0,
        tokens: int = 8,
        checkpoint: bool = True,
        clip_denoised: bool = True,
        identity: torch.Tensor | None = None,
    ) -> None:
        from facerig.detect.crops import ffhq_crop, warp_to_crop
        from facerig.engines.diffusionrig.buffers import check_face_model
        from facerig.engines.diffusionrig.pipeline import make_scheduler
        from facerig.fit.api import project_landmarks_to_frame

        check_source(image, params)
        if not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise InvalidInput("steps", "an integer number of DDIM steps in 1..1000", steps)
        self.pipe = pipeline
        self.pipe.unet.eval().requires_grad_(False)
        self.pipe.encoder.eval().requires_grad_(False)
        check_face_model(self.pipe.unet.config.get("face_model"), model)
        latent = int(self.pipe.unet.config.latent_dim)
        if not isinstance(tokens, int) or tokens < 1 or latent % tokens:
            raise InvalidInput("tokens", f"a divisor of the global code's size {latent}", tokens)
        self.w_shape = (int(tokens), latent // int(tokens))
        self.steps = int(steps)
        self.seed = int(seed)
        self.checkpoint = bool(checkpoint)
        self.clip_denoised = bool(clip_denoised)
        self.model = model
        if identity is not None:
            params = params.replace(identity=identity.to(params.identity).expand(1, -1).clone())
        self.params = params.detach()
        self.psi_names = tuple(model.expression_names)
        s = int(self.pipe.image_size)
        self.image_size = (s, s)

        h, w = image.shape[:2]
        lm = project_landmarks_to_frame(model, params)[0]
        pts = np.zeros((478, 2))
        pts[model.landmark_index.cpu().numpy()] = lm
        self.crop = ffhq_crop(pts, s, frame_size=(h, w))
        aligned = warp_to_crop(image, self.crop, border="reflect")
        dev, dt = self.pipe.device, self.pipe.dtype
        self._source = (torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 255.0).to(dev)
        code = self.pipe.encode(self._source)  # (1, latent), no grad
        self._w0 = code.reshape(1, *self.w_shape).float()
        self._psi0 = self.params.expression.float().to(dev)
        g = torch.Generator().manual_seed(self.seed)
        self._noise = torch.randn(1, 3, s, s, generator=g).to(dev, dt)
        sched = make_scheduler("ddim", **self._schedule_overrides())
        sched.set_timesteps(self.steps)
        self._timesteps = [int(t) for t in sched.timesteps]
        self._acp = sched.alphas_cumprod.double()
        self._final_acp = float(sched.final_alpha_cumprod)
        self._stride = int(sched.config.num_train_timesteps) // self.steps
        det = detected_landmarks(params)
        self._det5 = None
        if det is not None:
            from facerig.eval.identity import MEDIAPIPE_TO_DLIB5

            self._det5 = torch.from_numpy(self.crop.apply(det[list(MEDIAPIPE_TO_DLIB5)])[:, :2]).float()

    def _schedule_overrides(self) -> dict[str, Any]:
        """The pipeline scheduler's own schedule when it is a DDIM one (else DiffusionRig's)."""
        cfg = getattr(self.pipe.scheduler, "config", None)
        if cfg is None or type(self.pipe.scheduler).__name__ != "DDIMScheduler":
            return {}
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "set_alpha_to_one",
                "steps_offset", "timestep_spacing")
        return {k: cfg[k] for k in keys if k in cfg}

    # ---- protocol ------------------------------------------------------------------------------
    def initial(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._w0.detach().clone(), self._psi0.detach().clone()

    def source_image(self) -> torch.Tensor:
        return self._source.clone()

    def _crop_points(self, xy: torch.Tensor) -> torch.Tensor:
        m = torch.from_numpy(self.crop.matrix).to(xy)
        return xy @ m[:, :2].T + m[:, 2]

    def landmarks(self, psi: torch.Tensor) -> torch.Tensor:
        """The face model's landmarks (B, L, 2) in the aligned crop's pixels; differentiable in psi."""
        psi = self._check_psi(psi)
        scr = frame_vertices(self.model, self.params, psi)
        return self._crop_points(self.model.landmarks(scr)[..., :2])

    def points5(self) -> torch.Tensor:
        """dlib 5 points (1, 5, 2) of the source in the aligned crop (dlib pixel coordinates): from the
        fit's detected landmarks, else the model's landmarks at psi0."""
        from facerig.eval.identity import MEDIAPIPE_TO_DLIB5

        if self._det5 is not None:
            return (self._det5 - 0.5)[None].to(self._source.device)
        li = self.model.landmark_index.long().tolist()
        ids = list(MEDIAPIPE_TO_DLIB5)
        if not all(i in li for i in ids):
            raise InvalidInput("params.meta['landmarks_px']", "the fit's detected MediaPipe landmarks", None)
        lm = self.landmarks(self._psi0)[0].detach()
        return (lm[[li.index(i) for i in ids]] - 0.5)[None]

    def _check_psi(self, psi: torch.Tensor) -> torch.Tensor:
        if not isinstance(psi, torch.Tensor) or psi.ndim != 2 or psi.shape[1] != len(self.psi_names):
            raise InvalidInput("psi", f"a (B, {len(self.psi_names)}) tensor of expression coefficients",
                               tuple(psi.shape) if isinstance(psi, torch.Tensor) else type(psi).__name__)
        return psi.to(device=self._source.device, dtype=torch.float32)

    def cond(self, psi: torch.Tensor) -> torch.Tensor:
        """DiffusionRig's (B, 9, H, W) buffers for expression ``psi``; differentiable in ``psi``."""
        from facerig.engines.diffusionrig.buffers import model_buffers
        from facerig.train.data import render_aligned
        from facerig.types import FaceParams

        psi = self._check_psi(psi)
        b = psi.shape[0]
        pb = FaceParams.cat([self.params] * b) if b > 1 else self.params
        pb = pb.replace(expression=psi)
        buf = render_aligned(self.model, pb, self.image_size[0], self.crop)
        return model_buffers(buf, self.model, self.pipe.unet)

    def _step(self, x: torch.Tensor, cond: torch.Tensor, code: torch.Tensor, i: int) -> torch.Tensor:
        """One deterministic DDIM step (eta 0) from timestep ``self._timesteps[i]``."""
        t = self._timesteps[i]
        a = float(self._acp[t])
        prev = t - self._stride
        a_prev = float(self._acp[prev]) if prev >= 0 else self._final_acp
        eps = self.pipe.unet(x, t, cond, code)
        x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x - a**0.5 * x0) / (1 - a) ** 0.5
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    def render(self, w: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        n, d = self.w_shape
        if not isinstance(w, torch.Tensor) or w.ndim != 3 or tuple(w.shape[1:]) != (n, d):
            raise InvalidInput("w", f"a (B, {n}, {d}) tensor (the global code as tokens)",
                               tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__)
        psi = self._check_psi(psi)
        b = max(w.shape[0], psi.shape[0])
        if psi.shape[0] != b:
            psi = psi.expand(b, -1)
        dt = self.pipe.dtype
        code = w.reshape(w.shape[0], n * d).to(self._source.device, dt)
        if code.shape[0] != b:
            code = code.expand(b, -1)
        cond = self.cond(psi).to(dt)
        x = self._noise.expand(b, -1, -1, -1)
        for i in range(len(self._timesteps)):
            if self.checkpoint and torch.is_grad_enabled():
                x = torch_checkpoint(self._step, x, cond, code, i, use_reentrant=False)
            else:
                x = self._step(x, cond, code, i)
        return ((x.float() + 1) / 2).clamp(0, 1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DiffusionRigGenerator:
        """Move the pipeline and the source tensors (``dtype`` applies to the UNet/encoder; buffers
        and outputs stay float32)."""
        dev = torch.device(device) if device is not None else self._source.device
        self.pipe.unet.to(device=dev, dtype=dtype)
        self.pipe.encoder.to(device=dev, dtype=dtype)
        self.model = self.model.to(dev)
        self.params = self.params.to(device=dev)
        self._source = self._source.to(dev)
        self._w0 = self._w0.to(dev)
        self._psi0 = self._psi0.to(dev)
        self._noise = self._noise.to(dev, dtype or self._noise.dtype)
        return self


def build_diffusionrig(image: np.ndarray, params: Any, model: Any, *, weights: str | Path | None = None,
                       pipeline: Any = None, device: str = "cpu", personal_identity: bool = True,
                       **kw: Any) -> DiffusionRigGenerator:
    """The registry's builder: ``pipeline`` (in memory) or ``weights`` (a DiffusionRig pipeline folder
    or the authors' ``model_*.pt``, loaded as the diffusionrig engine does, with a personalised
    model's album identity unless ``personal_identity=False``); ``kw`` go to DiffusionRigGenerator."""
    from facerig.engines.diffusionrig.engine import DiffusionRigEngine

    if pipeline is None:
        if weights is None:
            raise AssetMissing("DiffusionRig weights", "weights= / pipeline=",
                               "pass weights=PATH (a pipeline folder from `facerig train diffusionrig`, or model_*.pt)")
        if not Path(weights).exists():
            raise AssetMissing(f"DiffusionRig weights {weights}", str(Path(weights).parent),
                               "pass weights=PATH of a pipeline folder or model_*.pt that exists")
    eng = DiffusionRigEngine(weights, device, pipeline=pipeline, personal_identity=personal_identity)
    identity = eng._album_identity(params, model)
    return DiffusionRigGenerator(eng.pipe, image, params, model, identity=identity, **kw)
