"""The DiffusionRig engine: edits through a trained (or released) DiffusionRig model.

``DiffusionRigEngine(weights=PATH)``: ``PATH`` is a pipeline folder (``save_pretrained`` layout:
``unet/``, ``encoder/`` [, ``scheduler/``]; a training run folder whose ``final/pipeline`` or
``pipeline`` holds one also works) or the authors' ``model_*.pt`` (strict keys, paper config,
trained on FLAME/DECA buffers).

* :meth:`prepare`: the FFHQ crop of the source at the model's resolution, from the fitted face's own
  landmarks projected into the frame (no second detection); the source buffers in that crop;
  the global code of the aligned source; one fixed starting noise per source (``seed``). The face
  model of the buffers must be the one the weights were trained with (``IncompatibleModel``).
* :meth:`render_frame`: the target params' buffers in the same crop
  (:func:`facerig.train.data.render_aligned` + :func:`.buffers.model_buffers`), DDIM (``steps``,
  default 20) from the fixed noise with the source's code, and the result pasted back into the
  source frame (feathered crop, :func:`facerig.detect.crops.paste_back`).
* Personalised weights (stage 2, :func:`personalize_diffusionrig`) carry the album's mean identity
  in ``personal.json`` next to ``unet/``. As in DiffusionRig, the buffers of the source and of every
  edit are then rendered with that identity shape instead of the source's fitted one (the crop
  still comes from the source's own fit). The identity must be of the same face model as the source
  params (``IncompatibleModel`` otherwise); ``personal_identity=False`` renders with the fitted
  identity instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from facerig.engines.base import Engine, PoseRange, _check_image
from facerig.errors import IncompatibleModel, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["DiffusionRigEngine", "DiffusionRigSource", "find_pipeline_dir"]


def find_pipeline_dir(path: str | Path) -> Path | None:
    """The pipeline folder at ``path`` or inside a run folder (``final/pipeline``, ``pipeline``)."""
    p = Path(path)
    for c in (p, p / "final" / "pipeline", p / "pipeline", p / "final"):
        if (c / "unet").is_dir() and (c / "encoder").is_dir():
            return c
    return None


@dataclass
class DiffusionRigSource:
    frame: np.ndarray
    crop: Any              # CropTransform frame -> aligned crop (model resolution)
    aligned: torch.Tensor  # (1, 3, S, S) in [0, 1]
    code: torch.Tensor     # (1, latent)
    noise: torch.Tensor    # (1, 3, S, S)
    source_cond: torch.Tensor
    model: Any
    params: Any
    #: (1, K_id) identity the buffers are rendered with instead of the fitted one (personal.json), or None
    identity: torch.Tensor | None = None


class DiffusionRigEngine(Engine):
    name: ClassVar[str] = "diffusionrig"
    requires_weights: ClassVar[bool] = True
    description: ClassVar[str] = "DiffusionRig diffusion model conditioned on rendered buffers (needs --weights)"
    # generates the whole head from buffers, so no hidden cheek is torn open; limited by what FFHQ-style
    # training data covers (DiffusionRig's paper shows turns of about +-30 yaw, +-20 pitch)
    pose_range: ClassVar[PoseRange] = PoseRange(yaw=30.0, pitch=20.0, roll=30.0, source_yaw=50.0,
                                                source_pitch=30.0, warn_source_yaw=35.0)

    def __init__(self, weights: Any = None, device: str = "cpu", *, steps: int = 20, seed: int = 0,
                 eta: float = 0.0, pipeline: Any = None, unet_config: dict[str, Any] | None = None,
                 personal_identity: bool = True, **options: Any) -> None:
        if pipeline is not None and weights is None:
            weights = "<in-memory pipeline>"
        super().__init__(weights, device, **options)
        if options:
            raise InvalidInput("diffusionrig engine options",
                               "steps, seed, eta, pipeline, unet_config, personal_identity", sorted(options))
        self.steps = int(steps)
        self.seed = int(seed)
        self.eta = float(eta)
        self.pipe = pipeline if pipeline is not None else self._load(weights, unet_config)
        #: the album's mean identity of personalised weights ((1, K_id), from personal.json) or None
        self.personal_identity: torch.Tensor | None = None
        self.personal_face_model: str | None = None
        self.personal_file: Path | None = None
        if pipeline is None:
            self._load_personal(Path(weights))
        if isinstance(personal_identity, str):
            low = personal_identity.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise InvalidInput("personal_identity", "true or false", personal_identity)
            personal_identity = low in ("true", "1", "yes", "on")
        self.use_personal_identity = bool(personal_identity)

    def _load(self, weights: Any, unet_config: dict[str, Any] | None) -> Any:
        from .pipeline import DiffusionRigPipeline

        p = Path(weights)
        d = find_pipeline_dir(p) if p.is_dir() else None
        if d is not None:
            return DiffusionRigPipeline.from_pretrained(d, device=self.device)
        if p.is_file() and p.suffix in (".pt", ".pth", ".bin"):
            return DiffusionRigPipeline.from_official_checkpoint(p, unet_config=unet_config, device=self.device)
        raise InvalidInput("--weights", "a DiffusionRig pipeline folder (unet/, encoder/) or a model_*.pt file", str(p))

    def _load_personal(self, weights: Path) -> None:
        d = find_pipeline_dir(weights) if weights.is_dir() else None
        f = d / "personal.json" if d is not None else None
        if f is None or not f.is_file():
            return
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInput(str(f), "a readable personal.json", str(e)) from None
        ident: Any = info.get("identity") if isinstance(info, dict) else None  # None: TypeError below
        try:
            t = torch.tensor([float(v) for v in ident], dtype=torch.float32)[None]
        except (TypeError, ValueError):
            raise InvalidInput(f"{f}: identity", "a list of identity coefficients", ident) from None
        if t.shape[1] == 0:
            raise InvalidInput(f"{f}: identity", "a list of identity coefficients", ident)
        fm = info.get("face_model")
        self.personal_identity = t
        self.personal_face_model = fm if isinstance(fm, str) and fm else None
        self.personal_file = f

    def _album_identity(self, params: Any, model: Any) -> torch.Tensor | None:
        """The personal identity to render ``params`` (of face model ``model``) with, or None."""
        if self.personal_identity is None or not self.use_personal_identity:
            return None
        from .buffers import face_model_id

        gid = face_model_id(model)
        fm = self.personal_face_model or self.pipe.unet.config.get("face_model")
        if fm is not None and not (gid == fm or ("-" not in fm and gid.split("-")[0] == fm)):
            raise IncompatibleModel(
                f"the personal identity of these DiffusionRig weights ({self.personal_file}) is of face "
                f"model {fm!r}; the source was fitted with {gid!r} (fit it with {fm!r}, or pass "
                "personal_identity=False to render with the fitted identity)"
            )
        k = int(params.identity.shape[1])
        if self.personal_identity.shape[1] != k:
            raise IncompatibleModel(
                f"the personal identity in {self.personal_file} has {self.personal_identity.shape[1]} "
                f"coefficients; the source params of {gid!r} have {k} (personal_identity=False renders "
                "with the fitted identity)"
            )
        return self.personal_identity

    @staticmethod
    def _with_identity(params: Any, identity: torch.Tensor | None) -> Any:
        if identity is None:
            return params
        ident = identity.to(params.identity.device, params.identity.dtype).expand(params.batch_size, -1)
        return params.replace(identity=ident.clone())

    @property
    def image_size(self) -> int:
        return self.pipe.image_size

    def _generator_seed(self, generator: Any) -> int:
        if isinstance(generator, int):
            return generator
        if isinstance(generator, torch.Generator):
            return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        return self.seed

    def prepare(self, source_image: np.ndarray, source_params: Any, model: Any, **kw: Any) -> DiffusionRigSource:
        from facerig.detect.crops import ffhq_crop, warp_to_crop
        from facerig.fit.api import project_landmarks_to_frame
        from facerig.train.data import render_aligned

        from .buffers import check_face_model

        _check_image(source_image)
        if source_params.batch_size != 1:
            raise InvalidInput("source_params", "the params of one face (batch 1)", source_params.batch_size)
        if source_params.crop is None:
            raise InvalidInput("source_params.crop", "the crop transform of the fitted face", None)
        check_face_model(self.pipe.unet.config.get("face_model"), model)
        h, w = source_image.shape[:2]
        if tuple(source_params.crop[0].frame_size) != (h, w):
            raise InvalidInput("source_image", "the image the params were fitted on", f"{w}x{h}")
        s = self.image_size
        lm = project_landmarks_to_frame(model, source_params)[0]
        pts = np.zeros((478, 2))
        idx = model.landmark_index.cpu().numpy()
        pts[idx] = lm
        crop = ffhq_crop(pts, s, frame_size=(h, w))
        aligned = warp_to_crop(source_image, crop, border="reflect")
        x = torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 255.0
        identity = self._album_identity(source_params, model)
        if identity is not None:
            log.info("DiffusionRig: rendering the buffers with the album's mean identity of %s "
                     "(instead of the source's fitted identity; personal_identity=False turns this off)",
                     self.personal_file)
        with torch.no_grad():
            buf = render_aligned(model, self._with_identity(source_params, identity), s, crop)
        from .buffers import model_buffers

        cond = model_buffers(buf, model, self.pipe.unet)
        code = self.pipe.encode(x)
        seed = self._generator_seed(kw.get("seed"))
        noise = self.pipe.fixed_noise(seed, 1)
        return DiffusionRigSource(source_image, crop, x, code, noise, cond, model, source_params, identity)

    def render_frame(self, state: DiffusionRigSource, target_params: Any, *, generator: Any = None,
                     **kw: Any) -> np.ndarray:
        from facerig.detect.crops import paste_back
        from facerig.train.data import render_aligned

        from .buffers import model_buffers

        if target_params.batch_size != 1:
            raise InvalidInput("target_params", "the params of one face (batch 1)", target_params.batch_size)
        if target_params.model != state.params.model:
            raise IncompatibleModel(f"target params of {target_params.model} for a source of {state.params.model}")
        if target_params.crop is None:
            target_params = target_params.replace(crop=state.params.crop)
        target_params = self._with_identity(target_params, state.identity)
        with torch.no_grad():
            buf = render_aligned(state.model, target_params, self.image_size, state.crop)
        cond = model_buffers(buf, state.model, self.pipe.unet)
        noise = state.noise if generator is None else self.pipe.fixed_noise(self._generator_seed(generator), 1)
        out = self.pipe(cond, global_code=state.code, noise=noise, num_inference_steps=self.steps, eta=self.eta,
                        output_type="np")[0]
        return paste_back(state.frame, out, state.crop)


# ---------------------------------------------------------------------------------------------
# training entry points (`facerig train diffusionrig`, `facerig personalize diffusionrig`)


def _export(run_dir: Path, personal: dict[str, Any] | None = None):
    def export(module: Any, out: Path) -> None:
        import copy

        from .pipeline import DiffusionRigPipeline

        pipe = DiffusionRigPipeline(copy.deepcopy(module.unet), copy.deepcopy(module.encoder))
        pipe.save_pretrained(out / "pipeline")
        if personal is not None:
            (out / "pipeline" / "personal.json").write_text(json.dumps(personal, indent=1))

    return export


def train_diffusionrig(config: str, data: str | Path, out: str | Path, *, max_steps: int | None = None,
                       resume: bool = False, base: str | Path | None = None, freeze_encoder: bool | None = None,
                       identities: list[str] | None = None, personal: dict[str, Any] | None = None) -> Path:
    """Train (stage 1) or fine-tune from ``base`` (stage 2) on prepared shards; returns the exported
    pipeline folder ``OUT/final/pipeline`` (EMA weights when the recipe keeps an EMA)."""
    import dataclasses

    from facerig.train.config import load_recipe
    from facerig.train.data import ShardDataset
    from facerig.train.trainer import Trainer

    from .training import DiffusionRigTrainModule, build_train_module

    recipe = load_recipe(config, engine="diffusionrig")
    if recipe.engine != "diffusionrig":
        raise InvalidInput("--config", "a diffusionrig recipe", recipe.engine)
    tc = recipe.train
    if max_steps is not None:
        tc = dataclasses.replace(tc, max_steps=int(max_steps), save_every=min(tc.save_every, int(max_steps)),
                                 sample_every=0)
    idx_path = Path(data) / "index.json"
    fm = json.loads(idx_path.read_text()).get("face_model") if idx_path.is_file() else None
    if base is not None:
        from .pipeline import DiffusionRigPipeline

        d = find_pipeline_dir(base)
        src = (DiffusionRigPipeline.from_pretrained(d) if d is not None
               else DiffusionRigPipeline.from_official_checkpoint(base))
        freeze = recipe.model.get("freeze_encoder", True) if freeze_encoder is None else freeze_encoder
        module = DiffusionRigTrainModule(src.unet.train(), src.encoder.train(),
                                         p2_gamma=float(recipe.model.get("p2_gamma", 1.0)),
                                         p2_k=float(recipe.model.get("p2_k", 1.0)), freeze_encoder=bool(freeze))
        from .buffers import check_face_model

        if fm is not None:
            check_face_model(module.unet.config.get("face_model"), fm)
    else:
        module = build_train_module(recipe.model, face_model=fm)
    size = int(module.unet.config.image_size)  # type: ignore[attr-defined]  # diffusers FrozenDict: attribute access
    ds = ShardDataset(data, size=size, identities=identities)
    if fm is None:
        from .buffers import face_model_id

        fm = face_model_id(ds.face_model)
    if len(ds) < tc.batch_size:
        tc = dataclasses.replace(tc, batch_size=len(ds))
    trainer = Trainer(module, _CondOnly(ds), tc, out, export_fn=_export(Path(out), personal))
    trainer.run(resume="latest" if resume and (Path(out) / "checkpoints" / "latest").exists() else None)
    return Path(out) / "final" / "pipeline"


class _CondOnly(torch.utils.data.Dataset):
    """Only the tensors the DiffusionRig loss uses (``image``, ``cond``)."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        it = self.ds[i]
        return {"image": it["image"], "cond": it["cond"]}


def personalize_diffusionrig(album: str | Path, base: str | Path, out: str | Path, *, config: str = "paper_stage2",
                             max_steps: int | None = None, resume: bool = False, workers: int = 1,
                             progress: bool = False) -> Path:
    """Stage 2: prepare the album (one identity, shared shape) at the base model's resolution, train
    from ``base`` with the encoder frozen, and store the album's mean identity with the model
    (``personal.json``)."""

    from facerig.train.data import ShardDataset
    from facerig.train.prepare import PrepareOptions

    from .pipeline import DiffusionRigPipeline

    d = find_pipeline_dir(base)
    if d is not None:
        size = int(json.loads((d / "unet" / "config.json").read_text())["image_size"])
    elif Path(base).is_file():
        size = int(DiffusionRigPipeline.from_official_checkpoint(base).image_size)
    else:
        raise InvalidInput("--base", "a stage-1 run / pipeline folder or a model_*.pt", str(base))
    out = Path(out)
    data = out / "data"
    a = Path(album)
    if (a / "index.json").is_file() and list(a.glob("shard-*.tar")):
        data = a  # already prepared
    else:
        # all photos of the album are ONE person: group them as one folder
        opts = PrepareOptions(size=size, shard_size=10**9, album_by_folder=False)
        from facerig.train.prepare import plan_groups

        groups = plan_groups([a], opts)
        items = [it for g in groups for it in (g.items if g.kind == "images" else [])]
        if not items:
            raise InvalidInput("--album", "a folder with photos of one person", str(a))
        prepare_dataset_album(items, data, opts, name=_album_name(a))
    ds = ShardDataset(data, buffers=False)
    ids = torch.cat([ds.params(i).identity for i in range(len(ds))], 0)
    mean = ids.mean(0)
    from .buffers import face_model_id

    # the face model the identity coefficients belong to (the engine refuses sources of another one)
    fm = json.loads((data / "index.json").read_text()).get("face_model") or face_model_id(ds.face_model)
    personal = {"identity": [round(float(v), 6) for v in mean], "face_model": fm, "album": str(a),
                "num_photos": len(ds)}
    return train_diffusionrig(config, data, out, max_steps=max_steps, resume=resume, base=base,
                              freeze_encoder=True, personal=personal)


def _album_name(p: Path) -> str:
    from facerig.train.prepare import _slug

    return _slug(p.name)


def prepare_dataset_album(items: list[str], data: Path, opts: Any, name: str) -> dict[str, Any]:
    """Prepare a list of photos of one person as ONE identity (shared identity fit)."""
    import tempfile

    from facerig.train.prepare import prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / name
        link.mkdir()
        for i, it in enumerate(items):
            (link / f"{i:04d}_{Path(it).name}").symlink_to(Path(it).resolve())
        from dataclasses import replace

        return prepare_dataset([tmp], data, replace(opts, album_by_folder=True))
