"""Objectives of the dual mappers (METHODS.md, "Dual Mappers").

Every objective here is bound once per source generator (``bind(generator)`` computes the source-side
targets without gradients) and the bound objective maps rendered images (B, 3, H, W) in [0, 1] to a
dict of UNWEIGHTED loss terms; the trainer multiplies each by the objective's ``weight``.

* :class:`ClipObjective`: ``1 - cos(E(render), target)`` with ``target =
  subspace_target(E(source), E(prompts), k, amplify)`` (:mod:`.subspace`) and an injected CLIP
  (``encode_image`` differentiable, ``encode_text``); :class:`HFClipEncoder` adapts a local
  transformers ``CLIPModel`` folder, preprocessing in torch so gradients reach the pixels.
* :class:`IdentityObjective`: :class:`facerig.eval.identity.IdentityLoss` (the torch port of dlib's
  ResNet; 1 - cosine to the descriptor of ``generator.source_image()`` at ``generator.points5()``).
* :class:`DeltaPenalty`: ``l2_dw = mean_b ||dw_b||^2 / N`` (squared norm per w token) and
  ``l2_dpsi = mean_b ||dpsi_b||^2``, each with its weight.
* :class:`OfflineExpressionObjective` (no CLIP): the expression RE-ESTIMATED FROM THE RENDERED
  PIXELS against a target expression from the text (estimator :data:`OFFLINE_ESTIMATOR`):

  1. landmarks: ``p0 = generator.landmarks(psi0)`` and ``J = d landmarks / d psi`` at ``psi0``; up
     to ``max_landmarks`` landmarks are tracked, chosen round-robin over the coefficients (each in
     turn takes its most-moving landmark ``||J_lk||`` not yet taken and at least a patch radius
     from the taken ones), so brows and lids are observed and not only the jaw; nothing is assumed
     about landmark indices;
  2. tracking: both images are resized to ``work_size`` px (longest side, only ever down); for each
     tracked landmark a (2r+1)^2 patch of the SOURCE image around ``p0`` is matched against the
     RENDER over integer offsets ``o`` in ``[-R, R]^2`` by zero-mean normalised cross-correlation
     (NCC) over the three channels (``r = patch_frac * work size``, ``R = search_frac * work size``);
     the integer peak maximises ``ncc(o) - motion_prior * |o|^2 / R^2`` (the prior only picks the
     peak, so a look-alike patch farther away does not win a near tie), and a parabola through the
     peak and its neighbours on each axis gives the sub-pixel displacement ``d_l`` (differentiable
     in the render's pixels; the peak choice itself is piecewise constant);
  3. ``psi_hat = psi0 + (J^T C J + lambda I)^-1 J^T C d``, per image, with ``C`` the tracking
     confidences (no gradient: the squared peak NCC, 0 for flat source patches and for peaks on the
     search window's border) and the ridge ``lambda = ridge * trace(J^T J) / K`` (the ridge pulls
     coefficients the landmarks cannot tell apart towards ``psi0``);
  4. the target ``psi*`` = the preset recipe the text matches (:func:`facerig.rig.text.match_text`, :func:`facerig.rig.presets.preset_recipe`
     times the intensity, plus the preset's strong shapes as :func:`facerig.rig.expression.preset_vector`
     adds them; no HEADROOM scaling) on the coefficients the recipe names (``u = 1``) and ``psi0``
     elsewhere (``u = keep_weight``). ``target_psi={name: value}`` replaces the text recipe (FLAME
     generators have no ARKit names);
  5. the loss, ``compare="landmarks"`` (default): the tracked displacements against the
     displacements the TARGET would produce, ``t_l = landmarks(psi*)_l - landmarks(psi0)_l`` (the
     face model's geometry at a fixed expression, computed once at bind time, never the mapper's
     psi): ``sum_l c_l ||d_l - t_l||^2 / (L' * mean_l ||t_l||^2)`` with weights (no gradient)
     ``c_l = 0.25 + 0.75 ncc_peak^2`` on textured patches; a peak on the window's border keeps its
     clipped displacement (a large error, not a dropped term). It is 1 for the unedited source and
     0 for a render whose landmarks moved exactly as the recipe's. ``compare="psi"``: the step-3
     re-estimate against the recipe, ``sum_k u_k (psi_hat_k - psi*_k)^2 / sum_k u_k`` (the first
     version). Why the default changed: on renders AT the recipe's psi (warp generator, 4 real
     portraits, text intensity 0.8) the psi re-estimate recovered, as a fraction of the recipe's
     change, 0.49 (smile), 0.29 (angry), 0.37 (sad), 0.01 (close eyes), 0.71 (raise brows), 0.53
     (frown brows) -- 52 coefficients from about 80 tracks is ill-posed and the ridge spreads a
     motion over look-alike coefficients -- so a mapper trained on it stalled at about half the
     preset and was pushed into other coefficients (a smile that opened the jaw); the tracked
     displacements themselves recovered 0.67, 0.78, 0.84, 0.52, 0.91, 0.78 of the target
     displacements (projection on them), and the landmark loss never needs the ill-posed solve.
     ``estimate`` (psi_hat) stays available for inspection.

  It reads only the render's pixels, the source image and the face model's landmark geometry at the
  SOURCE expression: the mapper's own ``psi`` never enters (a render that ignores psi gives zero
  gradient to psi). Limits: it sees motion only (appearance changes such as teeth, wrinkles or a
  closed lid that does not move its patch are invisible to it), displacements beyond ``R`` are
  clipped, the linearisation is at ``psi0``, a patch that changes shape (a lid over the eye, lips
  parting) matches worse than one that moves, and look-alike patches within the search window can
  be confused; the appearance latent can shift NCC peaks too (a texture mapper under a weak w
  penalty painted blotches that moved the tracker instead of the expression: keep
  ``DeltaPenalty.w_weight`` high, the default 1.0, with this objective). Measured: on the 64 px test face psi_hat is within 0.05 of the true psi for psi in
  [0, 0.6] (identical blobs 7 px apart confused the tracker before the motion prior); on a real
  photo warped by a blendshape rig (astronaut, 192 px, 52 ARKit coefficients, defaults) the mean
  error on a preset's coefficients at intensity 0.8 was 0.10 (smile), 0.15 (sad), 0.17 (open
  mouth), 0.24 (frown brows), 0.33 (raise brows), and closing the eyes was NOT seen (0.76: the lid
  patches change shape, about 40 % of the lid motion was measured) -- a coarse probe, not a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from facerig.engines.dualmapper.generator import RigGenerator
from facerig.engines.dualmapper.subspace import DEFAULT_PROMPTS, subspace_target, target_index
from facerig.errors import AssetMissing, InvalidInput

__all__ = ["BoundObjective", "ClipEncoder", "ClipObjective", "DeltaPenalty", "HFClipEncoder", "IdentityObjective",
           "OFFLINE_ESTIMATOR", "OfflineExpressionObjective", "Objective", "expression_target"]

log = logging.getLogger(__name__)

OFFLINE_ESTIMATOR = ("offline expression re-estimate: NCC landmark tracking of the source into the render + "
                     "ridge least squares through d landmarks / d psi at psi0 (no CLIP)")

#: CLIP's (OpenAI) image normalisation, used when the model folder has no preprocessor config
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

BoundObjective = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class Objective(Protocol):
    name: str
    weight: float

    def bind(self, generator: RigGenerator) -> BoundObjective:
        ...


class ClipEncoder(Protocol):
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        ...

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        ...


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInput(name, "a (B, 3, H, W) tensor in [0, 1]", getattr(images, "shape", type(images).__name__))
    return images


def _features(out: Any) -> torch.Tensor:
    """transformers < 5 returns the projected features, >= 5 an output with them as pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFClipEncoder:
    """A transformers ``CLIPModel`` (a local folder, loaded with ``local_files_only=True``, or the
    model object with its tokenizer) behind ``encode_image`` / ``encode_text``.

    ``encode_image(images (B, 3, H, W) in [0, 1]) -> (B, D)`` is differentiable: CLIP's preprocessing
    in torch (bicubic, antialiased resize of the shortest side to the model's image size, centre
    crop, normalisation with the folder's image mean/std or CLIP's). ``encode_text(list[str]) ->
    (P, D)`` runs without gradients. The model is frozen (eval, no parameter gradients).
    """

    def __init__(self, model: str | Path | Any, tokenizer: Any = None, *, device: Any = None):
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as e:  # pragma: no cover - transformers is in the diffusion extra
            raise AssetMissing("transformers (for a CLIP objective)", "the Python environment",
                               "pip install 'facerig[diffusion]'") from e
        mean, std = CLIP_MEAN, CLIP_STD
        if isinstance(model, (str, Path)):
            p = Path(model)
            if not p.is_dir():
                raise InvalidInput("clip_model", "a local Hugging Face CLIP model folder", str(model))
            try:
                self.model = CLIPModel.from_pretrained(str(p), local_files_only=True)
                self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(p), local_files_only=True)
            except (OSError, ValueError) as e:
                raise InvalidInput("clip_model", "a CLIP model folder (config, weights, tokenizer)",
                                   f"{type(e).__name__}: {e}".splitlines()[0]) from e
            pre = p / "preprocessor_config.json"
            if pre.is_file():
                import json

                cfg = json.loads(pre.read_text())
                mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
            self.estimator = f"CLIP ({p.name}, Hugging Face transformers, differentiable torch preprocessing)"
        else:
            if tokenizer is None:
                raise InvalidInput("tokenizer", "the CLIP tokenizer of the given CLIPModel object", None)
            self.model, self.tokenizer = model, tokenizer
            self.estimator = "CLIP (CLIPModel object, differentiable torch preprocessing)"
        self.model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)
        vision: Any = self.model.config.vision_config
        self.image_size = int(vision.image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_images(images)
        s = self.image_size
        h, w = x.shape[-2:]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top:top + s, left:left + s]
        return (x - self.mean.to(x)) / self.std.to(x)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        dt = next(self.model.parameters()).dtype
        x = self.preprocess(images.to(self.device))
        return _features(self.model.get_image_features(pixel_values=x.to(dt)))

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InvalidInput("texts", "a non-empty list of non-empty strings", texts)
        tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tok))


class ClipObjective:
    """``1 - cos(E(render), target)``, target by subspace projection of the source's embedding on the
    span of the prompt embeddings with the target prompt's component amplified (:mod:`.subspace`).

    ``prompts``: {name: prompt} (default :data:`~.subspace.DEFAULT_PROMPTS`); ``target``: a name in
    it; ``text``: a prompt for the target that replaces (or, for a new name, adds) its entry.
    Terms: ``{"clip": ...}``; the bound callable carries ``target_embedding`` (1, D) for inspection.
    """

    name = "clip"

    def __init__(self, clip: ClipEncoder, target: str = "smile", *, text: str | None = None,
                 prompts: Mapping[str, str] | None = None, amplify: float = 2.0, component: str = "coefficient",
                 weight: float = 1.0):
        if not (hasattr(clip, "encode_image") and hasattr(clip, "encode_text")):
            raise InvalidInput("clip", "an object with encode_image(images) and encode_text(texts)", type(clip).__name__)
        table = dict(prompts if prompts is not None else DEFAULT_PROMPTS)
        key = str(target).strip().lower().replace("-", "_").replace(" ", "_")
        if text is not None:
            table[key] = text
        self.names = list(table)
        self.prompts = list(table.values())
        self.index = target_index(key, self.names)
        self.clip, self.amplify, self.component, self.weight = clip, float(amplify), component, float(weight)
        self.estimator = getattr(clip, "estimator", type(clip).__name__)
        self._text: torch.Tensor | None = None

    def text_embeddings(self) -> torch.Tensor:
        if self._text is None:
            with torch.no_grad():
                self._text = self.clip.encode_text(self.prompts).detach()
        return self._text

    def bind(self, generator: RigGenerator) -> BoundObjective:
        with torch.no_grad():
            src = generator.source_image()
            e = self.clip.encode_image(src)
        tgt = subspace_target(e, self.text_embeddings(), self.index, self.amplify, component=self.component)
        tgt = tgt.to(device=e.device, dtype=e.dtype)

        def terms(images: torch.Tensor) -> dict[str, torch.Tensor]:
            z = self.clip.encode_image(_check_images(images))
            return {"clip": (1 - F.cosine_similarity(z, tgt.expand_as(z), dim=1)).mean()}

        terms.target_embedding = tgt  # type: ignore[attr-defined]
        return terms


class IdentityObjective:
    """1 - cosine between dlib-port descriptors of the render and of the source, both at the
    generator's ``points5()`` (:class:`facerig.eval.identity.IdentityLoss`, loaded once per
    objective; pass ``loss=`` to share one). Terms: ``{"identity": ...}``."""

    name = "identity"

    def __init__(self, loss: Any = None, weight: float = 0.5):
        self._loss = loss
        self.weight = float(weight)

    @property
    def loss(self) -> Any:
        if self._loss is None:
            from facerig.eval.identity import IdentityLoss

            self._loss = IdentityLoss(mode="cosine")
        return self._loss

    @property
    def estimator(self) -> str:
        return str(getattr(self.loss, "estimator", "identity network"))

    def bind(self, generator: RigGenerator) -> BoundObjective:
        loss = self.loss
        src = generator.source_image()
        loss.to(src.device)
        dt = next(loss.parameters()).dtype  # the network's dtype (float32); renders are cast to it
        p5 = generator.points5().to(device=src.device, dtype=dt)
        with torch.no_grad():
            target = loss.embed(src.to(dt), p5).detach()

        def terms(images: torch.Tensor) -> dict[str, torch.Tensor]:
            x = _check_images(images)
            return {"identity": loss(x.to(dt), p5.expand(x.shape[0], 5, 2), target).to(x.dtype)}

        return terms


class DeltaPenalty:
    """L2 penalty on the mapper's outputs: ``l2_dw = mean_b ||dw_b||^2 / N`` and
    ``l2_dpsi = mean_b ||dpsi_b||^2`` (weights ``w_weight``, ``psi_weight``).

    Defaults from one run (the warp adapter, astronaut + grace_hopper, offline objective, 60 steps):
    with ``w_weight=0.01`` the texture mapper painted blotches that shift the NCC tracker's peaks
    instead of changing the expression; ``1.0`` kept the texture clean and the expression moved.

    ``psi_scale`` (K,), optional: a factor per coefficient inside ``l2_dpsi`` (``sum_k s_k dpsi_k^2``),
    and ``psi_scale_down`` (K,) the factor for negative deltas when it differs (a coefficient that
    may decrease freely but not increase);
    ``facerig train dualmapper`` uses it with the offline objective to hold still the coefficients the
    target's preset does not name (the landmark probe confuses motions: a brow mapper opened the jaw).
    """

    name = "l2"

    def __init__(self, w_weight: float = 1.0, psi_weight: float = 0.01, psi_scale: Sequence[float] | None = None,
                 psi_scale_down: Sequence[float] | None = None):
        self.w_weight, self.psi_weight = float(w_weight), float(psi_weight)
        self.psi_scale = None if psi_scale is None else torch.as_tensor(list(psi_scale), dtype=torch.float32)
        self.psi_scale_down = (None if psi_scale_down is None
                               else torch.as_tensor(list(psi_scale_down), dtype=torch.float32))
        for name, t in (("psi_scale", self.psi_scale), ("psi_scale_down", self.psi_scale_down)):
            if t is not None and bool((t < 0).any()):
                raise InvalidInput(name, "factors >= 0", t.tolist())

    def __call__(self, dw: torch.Tensor, dpsi: torch.Tensor) -> dict[str, torch.Tensor]:
        sq = dpsi.pow(2)
        k = dpsi.shape[1]
        for name, t in (("psi_scale", self.psi_scale), ("psi_scale_down", self.psi_scale_down)):
            if t is not None and t.numel() != k:
                raise InvalidInput(name, f"{k} factors (one per coefficient)", t.numel())
        if self.psi_scale is not None:
            up = self.psi_scale.to(sq)
            down = self.psi_scale_down.to(sq) if self.psi_scale_down is not None else up
            sq = sq * torch.where(dpsi >= 0, up, down)
        return {"l2_dw": dw.pow(2).sum(dim=(1, 2)).mean() / dw.shape[1], "l2_dpsi": sq.sum(dim=1).mean()}

    @property
    def weights(self) -> dict[str, float]:
        return {"l2_dw": self.w_weight, "l2_dpsi": self.psi_weight}


# ----------------------------------------------------------------------------------------------
# offline (no CLIP) expression objective


def expression_target(text: str, psi_names: Sequence[str], psi0: torch.Tensor, *, text_backend: str = "auto",
                      target_psi: Mapping[str, float] | None = None, keep_weight: float = 0.1
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(psi* (K,), u (K,), info)`` of the module docstring: the preset recipe ``text`` matches
    (or ``target_psi``) on the coefficients it names (weight 1), ``psi0`` elsewhere (``keep_weight``)."""
    from facerig.rig.presets import preset_recipe, strong_recipe
    from facerig.rig.text import match_text

    names = list(psi_names)
    info: dict[str, Any] = {}
    if target_psi is not None:
        recipe = {str(k): float(v) for k, v in target_psi.items()}
        unknown = [k for k in recipe if k not in names]
        if unknown:
            raise InvalidInput("target_psi", f"names among the generator's psi_names ({', '.join(names[:6])}, ...)",
                               unknown)
        info["source"] = "target_psi"
    else:
        m = match_text(text, backend=text_backend)
        k = min(max((m.intensity - 0.5) / 0.5, 0.0), 1.0)
        recipe = {n: v * m.intensity for n, v in preset_recipe(m.preset).items()}
        for n, v in strong_recipe(m.preset).items():
            recipe[n] = recipe.get(n, 0.0) + v * k
        info.update(source="text", preset=m.preset, intensity=m.intensity, match=m.backend)
        missing = sorted(n for n in recipe if n not in names)
        recipe = {n: v for n, v in recipe.items() if n in names}
        if not recipe:
            raise InvalidInput("generator.psi_names", f"coefficients named in preset {m.preset!r}'s recipe (ARKit "
                               "blendshape names); give target_psi={name: value} otherwise", names[:6])
        if missing:
            log.info("offline expression target %r: the generator has no %s (ignored)", m.preset, ", ".join(missing))
        info["ignored"] = missing
    target = psi0.detach().reshape(-1).clone()
    weight = torch.full_like(target, float(keep_weight))
    for n, v in recipe.items():
        target[names.index(n)] = v
        weight[names.index(n)] = 1.0
    info["recipe"] = recipe
    return target, weight, info


def _landmark_jacobian(generator: RigGenerator, psi0: torch.Tensor) -> torch.Tensor:
    """d landmarks / d psi at psi0: (L, 2, K)."""

    def f(p: torch.Tensor) -> torch.Tensor:
        return generator.landmarks(p)[0]

    x = psi0.detach().clone()
    try:
        jac = torch.autograd.functional.jacobian(f, x, vectorize=True)
    except (RuntimeError, NotImplementedError):  # ops without batching rules: one backward per output
        jac = torch.autograd.functional.jacobian(f, x)
    return jac[:, :, 0, :].detach()


def _select_landmarks(jac: torch.Tensor, points: torch.Tensor, n_max: int, min_dist: float) -> torch.Tensor:
    """Indices of up to ``n_max`` landmarks, round-robin over the coefficients: each coefficient in
    turn takes its most-moving landmark (``||d landmark / d psi_k||``) not yet chosen and at least
    ``min_dist`` from the chosen ones, so every coefficient that moves something is observed (not
    only the jaw, whose landmarks move most)."""
    per = jac.norm(dim=1)  # (L, K)
    tiny = 1e-6 * max(float(per.max()), 1e-30)
    order = torch.argsort(per, dim=0, descending=True).T.tolist()  # K lists of landmark indices
    ptr = [0] * per.shape[1]
    chosen: list[int] = []
    taken = torch.zeros(per.shape[0], dtype=torch.bool)
    progress = True
    while len(chosen) < n_max and progress:
        progress = False
        for kk, cand in enumerate(order):
            while ptr[kk] < len(cand):
                li = cand[ptr[kk]]
                ptr[kk] += 1
                if float(per[li, kk]) <= tiny:
                    ptr[kk] = len(cand)
                    break
                if taken[li]:
                    continue
                if chosen and float((points[chosen] - points[li]).norm(dim=1).min()) < min_dist:
                    continue
                chosen.append(li)
                taken[li] = True
                progress = True
                break
            if len(chosen) >= n_max:
                break
    return torch.tensor(chosen, dtype=torch.long)


def _sample_windows(img: torch.Tensor, centres: torch.Tensor, half: int) -> torch.Tensor:
    """Bilinear windows of (2 half + 1)^2 pixels centred on ``centres`` (B, L, 2) given in frame
    coordinates (pixel centres at +0.5) of ``img`` (B, C, H, W) -> (B, L, C, S, S)."""
    b, c, h, w = img.shape
    ar = torch.arange(-half, half + 1, device=img.device, dtype=img.dtype)
    gy, gx = torch.meshgrid(ar, ar, indexing="ij")
    x = centres[..., 0, None, None] + gx  # (B, L, S, S) frame coordinates
    y = centres[..., 1, None, None] + gy
    grid = torch.stack([2 * x / w - 1, 2 * y / h - 1], dim=-1)  # align_corners=False normalisation
    n = centres.shape[1]
    s = 2 * half + 1
    out = F.grid_sample(img, grid.reshape(b, n * s, s, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, c, n, s, s).permute(0, 2, 1, 3, 4)


class OfflineExpressionObjective:
    """The expression re-estimated from the rendered pixels against a target from the text (no CLIP);
    see the module docstring for the estimator and its limits.

    ``bind(generator)`` returns the terms callable (``{"expression": ...}``) with ``.estimate(images)
    -> psi_hat (B, K)``, ``.track(images) -> displacements (B, L', 2)`` and ``.info`` attached.
    """

    name = "expression"
    estimator = OFFLINE_ESTIMATOR
    #: floor (work px) of the target's rms displacement that normalises the landmark loss
    MIN_TARGET_MOTION = 0.5
    #: landmark weight floor: ``c_l = floor + (1 - floor) ncc_peak^2`` in the landmark comparison
    CONF_FLOOR = 0.25

    def __init__(self, text: str = "smile", *, target_psi: Mapping[str, float] | None = None,
                 text_backend: str = "auto", keep_weight: float = 0.1, max_landmarks: int = 80,
                 work_size: int = 128, patch_frac: float = 0.04, search_frac: float = 0.08,
                 motion_prior: float = 0.2, ridge: float = 1e-2, compare: str = "landmarks", weight: float = 1.0):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("text", "a non-empty description of the target expression", text)
        for n, v in (("max_landmarks", max_landmarks), ("work_size", work_size)):
            if not isinstance(v, int) or v < 1:
                raise InvalidInput(n, "a positive integer", v)
        for n, f in (("patch_frac", patch_frac), ("search_frac", search_frac)):
            if not f > 0:
                raise InvalidInput(n, "a positive number", f)
        self.text, self.target_psi, self.text_backend = text, target_psi, text_backend
        self.keep_weight, self.max_landmarks, self.work_size = float(keep_weight), max_landmarks, work_size
        self.patch_frac, self.search_frac = float(patch_frac), float(search_frac)
        if not motion_prior >= 0:
            raise InvalidInput("motion_prior", "a number >= 0", motion_prior)
        self.motion_prior, self.ridge, self.weight = float(motion_prior), float(ridge), float(weight)
        if compare not in ("landmarks", "psi"):
            raise InvalidInput("compare", "'landmarks' (tracked vs target displacements) or 'psi' (re-estimated psi "
                               "vs the recipe)", compare)
        self.compare = compare
        log.info("dual mapper objective: %s (text %r)", OFFLINE_ESTIMATOR, text)

    def bind(self, generator: RigGenerator) -> BoundObjective:
        src = generator.source_image().detach()
        _, psi0 = generator.initial()
        psi0 = psi0.detach().to(src)
        h, w = src.shape[-2:]
        scale = min(1.0, self.work_size / max(h, w))
        size = (max(8, round(h * scale)), max(8, round(w * scale)))
        sy, sx = size[0] / h, size[1] / w
        with torch.no_grad():
            lm0 = generator.landmarks(psi0).detach().to(src)[0]  # (L, 2)
        jac = _landmark_jacobian(generator, psi0).to(src)  # (L, 2, K)
        k = jac.shape[-1]
        fscale = torch.tensor([sx, sy], dtype=src.dtype, device=src.device)
        r = max(1, round(self.patch_frac * max(size)))
        big = max(1, round(self.search_frac * max(size)))
        jac_w = jac * fscale[None, :, None]  # work pixels per unit psi
        idx = _select_landmarks(jac_w, lm0 * fscale, self.max_landmarks, min_dist=float(r))
        if idx.numel() == 0:
            raise InvalidInput("generator.landmarks", "landmarks that move with psi (non-zero d landmarks / d psi)",
                               "all derivatives zero")
        n_keep = int(idx.numel())
        centres = lm0[idx] * fscale  # work-frame coordinates
        jw = jac_w[idx].reshape(-1, k)  # (2L', K)
        lam = self.ridge * float(torch.trace(jw.T @ jw)) / k
        eye = torch.eye(k, dtype=jw.dtype, device=jw.device)
        src_w = F.interpolate(src, size=size, mode="bilinear", align_corners=False, antialias=True) \
            if size != (h, w) else src
        tpl = _sample_windows(src_w, centres[None], r)[0]  # (L', C, P, P)
        tpl = tpl - tpl.mean(dim=(1, 2, 3), keepdim=True)
        tnorm = tpl.flatten(1).norm(dim=1).clamp_min(1e-6)
        flat = tnorm < 1e-3
        if bool(flat.all()):
            raise InvalidInput("generator.source_image", "texture around the moving landmarks", "flat patches")
        npx = tpl[0].numel()
        tgt, wts, info = expression_target(self.text, generator.psi_names, psi0, text_backend=self.text_backend,
                                           target_psi=self.target_psi, keep_weight=self.keep_weight)
        tgt, wts = tgt.to(src), wts.to(src)
        info.update(estimator=OFFLINE_ESTIMATOR, landmarks=n_keep, work_size=size, patch=2 * r + 1, search=big,
                    flat_patches=int(flat.sum()))
        side = 2 * big + 1
        ar = torch.arange(-big, big + 1, dtype=src.dtype, device=src.device) / big
        prior = self.motion_prior * (ar[:, None] ** 2 + ar[None, :] ** 2)  # peak choice prefers small motions
        valid = (~flat).to(src.dtype)
        # the target's displacements of the tracked landmarks (work px): a fixed quantity of the
        # source and the recipe (the face model's landmarks at psi*), never the mapper's psi
        tgt_b = tgt[None]
        bounds = getattr(generator, "psi_bounds", None)
        if bounds is not None:
            tgt_b = torch.minimum(torch.maximum(tgt_b, torch.as_tensor(bounds[0]).to(tgt_b)),
                                  torch.as_tensor(bounds[1]).to(tgt_b))
        with torch.no_grad():
            t_disp = (generator.landmarks(tgt_b).detach().to(src)[0] - lm0)[idx] * fscale  # (L', 2)
        t_disp = t_disp * valid[:, None]
        t_energy = max(float((t_disp.pow(2).sum(1) * valid).sum() / valid.sum()), self.MIN_TARGET_MOTION ** 2)
        info.update(compare=self.compare, target_motion_px=round(t_energy ** 0.5, 3))

        def track(images: torch.Tensor, raw: bool = False) -> Any:
            x = _check_images(images)
            if tuple(x.shape[-2:]) != (h, w):
                raise InvalidInput("images", f"renders of the generator's size {(h, w)}", tuple(x.shape[-2:]))
            b = x.shape[0]
            xw = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True) \
                if size != (h, w) else x
            win = _sample_windows(xw, centres[None].expand(b, -1, -1).to(xw), r + big)  # (B, L', C, S, S)
            n, c, s = win.shape[1], win.shape[2], win.shape[-1]
            inp = win.reshape(1, b * n * c, s, s)
            weight = tpl.to(xw).repeat(b, 1, 1, 1)  # (B L', C, P, P)
            corr = F.conv2d(inp, weight, groups=b * n).reshape(b, n, -1)  # sum (x - mean x) t' = sum x t'
            box = torch.ones(b * n, c, 2 * r + 1, 2 * r + 1, dtype=xw.dtype, device=xw.device)
            s1 = F.conv2d(inp, box, groups=b * n).reshape(b, n, -1)
            s2 = F.conv2d(inp * inp, box, groups=b * n).reshape(b, n, -1)
            var = (s2 - s1 * s1 / npx).clamp_min(1e-8)
            ncc = (corr / (var.sqrt() * tnorm.to(xw)[None, :, None])).reshape(b, n, side, side)
            # integer peak (not differentiable, piecewise constant), then a parabola through the
            # peak and its two neighbours per axis (differentiable in the NCC values)
            best = (ncc.detach() - prior).flatten(2).argmax(dim=-1)  # (B, L')
            iy, ix = best // side, best % side
            cy, cx = iy.clamp(1, side - 2), ix.clamp(1, side - 2)

            def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
                return ncc.flatten(2).gather(-1, (yy * side + xx)[..., None])[..., 0]

            c0 = at(iy, ix)
            frac = []
            for lo, hi, inside in ((at(iy, cx - 1), at(iy, cx + 1), ix == cx), (at(cy - 1, ix), at(cy + 1, ix), iy == cy)):
                curv = (lo - 2 * c0 + hi).clamp(max=-1e-4)
                frac.append(torch.where(inside, (0.5 * (lo - hi) / curv).clamp(-0.5, 0.5), torch.zeros_like(c0)))
            disp = torch.stack([ix.to(xw.dtype) - big + frac[0], iy.to(xw.dtype) - big + frac[1]], dim=-1)
            # confidence (no gradient): the squared peak NCC, 0 for flat templates and for peaks on the
            # window's border (the motion may be larger than the search range)
            conf = c0.detach().clamp(0, 1) ** 2 * valid.to(xw)[None] * ((ix == cx) & (iy == cy)).to(xw.dtype)
            if raw:
                return disp * valid.to(xw)[None, :, None], conf, c0
            return disp * valid.to(xw)[None, :, None], conf

        def estimate(images: torch.Tensor) -> torch.Tensor:
            d, conf = track(images)
            cw = conf.repeat_interleave(2, dim=1)  # (B, 2L') x and y rows
            jt = jw.T.to(d)
            a = (jt[None] * cw[:, None, :]) @ jw.to(d)[None] + lam * eye.to(d)[None]  # (B, K, K)
            rhs = (jt[None] @ (cw * d.reshape(d.shape[0], -1))[..., None])  # (B, K, 1)
            return psi0.to(d) + torch.linalg.solve(a, rhs)[..., 0]

        def terms(images: torch.Tensor) -> dict[str, torch.Tensor]:
            if self.compare == "psi":
                ph = estimate(images)
                err = ((ph - tgt.to(ph)) ** 2 * wts.to(ph)).sum(dim=1) / wts.sum()
                return {"expression": err.mean()}
            d, _, c0 = track(images, raw=True)
            # weights (no gradient): texture at the source, 0.25 + 0.75 peak NCC^2 at the render; a peak
            # on the window's border keeps its clipped displacement (a large error, not a dropped term)
            fl = self.CONF_FLOOR
            cw = valid.to(d)[None] * (fl + (1 - fl) * c0.detach().clamp(0, 1) ** 2)
            e = (d - t_disp.to(d)[None]).pow(2).sum(-1)  # (B, L')
            err = (cw * e).sum(dim=1) / valid.sum().to(d) / t_energy
            return {"expression": err.mean()}

        terms.estimate = estimate  # type: ignore[attr-defined]
        terms.track = lambda images: track(images)[0]  # type: ignore[attr-defined]
        terms.track_confidence = track  # type: ignore[attr-defined]
        terms.info = info  # type: ignore[attr-defined]
        terms.target = tgt  # type: ignore[attr-defined]
        terms.target_displacement = t_disp  # type: ignore[attr-defined]
        terms.landmark_index = idx  # type: ignore[attr-defined]
        terms.work_scale = fscale  # type: ignore[attr-defined]
        return terms
