"""Runners of ``facerig evaluate`` and ``facerig benchmark``.

* :func:`load_samples` reads (source, target/driver, output) triples from a folder layout, a CSV /
  JSON / JSON-lines manifest, or a run folder written by :func:`run_benchmark`.
* :func:`run_evaluation` computes the metrics of every sample and caches one JSON line per sample in
  ``RUN/samples.jsonl`` (and per source photo in ``RUN/sources.jsonl``): a re-run with the same
  metric settings skips what is done. Inputs are sorted and seeds fixed, so runs are deterministic.
* :func:`summarize` aggregates per (engine, edit type) and per edit case: means, re-ID, FID/KID...
* :func:`run_benchmark` runs engines over a protocol's cases (outputs cached in the run folder:
  ``outputs/ENGINE/...png``, the requested params in ``params/``), writes ``manifest.json``, then
  evaluates and writes the reports (:mod:`facerig.eval.report`).

A sample whose face cannot be found (source, output, re-fit) or whose generation failed is
never skipped: it carries ``failures`` (reasons), its metrics are ``None`` where they could not be
computed, and every summary row counts it in ``num_failed``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facerig.errors import FacerigError, InvalidInput
from facerig.eval.protocols import IMAGE_SUFFIXES, VIDEO_SUFFIXES, get_protocol

if TYPE_CHECKING:
    from facerig.eval.i3d import I3DFeatures
    from facerig.eval.image_quality import LPIPS, InceptionV3FID
    from facerig.morphable.base import FaceModel

log = logging.getLogger(__name__)

__all__ = ["Sample", "EvalConfig", "load_samples", "run_evaluation", "summarize", "run_benchmark", "evaluate_path",
           "Evaluator", "estimators_used", "SCHEMA", "make_engine", "parse_engine_spec", "personal_info", "split_album"]

SCHEMA = "facerig.eval.report/1"
SAMPLE_SCHEMA = "facerig.eval.sample/1"


# ------------------------------------------------------------------------------------------
# samples


@dataclass
class Sample:
    """One evaluation item. Paths are absolute strings; ``requested`` / ``source_params`` are
    FaceParams JSON files (``facerig.FaceParams/1``) of the requested and of the source's fitted
    parameters; ``failures`` lists reasons already known (e.g. the generation failed)."""

    id: str
    source: str
    output: str | None
    target: str | None = None
    requested: str | None = None
    source_params: str | None = None
    engine: str = "external"
    edit_type: str = "unknown"
    case: str = ""
    identity: str | None = None
    text: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def is_video(self) -> bool:
        return self.output is not None and Path(self.output).suffix.lower() in VIDEO_SUFFIXES

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> Sample:
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - names - {"status", "strength"})
        if unknown:
            raise InvalidInput("manifest", f"sample fields among {', '.join(sorted(names))}", unknown)
        kw = {k: v for k, v in d.items() if k in names and v not in ("", None)}
        if "source" not in kw:
            raise InvalidInput("manifest", "a 'source' path in every sample", d)
        for k in ("source", "output", "target", "requested", "source_params"):
            if k in kw and base is not None and not Path(kw[k]).is_absolute():
                kw[k] = str((base / kw[k]).resolve())
        kw.setdefault("id", Path(kw.get("output") or kw["source"]).stem)
        kw.setdefault("output", None)
        kw["failures"] = list(kw.get("failures") or [])
        return cls(**kw)


def _media_files(folder: Path, suffixes: Sequence[str], recursive: bool = True) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in it if p.is_file() and p.suffix.lower() in suffixes),
                  key=lambda p: p.relative_to(folder).as_posix())


def _stem_index(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in _media_files(folder, IMAGE_SUFFIXES + VIDEO_SUFFIXES, recursive=False)}


def load_samples(path: str | os.PathLike[str]) -> tuple[list[Sample], dict[str, Any]]:
    """Samples from a run folder (``manifest.json``), a manifest file (.csv / .json / .jsonl), or a
    folder layout ``source/``, ``output/`` (+ optional ``target/``, ``params/``): outputs named
    ``NAME.png`` or ``NAME__CASE.png`` pair with ``source/NAME.*``, ``target/NAME[__CASE].*`` and
    ``params/NAME[__CASE].json`` (the requested FaceParams). Returns (samples sorted by id, run info)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput("DATA", "an existing folder or manifest file", str(p))
    info: dict[str, Any] = {}
    if p.is_dir() and (p / "manifest.json").is_file():
        d = json.loads((p / "manifest.json").read_text())
        info = {k: v for k, v in d.items() if k != "samples"}
        samples = [Sample.from_dict(s, p) for s in d.get("samples", [])]
    elif p.is_file():
        samples = _read_manifest(p)
    elif (p / "output").is_dir() and (p / "source").is_dir():
        samples = _folder_layout(p)
    else:
        raise InvalidInput("DATA", "a run folder (manifest.json), a manifest (.csv/.json/.jsonl) or a folder "
                           "with source/ and output/ sub-folders", str(p))
    if not samples:
        raise InvalidInput("DATA", "at least one sample", f"none in {p}")
    ids = [s.id for s in samples]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InvalidInput("DATA", "unique sample ids", dup[:5])
    return sorted(samples, key=lambda s: s.id), info


def _read_manifest(p: Path) -> list[Sample]:
    base = p.parent
    suf = p.suffix.lower()
    try:
        if suf == ".csv":
            with p.open(newline="") as f:
                rows = list(csv.DictReader(f))
        elif suf == ".jsonl":
            rows = [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
        elif suf == ".json":
            d = json.loads(p.read_text())
            rows = d.get("samples", []) if isinstance(d, dict) else d
        else:
            raise InvalidInput("DATA", "a manifest ending in .csv, .json or .jsonl", str(p))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
        raise InvalidInput("DATA", "a readable manifest", f"{p.name}: {e}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidInput("DATA", "a list of sample objects", type(rows).__name__)
    return [Sample.from_dict(r, base) for r in rows]


def _folder_layout(p: Path) -> list[Sample]:
    src, tgt, prm = _stem_index(p / "source"), _stem_index(p / "target"), p / "params"
    out = []
    for o in _media_files(p / "output", IMAGE_SUFFIXES + VIDEO_SUFFIXES, recursive=False):
        name, _, case = o.stem.partition("__")
        s = src.get(name)
        if s is None:
            raise InvalidInput(f"output/{o.name}", f"a source image source/{name}.*", "none")
        t = tgt.get(o.stem) or tgt.get(name)
        r = next((c for c in (prm / f"{o.stem}.json", prm / f"{name}.json") if c.is_file()), None)
        sp = prm / f"{name}.source.json"
        out.append(Sample(id=o.stem, source=str(s.resolve()), output=str(o.resolve()),
                          target=str(t.resolve()) if t else None, requested=str(r.resolve()) if r else None,
                          source_params=str(sp.resolve()) if sp.is_file() else None, case=case or "",
                          edit_type=_guess_type(case)))
    return out


def _guess_type(case: str) -> str:
    c = case.lower()
    if c.startswith(("yaw", "pitch", "roll", "pose")):
        return "pose"
    if c.startswith("light"):
        return "light"
    if c.startswith("text"):
        return "text"
    return "expression" if c else "unknown"


# ------------------------------------------------------------------------------------------
# configuration and estimators


@dataclass
class EvalConfig:
    """What to compute. Paths of user weights are optional; metrics that need them are skipped
    (and the report says why) when they are absent."""

    identity: bool = True
    image_quality: bool = True
    refit: bool = True
    lpips_weights: str | None = None
    lpips_heads: str | None = None
    lpips_net: str = "alex"
    inception_weights: str | None = None
    clip_model: str | None = None
    #: the user's I3D file for FVD: StyleGAN-V i3d_torchscript.pt or pytorch-i3d rgb_imagenet.pt (format
    #: detected; the field keeps its first name for saved configs)
    i3d_torchscript: str | None = None
    model: str = "builtin"
    frame_stride: int = 8
    max_frames: int = 48
    #: images whose long side exceeds this are downscaled (area) before every metric (None: never)
    max_side: int | None = 1024
    seed: int = 0

    def signature(self) -> str:
        d = asdict(self)
        for k in ("lpips_weights", "lpips_heads", "inception_weights", "clip_model", "i3d_torchscript"):
            if d[k]:
                d[k] = Path(d[k]).name
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


ESTIMATOR_FIT = "facerig.fit.api.fit_image (model={model}, MediaPipe 478 landmarks + photometric SH/albedo)"
ESTIMATOR_MASK = "MediaPipe face mesh convex hull (source and output), background = outside the hull dilated by 0.35 face size"


def estimators_used(config: EvalConfig) -> dict[str, str]:
    """Estimator id (as in :data:`facerig.eval.protocols.METRIC_INFO`) -> the network / algorithm."""
    from facerig.eval.edit_accuracy import AU_ESTIMATOR
    from facerig.eval.identity import ESTIMATOR_DLIB

    est = {
        "dlib": f"{ESTIMATOR_DLIB}; HOG detector + 5-point shape predictor; ID distance = L2 (same person < 0.6); "
                "re-ID = nearest source (L2); CSIM = cosine of dlib descriptors (papers use ArcFace)",
        "psnr": "facerig torch PSNR on [0, 1] RGB (data_range 1); masked variant weights pixels by the mask",
        "ssim": "facerig torch SSIM (Gaussian 11x11 sigma 1.5, K 0.01/0.03; = skimage gaussian_weights)",
        "l1": "mean absolute RGB difference on [0, 1]",
        "mask": ESTIMATOR_MASK,
        "size": f"images with a long side over {config.max_side} px are downscaled (area) before every metric"
                if config.max_side else "images evaluated at full size",
        "refit": ESTIMATOR_FIT.format(model=config.model) + "; APD = mean |d yaw/pitch/roll| deg, "
                 "AED = mean |d ARKit coefficient|, ALD = mean |d SH coefficient| (9x3); video frames: "
                 "landmark fit only (no photometric step), driver vs output",
        "au": AU_ESTIMATOR,
        "jitter": "MediaPipe face mesh 478, acceleration / inter-ocular distance",
        "warping": "OpenCV Farneback flow on driver frames, forward-backward consistency mask",
    }
    est["lpips"] = (f"LPIPS {config.lpips_net} (user weights {Path(config.lpips_weights).name}, heads "
                    f"{Path(config.lpips_heads).name if config.lpips_heads else '?'})" if config.lpips_weights
                    else "not computed (no --lpips-weights)")
    est["inception"] = (f"Inception-v3 pool3, pytorch-fid layout (user weights {Path(config.inception_weights).name}); "
                        "sources vs outputs, few samples bias FID upwards" if config.inception_weights
                        else "not computed (no --inception-weights)")
    est["clip"] = (f"CLIP (local model {Path(config.clip_model).name}), 100*max(cos, 0)" if config.clip_model
                   else "not computed (no --clip-model)")
    est["i3d"] = (_i3d_estimator(config.i3d_torchscript) if config.i3d_torchscript
                  else "not computed (facerig ships no I3D weights; give --i3d)")
    return est


def _i3d_estimator(path: str) -> str:
    from facerig.eval.i3d import detect_i3d_format, i3d_estimator

    try:
        kind = "torchscript" if detect_i3d_format(path) == "torchscript" else "pytorch-i3d"
    except FacerigError:
        return f"I3D {Path(path).name} (unreadable)"
    return i3d_estimator(kind, Path(path).name)


class _HFClip:
    """A local Hugging Face CLIP folder behind ``encode_image`` / ``encode_text``."""

    def __init__(self, path: str):
        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError as e:
            from facerig.errors import AssetMissing

            raise AssetMissing("transformers (for --clip-model)", "the Python environment",
                               "pip install 'facerig[diffusion]'") from e
        if not Path(path).is_dir():
            raise InvalidInput("--clip-model", "a local Hugging Face CLIP model folder", path)
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval()
        self.proc = CLIPProcessor.from_pretrained(path, local_files_only=True)
        self.estimator = f"CLIP ({Path(path).name}, Hugging Face transformers)"

    def encode_image(self, x: Any) -> Any:
        import torch

        imgs = [(t.permute(1, 2, 0).clamp(0, 1) * 255).byte().numpy() for t in x]
        with torch.no_grad():
            return _clip_features(self.model.get_image_features(**self.proc(images=imgs, return_tensors="pt")))

    def encode_text(self, texts: list[str]) -> Any:
        import torch

        with torch.no_grad():
            return _clip_features(self.model.get_text_features(**self.proc(text=texts, return_tensors="pt", padding=True)))


def _clip_features(out: Any) -> Any:
    """transformers < 5 returns the projected features, >= 5 an output holding them as pooler_output
    (``torch.as_tensor`` of that output failed: "Could not infer dtype of BaseModelOutputWithPooling")."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy -> python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _r(v: Any, nd: int = 6) -> Any:
    if v is None:
        return None
    f = float(v)
    return round(f, nd) if math.isfinite(f) else None


class Evaluator:
    """Computes the per-sample metrics; estimators are loaded on first use and shared."""

    def __init__(self, config: EvalConfig | None = None, *, fit_fn: Callable[[np.ndarray], Any] | None = None,
                 clip_model: Any = None, detector: Any = None):
        self.config = config or EvalConfig()
        self._fit_fn = fit_fn
        self._clip = clip_model
        self._detector = detector
        self._lpips: LPIPS | None = None
        self._inception: InceptionV3FID | None = None
        self._i3d: I3DFeatures | None = None
        self._fm: FaceModel | None = None
        self._src_cache: dict[str, dict[str, Any]] = {}
        self._load_user_models()

    # ---- estimators ----------------------------------------------------------------------
    def _load_user_models(self) -> None:
        c = self.config
        if c.lpips_weights:
            from facerig.eval.image_quality import LPIPS
            from facerig.eval.weights import resolve_weights

            if not c.lpips_heads:
                raise InvalidInput("--lpips-heads", "the lpips linear heads file (weights/v0.1/alex.pth) with "
                                   "--lpips-weights", None)
            self._lpips = LPIPS(c.lpips_net, resolve_weights(c.lpips_weights, "LPIPS backbone weights"),
                                resolve_weights(c.lpips_heads, "LPIPS linear heads"))
        if c.inception_weights:
            from facerig.eval.image_quality import InceptionV3FID
            from facerig.eval.weights import resolve_weights

            self._inception = InceptionV3FID.from_file(resolve_weights(c.inception_weights, "Inception weights"))
        if c.clip_model and self._clip is None:
            self._clip = _HFClip(c.clip_model)
        if c.i3d_torchscript:
            from facerig.eval.i3d import I3DFeatures
            from facerig.eval.weights import resolve_weights

            # the file's format is detected: StyleGAN-V TorchScript or pytorch-i3d state dict (facerig.eval.i3d)
            self._i3d = I3DFeatures(str(resolve_weights(c.i3d_torchscript, "I3D model (i3d_torchscript.pt or "
                                                        "rgb_imagenet.pt)")))

    @property
    def detector(self) -> Any:
        if self._detector is None:
            from facerig.fit.api import _default_detector

            self._detector = _default_detector()
        return self._detector

    @property
    def face_model(self) -> Any:
        if self._fm is None:
            from facerig.morphable import load_face_model

            self._fm = load_face_model(self.config.model)
        return self._fm

    def fit(self, image: np.ndarray, photometric: bool = True) -> Any:
        """Fitted FaceParams (batch 1) of the largest face, or None when no face is found."""
        if self._fit_fn is not None:
            try:
                return self._fit_fn(image)
            except FacerigError:
                return None
        from facerig.fit.api import FitConfig, fit_image

        try:
            return fit_image(image, self.face_model, FitConfig(photometric=photometric), self.detector).params
        except FacerigError:
            return None

    @property
    def fit_estimator(self) -> str:
        if self._fit_fn is not None:
            return getattr(self._fit_fn, "estimator", getattr(self._fit_fn, "__name__", "user fit_fn"))
        return ESTIMATOR_FIT.format(model=self.config.model)

    def _landmarks(self, image: np.ndarray) -> np.ndarray | None:
        try:
            faces = self.detector.detect(image)
        except FacerigError:
            return None
        return faces[0].points[:, :2].astype(np.float64) if faces else None

    def _embed(self, images: Sequence[np.ndarray]) -> Any:
        from facerig.eval.identity import dlib_embed

        return dlib_embed(list(images))

    def _incep(self, image: np.ndarray) -> list[float]:
        from facerig.eval.image_quality import fid_features

        assert self._inception is not None  # callers check it
        return [round(float(v), 5) for v in fid_features(image, self._inception)[0]]

    # ---- sources -------------------------------------------------------------------------
    def source_record(self, path: str, image: np.ndarray | None = None) -> dict[str, Any]:
        if path in self._src_cache:
            return self._src_cache[path]
        img = image if image is not None else _load(path, self.config.max_side)
        rec: dict[str, Any] = {"record": "source", "source": path, "height": int(img.shape[0]),
                               "width": int(img.shape[1])}
        if self.config.identity:
            e = self._embed([img])
            rec["dlib_found"] = bool(e.found[0])
            rec["dlib_embedding"] = [_r(v) for v in e.embeddings[0]] if e.found[0] else None
        if self._inception is not None:
            rec["inception"] = self._incep(img)
        self._src_cache[path] = rec
        return rec

    # ---- samples -------------------------------------------------------------------------
    def evaluate(self, s: Sample, source_rec: dict[str, Any] | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"record": "sample", "schema": SAMPLE_SCHEMA, **_clean(asdict(s)), "metrics": {},
                               "config": self.config.signature()}
        failures = list(s.failures)
        if s.output is None or not Path(s.output).is_file():
            if not failures:
                failures.append("output missing")
            rec["failures"] = failures
            rec["status"] = "failed"
            return rec
        try:
            if s.is_video:
                self._eval_video(s, rec, failures)
            else:
                self._eval_image(s, rec, failures, source_rec)
        except FacerigError as e:
            failures.append(f"error: {e}")
        rec["failures"] = failures
        rec["status"] = "ok" if not failures else "failed"
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return _clean(rec)

    def _eval_image(self, s: Sample, rec: dict[str, Any], failures: list[str], source_rec: dict[str, Any] | None) -> None:
        import torch

        from facerig.eval import image_quality as iq

        ms = self.config.max_side
        assert s.output is not None  # evaluate() returns early without an output
        src = _load(s.source, ms)
        out = _load(s.output, ms)
        ref = _load(s.target, ms) if s.target else src
        rec["reference"] = "target" if s.target else "source"
        m = rec["metrics"]
        srec = source_rec or self.source_record(s.source, src)
        if out.shape != ref.shape:
            import cv2

            failures.append(f"output size {out.shape[1]}x{out.shape[0]} != reference {ref.shape[1]}x{ref.shape[0]} "
                            "(resized for image metrics)")
            out_cmp = cv2.resize(out, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)
        else:
            out_cmp = out
        # identity
        if self.config.identity:
            e = self._embed([out])
            rec["dlib_found_output"] = bool(e.found[0])
            rec["dlib_embedding"] = [_r(v) for v in e.embeddings[0]] if e.found[0] else None
            if not srec.get("dlib_found"):
                failures.append("no face in source (dlib)")
            if not e.found[0]:
                failures.append("no face in output (dlib)")
            if srec.get("dlib_found") and e.found[0]:
                a = np.asarray(srec["dlib_embedding"], np.float64)
                b = e.embeddings[0]
                m["id_distance"] = _r(np.linalg.norm(a - b))
                m["same_person"] = bool(np.linalg.norm(a - b) < 0.6)
                m["csim_dlib"] = _r(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        # image quality vs the reference (preservation for edits)
        if self.config.image_quality:
            x, y = iq.to_batch(ref), iq.to_batch(out_cmp)
            m["psnr"] = _r(iq.psnr(x, y)["value"], 4)
            m["ssim"] = _r(iq.ssim(x, y)["value"])
            m["l1"] = _r(float((x - y).abs().mean()))
            face = self._face_mask(ref, out_cmp)
            if face is None:
                failures.append("no face landmarks for the face/background mask")
            else:
                fm, bg = face
                if fm.sum() > 0:
                    m["psnr_face"] = _r(iq.psnr(x, y, mask=fm)["value"], 4)
                    m["ssim_face"] = _r(iq.ssim(x, y, mask=fm)["value"])
                if bg.sum() > 0.02 * bg.size:
                    m["psnr_bg"] = _r(iq.psnr(x, y, mask=bg)["value"], 4)
                    m["ssim_bg"] = _r(iq.ssim(x, y, mask=bg)["value"])
            if self._lpips is not None:
                m["lpips"] = _r(iq.lpips(x, y, self._lpips)["value"])
        if self._inception is not None:
            rec["inception"] = self._incep(out)
        # edit accuracy by re-fitting
        if self.config.refit and s.requested:
            from facerig.eval.edit_accuracy import au_accuracy, compare_params
            from facerig.types import FaceParams

            req = FaceParams.from_json(s.requested)
            before = FaceParams.from_json(s.source_params) if s.source_params else None
            if before is not None:
                rec["strength"] = _strength(s.edit_type, before, req)
            est = self.fit(out)
            if est is None:
                failures.append("no face in output (re-fit)")
            else:
                est = est[0] if est.batch_size > 1 else est
                cp = compare_params(req, est, estimator=self.fit_estimator)
                for k in ("apd_deg", "apd_geodesic_deg", "pose_rmse_deg", "aed", "exp_rmse", "ald", "light_rmse"):
                    m[k] = _r(cp[k])
                m["apd_yaw_pitch_roll_deg"] = [_r(v, 4) for v in cp["apd_yaw_pitch_roll_deg"]]
                if before is not None:
                    rec["achieved"] = _strength(s.edit_type, before, est)
                if s.edit_type == "text" or s.text:
                    au = au_accuracy(req, est)
                    m["au_accuracy"] = _r(au["value"])
                    m["au_intensity_mae"] = _r(au["intensity_mae"])
        if self._clip is not None and s.text:
            from facerig.eval.edit_accuracy import clip_score

            m["clip_score"] = _r(clip_score(torch.from_numpy(out).permute(2, 0, 1).float()[None] / 255, [s.text],
                                            self._clip)["value"], 4)

    def _face_mask(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        import cv2

        pts = [p for p in (self._landmarks(a), self._landmarks(b)) if p is not None]
        if not pts:
            return None
        h, w = a.shape[:2]
        face = np.zeros((h, w), np.uint8)
        for p in pts:
            hull = cv2.convexHull(np.round(p).astype(np.int32))
            cv2.fillConvexPoly(face, hull, 1)
        size = float(np.mean([np.ptp(p[:, 0]) + np.ptp(p[:, 1]) for p in pts]) / 2)
        k = max(3, int(0.35 * size) * 2 + 1)
        grown = cv2.dilate(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        return face.astype(np.float32), (1 - grown).astype(np.float32)

    def _eval_video(self, s: Sample, rec: dict[str, Any], failures: list[str]) -> None:
        import cv2

        from facerig.eval import image_quality as iq
        from facerig.eval import video as vm
        from facerig.io.video import read_video

        c = self.config
        assert s.output is not None  # evaluate() returns early without an output
        out, _ = read_video(s.output, max_frames=c.max_frames)
        drv = read_video(s.target, max_frames=c.max_frames)[0] if s.target else None
        src = _load(s.source) if Path(s.source).suffix.lower() not in VIDEO_SUFFIXES else \
            read_video(s.source, max_frames=1)[0][0]
        m = rec["metrics"]
        n = len(out) if drv is None else min(len(out), len(drv))
        idx = list(range(0, n, max(1, c.frame_stride)))
        rec["frames"] = {"output": int(len(out)), "driver": None if drv is None else int(len(drv)),
                         "evaluated": idx}
        if drv is not None and len(drv) != len(out):
            failures.append(f"frame counts differ: output {len(out)}, driver {len(drv)} (first {n} used)")

        def fit_size(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
            return a if a.shape == ref.shape else cv2.resize(a, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)

        if drv is not None and s.edit_type == "self" and c.image_quality:
            x = iq.to_batch([drv[i] for i in idx])
            y = iq.to_batch([fit_size(out[i], drv[i]) for i in idx])
            m["l1"] = _r(float((x - y).abs().mean()))
            m["psnr"] = _r(iq.psnr(x, y)["value"], 4)
            m["ssim"] = _r(iq.ssim(x, y)["value"])
            if self._lpips is not None:
                m["lpips"] = _r(iq.lpips(x, y, self._lpips)["value"])
        if c.identity:
            srec = self.source_record(s.source, src)
            e = self._embed([out[i] for i in idx])
            if not srec.get("dlib_found"):
                failures.append("no face in source (dlib)")
            nf = int((~e.found).sum())
            if nf:
                failures.append(f"no face in {nf}/{len(idx)} evaluated output frames (dlib)")
            if srec.get("dlib_found") and e.found.any():
                a = np.asarray(srec["dlib_embedding"], np.float64)
                d = np.linalg.norm(e.embeddings[e.found] - a, axis=1)
                cs = (e.embeddings[e.found] @ a) / (np.linalg.norm(e.embeddings[e.found], axis=1) * np.linalg.norm(a))
                m["id_distance"] = _r(d.mean())
                m["csim_dlib"] = _r(cs.mean())
                first = e.embeddings[e.found][0]
                m["identity_drift"] = _r(np.linalg.norm(e.embeddings[e.found] - first, axis=1).mean())
                rec["dlib_embedding"] = [_r(v) for v in e.embeddings[e.found].mean(0)]
        if c.refit and drv is not None:
            from facerig.eval.edit_accuracy import compare_params
            from facerig.types import FaceParams

            pairs = []
            for i in idx:
                po, pd = self.fit(out[i], photometric=False), self.fit(drv[i], photometric=False)
                if po is not None and pd is not None:
                    pairs.append((pd[0], po[0]))
            if len(pairs) < len(idx):
                failures.append(f"re-fit failed on {len(idx) - len(pairs)}/{len(idx)} frame pairs")
            if pairs:
                cp = compare_params(FaceParams.cat([p for p, _ in pairs]), FaceParams.cat([q for _, q in pairs]),
                                    estimator=self.fit_estimator)
                m["apd_deg"] = _r(cp["apd_deg"])
                m["aed"] = _r(cp["aed"])
        seq = list(out[: min(len(out), 32)])
        if len(seq) >= 3:
            m["landmark_jitter"] = _r(vm.landmark_jitter(seq, detector=self.detector)["value"])
        if drv is not None and n >= 2:
            k = min(n, 16)
            m["warping_error"] = _r(vm.temporal_warping_error(list(drv[:k]), [fit_size(out[i], drv[i]) for i in range(k)])["value"])
        if self._i3d is not None:
            i3d = self._i3d  # narrowed, for the closure

            def feats(frames: np.ndarray) -> list[float]:
                return [round(float(v), 5) for v in i3d([np.asarray(frames)])[0]]

            if len(out) >= self._i3d.num_frames:  # shorter clips have no I3D features (FVD skips them)
                rec["i3d"] = feats(out)
                if drv is not None and len(drv) >= self._i3d.num_frames:
                    rec["i3d_real"] = feats(drv)


def _strength(edit_type: str, before: Any, after: Any) -> dict[str, Any]:
    """How far ``after`` is from ``before``: pose geodesic angle (deg), mean |d expression|,
    mean |d SH| -- the same units as APD / AED / ALD. ``value``: the one of the edit's type."""
    from facerig.rotations import axis_angle_to_matrix, axis_angle_to_ypr, rotation_angle_deg

    a, b = before[0], after[0]
    ra, rb = a.rotation.detach().double(), b.rotation.detach().double()
    dypr = (axis_angle_to_ypr(rb) - axis_angle_to_ypr(ra))[0].tolist()
    names = [n for n in a.expression_names if n in set(b.expression_names)]
    ia = [a.expression_names.index(n) for n in names]
    ib = [b.expression_names.index(n) for n in names]
    dexp = (b.expression.detach().double()[0, ib] - a.expression.detach().double()[0, ia]).abs()
    pose = float(rotation_angle_deg(axis_angle_to_matrix(ra), axis_angle_to_matrix(rb))[0])
    light = float((b.light.detach().double() - a.light.detach().double()).abs().mean())
    exp = float(dexp.mean()) if len(names) else float("nan")
    return {
        "pose_deg": _r(pose),
        "d_yaw_pitch_roll_deg": [_r(v, 4) for v in dypr],
        "expression": _r(exp),
        "expression_max": _r(float(dexp.max())) if len(names) else None,
        "light": _r(light),
        "value": _r({"pose": pose, "light": light}.get(edit_type, exp)),
    }


def _load(path: str, max_side: int | None = None) -> np.ndarray:
    from facerig.io.image import load_image

    img = load_image(path)
    if max_side and max(img.shape[:2]) > max_side:
        import cv2

        s = max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return img


# ------------------------------------------------------------------------------------------
# cache (JSON lines) and the evaluation loop


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for ln in path.read_text().splitlines():
        if not ln.strip():
            continue
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:  # a line cut by an interrupted run: recomputed
            continue
    return out


def _append_jsonl(path: Path, rec: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(_clean(rec), separators=(",", ":")) + "\n")
        f.flush()


def _progress(it: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="sample", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)


def run_evaluation(samples: Sequence[Sample], run_dir: str | os.PathLike[str], config: EvalConfig | None = None, *,
                   evaluator: Evaluator | None = None, progress: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """Evaluate every sample, caching per-sample records in ``run_dir/samples.jsonl`` and per-source
    records in ``run_dir/sources.jsonl``. Records of an earlier run with the same settings
    (:meth:`EvalConfig.signature`) are reused. Returns (sample records, source records, counts
    ``{"evaluated": n, "cached": n}``)."""
    config = config or (evaluator.config if evaluator else EvalConfig())
    ev = evaluator or Evaluator(config)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    sig = config.signature()
    spath, cpath = run / "samples.jsonl", run / "sources.jsonl"
    done = {r["id"]: r for r in _read_jsonl(spath) if r.get("record") == "sample" and r.get("config") == sig}
    for r in _read_jsonl(cpath):
        if r.get("config") == sig and r.get("source"):
            ev._src_cache[r["source"]] = r
    todo = [s for s in samples if s.id not in done]
    _seed(config.seed)
    for s in _progress(todo, len(todo), "evaluate", progress):
        had = s.source in ev._src_cache
        rec = ev.evaluate(s)
        if not had and s.source in ev._src_cache:
            srec = ev._src_cache[s.source]
            srec["config"] = sig
            _append_jsonl(cpath, srec)
        _append_jsonl(spath, rec)
        done[s.id] = rec
    # compact: keep exactly the current samples' records
    records = [done[s.id] for s in samples]
    _rewrite_jsonl(spath, records)
    srcs = []
    seen = set()
    for s in samples:
        if s.source in ev._src_cache and s.source not in seen:
            seen.add(s.source)
            srcs.append(ev._src_cache[s.source])
    return records, srcs, {"evaluated": len(todo), "cached": len(samples) - len(todo)}


def _rewrite_jsonl(path: Path, recs: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(_clean(r), separators=(",", ":")) + "\n" for r in recs))
    tmp.replace(path)


def _seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state other libraries draw from
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------
# aggregation

_MEAN_KEYS = ("id_distance", "csim_dlib", "ssim", "psnr", "ssim_bg", "psnr_bg", "ssim_face", "psnr_face", "l1",
              "lpips", "apd_deg", "apd_geodesic_deg", "aed", "ald", "pose_rmse_deg", "exp_rmse", "light_rmse",
              "au_accuracy", "au_intensity_mae", "clip_score", "landmark_jitter", "warping_error", "identity_drift")
_RMS_KEYS = {"pose_rmse_deg", "exp_rmse", "light_rmse"}


def _agg(recs: Sequence[dict[str, Any]], srcs: dict[str, dict[str, Any]], want_fid: bool, want_fvd: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"n": len(recs), "num_failed": sum(r.get("status") != "ok" for r in recs)}
    for k in _MEAN_KEYS:
        vals = [r["metrics"][k] for r in recs if r.get("metrics", {}).get(k) is not None]
        if vals:
            a = np.asarray(vals, np.float64)
            row[k] = float(np.sqrt((a ** 2).mean())) if k in _RMS_KEYS else float(a.mean())
            row[f"{k}_std"] = float(a.std())
            row[f"{k}_n"] = len(vals)
    same = [r["metrics"]["same_person"] for r in recs if r.get("metrics", {}).get("same_person") is not None]
    if same:
        row["same_person_rate"] = float(np.mean(same))
    # re-ID: each output's nearest source among all sources of the run (labels: identity or source path)
    gal = [(s.get("identity") or p, s["dlib_embedding"]) for p, s in sorted(srcs.items()) if s.get("dlib_embedding")]
    q = [r for r in recs if r.get("dlib_embedding") is not None or r.get("status") != "ok"]
    if gal and recs and any(r.get("dlib_embedding") for r in recs):
        from facerig.eval.identity import reid_accuracy

        g = np.asarray([e for _, e in gal], np.float64)
        emb = np.asarray([r["dlib_embedding"] if r.get("dlib_embedding") else [np.nan] * 128 for r in q], np.float64)
        labels = [srcs.get(r["source"], {}).get("identity") or r["source"] for r in q]
        res = reid_accuracy(emb, g, labels, [lbl for lbl, _ in gal])
        row["reid"] = res["value"]
        row["reid_gallery"] = len(gal)
    if want_fid:
        fa = [s["inception"] for s in srcs.values() if s.get("inception")]
        fb = [r["inception"] for r in recs if r.get("inception")]
        if len(fa) >= 2 and len(fb) >= 2:
            from facerig.eval.image_quality import frechet_distance, kernel_distance

            a, b = np.asarray(fa), np.asarray(fb)
            row["fid"] = frechet_distance(a, b)
            row["kid"] = kernel_distance(a, b, subsets=20, subset_size=min(len(a), len(b), 100))[0]
    if want_fvd:
        fb = [r["i3d"] for r in recs if r.get("i3d")]
        row["fvd_features"] = len(fb)
    return row


def summarize(records: Sequence[dict[str, Any]], sources: Sequence[dict[str, Any]], *, protocol: str | None = None,
              config: EvalConfig | None = None) -> dict[str, Any]:
    """Per engine x edit type rows (plus an ``all`` row per engine) and per edit case rows."""
    config = config or EvalConfig()
    srcs = {s["source"]: s for s in sources}
    for r in records:  # identity labels of sources come from their samples
        if r.get("identity") and r["source"] in srcs:
            srcs[r["source"]].setdefault("identity", r["identity"])
    want_fid = config.inception_weights is not None
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    cases: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r.get("engine", "?"), r.get("edit_type", "?")), []).append(r)
        cases.setdefault((r.get("engine", "?"), r.get("edit_type", "?"), r.get("case", "")), []).append(r)
    rows = []
    for (eng, et), recs in sorted(groups.items()):
        rows.append({"engine": eng, "edit_type": et, **_agg(recs, srcs, want_fid, config.i3d_torchscript is not None)})
    for eng in sorted({e for e, _ in groups}):
        recs = [r for r in records if r.get("engine", "?") == eng]
        if len({r.get("edit_type") for r in recs}) > 1:
            rows.append({"engine": eng, "edit_type": "all", **_agg(recs, srcs, want_fid, False)})
    case_rows = []
    for (eng, et, case), recs in sorted(cases.items()):
        row = {"engine": eng, "edit_type": et, "case": case, **_agg(recs, {}, False, False)}
        st = [r["strength"]["value"] for r in recs if (r.get("strength") or {}).get("value") is not None]
        if st:
            row["strength"] = float(np.mean(st))
        unit = {"pose": "pose_deg", "light": "light"}.get(et, "expression")
        ach = [r["achieved"][unit] for r in recs if (r.get("achieved") or {}).get(unit) is not None]
        if ach:
            row["achieved"] = float(np.mean(ach))
        case_rows.append(row)
    failures: dict[str, int] = {}
    for r in records:
        for f in r.get("failures") or []:
            key = re.sub(r"\d+/\d+", "N/M", f)
            key = re.sub(r"\d+x\d+", "WxH", key)[:160]
            failures[key] = failures.get(key, 0) + 1
    fvd = None
    if config.i3d_torchscript:
        fvd = _fvd_rows(records)
    return {"rows": rows, "cases": case_rows, "failures": dict(sorted(failures.items())), "fvd": fvd,
            "num_samples": len(records), "num_failed": sum(r.get("status") != "ok" for r in records),
            "num_sources": len(srcs)}


def _fvd_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """FVD per (engine, edit type): I3D features of the driver clips (real) vs the outputs."""
    from facerig.eval.video import fvd_from_features

    out = []
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("i3d") and r.get("i3d_real"):
            by.setdefault((r.get("engine", "?"), r.get("edit_type", "?")), []).append(r)
    for (eng, et), rs in sorted(by.items()):
        if len(rs) >= 2:
            res = fvd_from_features([r["i3d_real"] for r in rs], [r["i3d"] for r in rs])
            out.append({"engine": eng, "edit_type": et, "n": len(rs), "fvd": res["value"]})
    return out


# ------------------------------------------------------------------------------------------
# benchmark: generate with engines, then evaluate


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+@-]+", "_", name).strip("_") or "x"


def discover_sources(data: Sequence[str | os.PathLike[str]], kind: str = "image", limit: int | None = None,
                     package_photos: bool = False) -> list[tuple[str, Path]]:
    """(source id, path) of the inputs, sorted: folders (recursive), single files, or .txt lists of
    paths (one a line); ``limit`` caps each entry; ``package_photos`` adds astronaut and grace_hopper."""
    sufs = IMAGE_SUFFIXES if kind == "image" else VIDEO_SUFFIXES
    out: list[tuple[str, Path]] = []
    for d in data:
        p = Path(d)
        if p.is_dir():
            files = _media_files(p, sufs)
            ids = [_safe(f.relative_to(p).with_suffix("").as_posix().replace("/", "_")) for f in files]
        elif p.is_file() and p.suffix.lower() == ".txt":
            files = [Path(ln.strip()) if Path(ln.strip()).is_absolute() else (p.parent / ln.strip())
                     for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise InvalidInput("--data", "a list of existing files", missing[:3])
            ids = [_safe(f"{f.parent.name}_{f.stem}") for f in files]
        elif p.is_file() and p.suffix.lower() in sufs:
            files, ids = [p], [_safe(p.stem)]
        else:
            raise InvalidInput("--data", f"an existing folder of {kind}s, a {kind} file or a .txt list", str(p))
        pairs = list(zip(ids, files, strict=True))[: limit or None]
        out += [(i, f.resolve()) for i, f in pairs]
    if package_photos and kind == "image":
        from facerig.io.samples import sample_path

        out += [(f"package_{n}", sample_path(n)) for n in ("astronaut", "grace_hopper")]
    if not out:
        raise InvalidInput("--data", f"at least one {kind}", "none found")
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise InvalidInput("--data", "inputs with distinct names", sorted({i for i in ids if ids.count(i) > 1})[:3])
    return out


def parse_engine_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"NAME[:KEY=VALUE[:KEY=VALUE...]]"`` -> (name, options), e.g.
    ``"diffusionrig:weights=/runs/w009:steps=50"``. Values are ints / floats / true / false when they
    read as such, else strings (a ``:`` inside a value is kept unless ``WORD=`` follows it)."""
    text = str(spec).strip()
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise InvalidInput("--engines", "NAME[:KEY=VALUE...] entries", spec)
    opts: dict[str, Any] = {}
    for part in (re.split(r":(?=[A-Za-z_]\w*=)", rest) if rest else []):
        key, eq, val = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise InvalidInput("--engines", f"KEY=VALUE options after {name}:", part)
        opts[key.strip()] = _option_value(val.strip())
    return name, opts


def _option_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def make_engine(name: Any, weights: str | None = None, *, only: bool = True) -> Any:
    """An engine from an instance, a name or a ``NAME:KEY=VALUE...`` spec (:func:`parse_engine_spec`).
    ``weights`` (the global ``--weights``) goes to an engine that requires weights, or to the only
    engine of the run (``only``); an engine's own ``weights=`` option wins."""
    if hasattr(name, "render_frame"):
        return name
    from facerig.engines import _resolve

    ename, opts = parse_engine_spec(name)
    cls = _resolve(ename)
    if weights and "weights" not in opts and (only or getattr(cls, "requires_weights", False)):
        opts["weights"] = weights
    if getattr(cls, "requires_weights", False) and not opts.get("weights"):
        raise InvalidInput("--weights", f"a weights path for the {ename} engine (--weights or {ename}:weights=PATH)",
                           None)
    try:
        return cls(**opts)
    except TypeError as e:
        raise InvalidInput(f"--engines {name}", f"options the {ename} engine accepts", str(e)) from None


def _engine_name(e: Any) -> str:
    return str(getattr(e, "name", e))


def _generate_edits(protocol: Any, sources: list[tuple[str, Path]], engines: list[Any], run: Path, ev: Evaluator,
                    seed: int, progress: bool) -> list[Sample]:
    from facerig.edit import edit as do_edit
    from facerig.io.image import save_image

    gpath = run / "generated.jsonl"
    gen = {r["id"]: r for r in _read_jsonl(gpath)}
    samples: list[Sample] = []
    total = len(sources) * len(engines) * len(protocol.cases)
    bar = _bar(total, f"generate ({protocol.name})", progress)
    pdir = run / "params"
    pdir.mkdir(parents=True, exist_ok=True)
    for sid, spath in sources:
        params = None
        fit_failed: str | None = None
        for eng in engines:
            ename = _engine_name(eng)
            odir = run / "outputs" / _safe(ename)
            odir.mkdir(parents=True, exist_ok=True)
            supported = not protocol.needs or getattr(eng, f"supports_{protocol.needs}", False)
            for case in protocol.cases:
                bar.update(1)
                cid = f"{ename}/{sid}/{_safe(case.name)}"
                out = odir / f"{sid}__{_safe(case.name)}.png"
                req = pdir / f"{ename}__{sid}__{_safe(case.name)}.json"
                spj = pdir / f"{sid}.source.json"
                base = dict(id=cid, source=str(spath), engine=ename, edit_type=case.edit_type, case=case.name,
                            text=case.spec.get("text"), identity=None)
                g = gen.get(cid)
                if g is not None and (g["status"] != "ok" or (out.is_file() and req.is_file() and spj.is_file())):
                    samples.append(Sample(output=str(out) if g["status"] == "ok" else None,
                                          requested=str(req) if g["status"] == "ok" else None,
                                          source_params=str(spj) if spj.is_file() else None,
                                          failures=list(g.get("failures", [])), **base))
                    continue
                failures: list[str] = []
                if not supported:
                    failures.append(f"generation: engine {ename} does not support {protocol.name}")
                else:
                    if params is None and fit_failed is None:
                        img = _load(str(spath))
                        params = ev.fit(img)
                        if params is None:
                            fit_failed = "generation: no face in source (fit)"
                        else:
                            params.to_json(spj, include_albedo=False)
                    if fit_failed:
                        failures.append(fit_failed)
                    else:
                        try:
                            res = do_edit(_load(str(spath)), dict(case.spec), eng, params=params, buffers=False,
                                          seed=seed + zlib.crc32(cid.encode()) % 100000, model=ev.face_model)
                            save_image(out, res.image)
                            res.params_after.to_json(req)
                        except FacerigError as e:
                            failures.append(f"generation: {e}")
                rec = {"id": cid, "status": "ok" if not failures else "failed", "failures": failures}
                _append_jsonl(gpath, rec)
                samples.append(Sample(output=str(out) if not failures else None,
                                      requested=str(req) if not failures else None,
                                      source_params=str(spj) if spj.is_file() else None, failures=failures, **base))
    bar.close()
    return samples


def _generate_reenact(sources: list[tuple[str, Path]], engines: list[Any], run: Path, max_frames: int,
                      seed: int, progress: bool) -> list[Sample]:
    from facerig.edit import reenact as do_reenact
    from facerig.io.image import save_image
    from facerig.io.video import read_video

    gpath = run / "generated.jsonl"
    gen = {r["id"]: r for r in _read_jsonl(gpath)}
    samples = []
    fdir = run / "source_frames"
    fdir.mkdir(parents=True, exist_ok=True)
    n = len(sources)
    jobs = [(mode, i) for i in range(n) for mode in (("self", "cross") if n > 1 else ("self",))]
    total = len(jobs) * len(engines)
    bar = _bar(total, "generate (reenact)", progress)
    for eng in engines:
        ename = _engine_name(eng)
        odir = run / "outputs" / _safe(ename)
        odir.mkdir(parents=True, exist_ok=True)
        for mode, i in jobs:
            bar.update(1)
            sid, vpath = sources[i]
            did, dpath = sources[i] if mode == "self" else sources[(i + 1) % n]
            frame = fdir / f"{sid}.png"
            if not frame.is_file():
                save_image(frame, read_video(vpath, max_frames=1)[0][0])
            cid = f"{ename}/{sid}/{mode}" + ("" if mode == "self" else f"<-{did}")
            out = odir / f"{sid}__{mode}{'' if mode == 'self' else '_' + did}.mp4"
            base = dict(id=cid, source=str(frame), target=str(dpath), engine=ename, edit_type=mode,
                        case=mode if mode == "self" else f"cross<-{did}", identity=sid)
            g = gen.get(cid)
            if g is not None and (g["status"] != "ok" or out.is_file()):
                samples.append(Sample(output=str(out) if g["status"] == "ok" else None,
                                      failures=list(g.get("failures", [])), **base))
                continue
            failures: list[str] = []
            try:
                do_reenact(str(frame), str(dpath), out, engine=eng, max_frames=max_frames, progress=False,
                           seed=seed)
            except FacerigError as e:
                failures.append(f"generation: {e}")
            _append_jsonl(gpath, {"id": cid, "status": "ok" if not failures else "failed", "failures": failures})
            samples.append(Sample(output=str(out) if not failures else None, failures=failures, **base))
    bar.close()
    return samples


def personal_info(engine: Any) -> dict[str, Any] | None:
    """What an engine's weights were personalised on, or None: the engine's ``personal`` dict when it
    has one, else the ``personal.json`` stored with its weights (DiffusionRig stage 2 writes it into
    the pipeline folder; a run folder's ``final/pipeline`` / ``pipeline`` is searched too)."""
    info = getattr(engine, "personal", None)
    if isinstance(info, dict) and info:
        return dict(info)
    w = getattr(engine, "weights", None)
    if not isinstance(w, (str, os.PathLike)):
        return None
    p = Path(w)
    for d in (p, p / "final" / "pipeline", p / "pipeline") if p.is_dir() else (p.parent,):
        f = d / "personal.json"
        if f.is_file():
            try:
                d_ = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InvalidInput(str(f), "a readable personal.json", str(e)) from None
            return {**(d_ if isinstance(d_, dict) else {}), "file": str(f.resolve())}
    return None


def split_album(person: Path) -> tuple[list[Path], list[Path]]:
    """(album, held-out) photos of a person folder: ``heldout/`` (if present) holds the held-out
    photos and everything else is the album; otherwise the last 2 sorted photos are held out."""
    photos = _media_files(person, IMAGE_SUFFIXES)
    hd = person / "heldout"
    if hd.is_dir():
        held = _media_files(hd, IMAGE_SUFFIXES)
        hs = {h.resolve() for h in held}
        return [p for p in photos if p.resolve() not in hs], held
    return photos[:-2], photos[-2:]


def _generate_personalize(protocol: Any, data: Sequence[str | os.PathLike[str]], engines: list[Any], run: Path,
                          ev: Evaluator, seed: int, progress: bool
                          ) -> tuple[list[Sample], list[str], dict[str, str], dict[str, Any]]:
    """Held-out photos of each person folder (:func:`split_album`) edited by a personalised engine.

    * An engine whose weights are already personalised (:func:`personal_info`: e.g. a DiffusionRig
      stage-2 pipeline with ``personal.json``) is used as is -- no training, the album is not read;
      such weights belong to one person, so the data must hold one person folder (or one named
      like the album in ``personal.json``).
    * An engine with ``supports_personalization`` and ``personalize(images, params, model) -> engine``
      is personalised here on the album photos of each person.
    * Others are not run (returned with the reason).

    Returns (samples, unsupported engine names, reason per unsupported engine, how each engine was
    personalised)."""
    import dataclasses

    persons = []
    for d in data:
        for person in sorted(p for p in Path(d).iterdir() if p.is_dir()):
            album, held = split_album(person)
            if held if (person / "heldout").is_dir() else len(album) + len(held) >= 3:
                persons.append((person, album, held))
            else:
                log.warning("personalize: %s skipped (needs >= 3 photos, or photos in heldout/)", person)
    edits = dataclasses.replace(protocol, needs="")  # the engines below are personalised (or ready-made)
    samples: list[Sample] = []
    unsupported: list[str] = []
    reasons: dict[str, str] = {}
    how: dict[str, Any] = {}
    for eng in engines:
        ename = _engine_name(eng)
        info = personal_info(eng)
        if info is not None:
            album_name = Path(str(info.get("album", ""))).name
            use = persons if len(persons) <= 1 else [p for p in persons if p[0].name == album_name]
            if len(persons) > 1 and len(use) != 1:
                raise InvalidInput("--data", f"one person folder for the personalised {ename} weights (they belong to "
                                   f"one person; album {info.get('album')!r})", [p[0].name for p in persons][:5])
            how[ename] = {"mode": "pre-personalised weights (no training in this run)",
                          "personal_json": info.get("file"), "album": info.get("album"),
                          "num_photos": info.get("num_photos"), "persons": [p[0].name for p in use]}
            log.info("personalize: %s uses already personalised weights (%s), no training", ename, info.get("file"))
            for person, _album, held in use:
                srcs = [(f"{_safe(person.name)}_{p.stem}", p) for p in held]
                new = _generate_edits(edits, srcs, [eng], run, ev, seed, progress)
                for s_ in new:
                    s_.identity = person.name
                samples += new
        elif getattr(eng, "supports_personalization", False):
            how[ename] = {"mode": "personalised in this run on each person's album (engine.personalize)",
                          "persons": [p[0].name for p in persons]}
            for person, album, held in persons:
                imgs = [_load(str(p)) for p in album]
                fits = [ev.fit(im) for im in imgs]
                pe = eng.personalize([im for im, f in zip(imgs, fits, strict=True) if f is not None],
                                     [f for f in fits if f is not None], ev.face_model)
                srcs = [(f"{_safe(person.name)}_{p.stem}", p) for p in held]
                new = _generate_edits(edits, srcs, [pe], run, ev, seed, progress)
                for s_ in new:
                    s_.identity = person.name
                samples += new
        else:
            unsupported.append(ename)
            if getattr(eng, "requires_weights", False):
                reasons[ename] = (f"the {ename} engine's weights are not personalised (no personal.json with them) and "
                                  "it cannot personalise itself here: personalise them first (e.g. `facerig personalize "
                                  f"{ename} --album ... --base ...`) and pass the result ({ename}:weights=RUN)")
            else:
                reasons[ename] = (f"the {ename} engine does not support the personalize protocol "
                                  "(no personalisation: training-free)")
    return samples, unsupported, reasons, how


def select_cases(proto: Any, cases: Sequence[str] | None) -> Any:
    """The protocol restricted to the named cases or edit types (``["smile@1.0", "pose"]``)."""
    import dataclasses

    if not cases:
        return proto
    want = [c.strip() for c in cases if c.strip()]
    keep = tuple(c for c in proto.cases if c.name in want or c.edit_type in want)
    known = {c.name for c in proto.cases} | {c.edit_type for c in proto.cases}
    bad = [w for w in want if w not in known]
    if bad or (proto.cases and not keep):
        raise InvalidInput("--cases", f"case names or edit types of {proto.name}: {', '.join(sorted(known))}", bad)
    return dataclasses.replace(proto, cases=keep)


def run_benchmark(protocol: str, data: Sequence[str | os.PathLike[str]], engines: Sequence[Any],
                  out: str | os.PathLike[str], *, weights: str | None = None, config: EvalConfig | None = None,
                  limit: int | None = None, package_photos: bool = False, max_frames: int = 24,
                  thumbnails: bool = False, progress: bool = True, evaluator: Evaluator | None = None,
                  formats: Sequence[str] = ("json", "md", "html"), cases: Sequence[str] | None = None) -> dict[str, Any]:
    """Generate a protocol's outputs with every engine into ``out`` (resumable), evaluate them and
    write the reports. Returns the report dict (also ``out/report.json``)."""
    from facerig.eval.report import build_report, write_reports

    proto = select_cases(get_protocol(protocol), cases)
    if not engines:
        raise InvalidInput("--engines", "at least one engine name", "")
    config = config or EvalConfig()
    if proto.name == "reenact":
        config.max_frames = max_frames
    engs = [make_engine(e, weights, only=len(engines) == 1) for e in engines]
    names = [_engine_name(e) for e in engs]
    if len(set(names)) != len(names):
        raise InvalidInput("--engines", "distinct engines (outputs are stored per engine name)", names)
    ev = evaluator or Evaluator(config)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    _seed(config.seed)
    t0 = time.perf_counter()
    unsupported: list[str] = []
    extra: dict[str, Any] = {}
    if proto.name == "reenact":
        for d in data:
            if not Path(d).exists():
                raise InvalidInput("--data", "an existing folder of videos", str(d))
        srcs = discover_sources(data, "video", limit)
        samples = _generate_reenact(srcs, engs, run, max_frames, config.seed, progress)
    elif proto.name == "personalize":
        for d in data:
            if not Path(d).is_dir():
                raise InvalidInput("--data", "a folder of person sub-folders", str(d))
        samples, unsupported, reasons, how = _generate_personalize(proto, data, engs, run, ev, config.seed, progress)
        extra = {"unsupported_reasons": reasons, "personalization": how}
    else:
        srcs = discover_sources(data, "image", limit, package_photos)
        samples = _generate_edits(proto, srcs, engs, run, ev, config.seed, progress)
    info = {"schema": "facerig.eval.run/1", "protocol": proto.name, "engines": [_engine_name(e) for e in engs],
            "data": [str(d) for d in data], "unsupported_engines": unsupported, **extra, "config": asdict(config)}
    (run / "manifest.json").write_text(json.dumps({**info, "samples": [_rel(asdict(s), run) for s in samples]},
                                                  indent=1))
    t_gen = time.perf_counter() - t0
    records, sources, counts = run_evaluation(samples, run, config, evaluator=ev, progress=progress) if samples \
        else ([], [], {"evaluated": 0, "cached": 0})
    summary = summarize(records, sources, protocol=proto.name, config=config)
    report = build_report(proto.name, summary, records, config, run_info={
        **info, "out": str(run), "generation_seconds": round(t_gen, 1), "counts": counts}, estimators=estimators_used(config),
        fit_estimator=ev.fit_estimator)
    write_reports(report, records, run, thumbnails=thumbnails, formats=formats)
    return report


def _rel(d: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths inside the run folder are stored relative to it (the folder can be moved)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, str) and k in ("source", "output", "target", "requested", "source_params"):
            p = Path(v)
            try:
                v = p.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                v = str(p)
        out[k] = v
    return out


def evaluate_path(data: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                  config: EvalConfig | None = None, thumbnails: bool = False, progress: bool = True,
                  evaluator: Evaluator | None = None, formats: Sequence[str] = ("json", "md", "html")) -> dict[str, Any]:
    """``facerig evaluate``: the samples of ``data`` (:func:`load_samples`) evaluated into ``out``
    (default: the run folder itself, or ``DATA_eval/``); returns the report dict."""
    from facerig.eval.report import build_report, write_reports

    samples, info = load_samples(data)
    p = Path(data)
    run = Path(out) if out is not None else (p if (p / "manifest.json").is_file() else
                                             (p.parent / f"{p.stem}_eval" if p.is_file() else p / "eval"))
    config = config or EvalConfig()
    ev = evaluator or Evaluator(config)
    records, sources, counts = run_evaluation(samples, run, config, evaluator=ev, progress=progress)
    protocol = info.get("protocol", "evaluate")
    summary = summarize(records, sources, protocol=protocol, config=config)
    report = build_report(protocol, summary, records, config, run_info={**info, "data": str(data), "out": str(run), "counts": counts},
                          estimators=estimators_used(config), fit_estimator=ev.fit_estimator)
    write_reports(report, records, run, thumbnails=thumbnails, formats=formats)
    report["_out"] = str(run)
    return report
