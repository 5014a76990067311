"""The ``edit`` and ``reenact`` pipelines and their Python API.

``facerig.edit(image, spec_or_kwargs, engine="warp") -> EditResult`` and
``facerig.reenact(source_image, driving_video, output) -> ReenactResult`` compose
detect -> fit -> rig -> engine (see /docs/warp-engine.md). The CLI commands ``facerig edit`` and
``facerig reenact`` call :func:`run_edit` / :func:`run_reenact`.

Engines only see the source image, the fitted source params, the edited target params and the face
model (:mod:`facerig.engines.base`), so every engine plugs into the same pipelines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from facerig.errors import InvalidInput

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}

__all__ = ["EditResult", "EditSession", "ReenactResult", "build_spec", "edit", "edit_many", "reenact", "run_edit", "run_reenact"]


# --------------------------------------------------------------------------------------------
# results


@dataclass
class EditResult:
    """Output of :func:`edit`.

    ``image``: the edited photo, RGB uint8 of the input's size; ``params_before`` / ``params_after``:
    the fitted and the edited FaceParams (batch 1, crop set); ``buffers_before`` / ``buffers_after``:
    RenderBuffers of both in crop space (``buffer_size`` pixels; None when not asked); ``source``: the
    input image; ``spec``: the applied EditSpec; ``engine``: engine name; ``timings``: seconds per stage;
    ``alpha``: the source's alpha channel (H, W) uint8 or None (opaque); ``notes``: warnings of the edit
    (clamped pose, unreliable source, no change); ``mapped_preset``: (preset, intensity) a ``text`` chose.
    """

    image: np.ndarray
    params_before: Any
    params_after: Any
    buffers_before: Any = None
    buffers_after: Any = None
    source: np.ndarray | None = None
    spec: Any = None
    engine: str = "warp"
    timings: dict[str, float] = field(default_factory=dict)
    alpha: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    mapped_preset: tuple[str, float] | None = None

    def save(self, path: str | Path) -> Path:
        """Write the image; the source's alpha channel goes along into PNG/WebP/TIFF (a warning
        says it is dropped for formats without alpha, e.g. JPEG)."""
        from facerig.io.image import save_image

        if self.alpha is not None and self.alpha.shape == self.image.shape[:2]:
            if Path(path).suffix.lower() in {".png", ".webp", ".tif", ".tiff"}:
                return save_image(path, np.dstack([self.image, self.alpha]))
            log.warning("%s cannot store transparency: the source's alpha channel is dropped "
                        "(the transparent parts are white); write a .png to keep it", path)
        return save_image(path, self.image)

    def preview(self, height: int = 320) -> np.ndarray:
        """Side-by-side sheet: source | buffers before (render, normal) | buffers after | result."""
        from facerig.viz import buffer_to_rgb, hstack, label

        tiles = []
        crop = self.params_before.crop[0]
        if self.source is not None:
            tiles.append(label(_crop_view(self.source, crop), "source"))
        for tag, buf in (("before", self.buffers_before), ("after", self.buffers_after)):
            if buf is not None:
                tiles.append(label(buffer_to_rgb("render", buf.render[0], buf.region_names), f"render {tag}"))
                tiles.append(label(buffer_to_rgb("normal", buf.normal[0], buf.region_names), f"normal {tag}"))
        tiles.append(label(_crop_view(self.image, crop), f"result ({self.engine})"))
        return hstack(tiles, height=height)


@dataclass
class ReenactResult:
    """Output of :func:`reenact`: the written video, its frame count / fps, and the preview path;
    ``motion`` and ``ref_frame``: the motion mode used and its reference driving frame (None for
    "absolute"); ``clamped_frames``: frames whose head pose was clamped to the engine's faithful
    range (:attr:`facerig.engines.base.Engine.pose_range`)."""

    path: Path
    frames: int
    fps: Any
    preview_path: Path | None = None
    has_audio: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    motion: str = "relative"
    ref_frame: int | None = None
    clamped_frames: int = 0  # frames whose head pose was clamped to the engine's faithful range


def _crop_view(image: np.ndarray, crop: Any, scale: float = 1.6) -> np.ndarray:
    """A square view of the face (a wider version of the fit's crop), clipped to the image."""
    c = crop.invert(np.array([[crop.size / 2, crop.size / 2]]))[0]
    half = crop.size / crop.scale / 2 * scale
    h, w = image.shape[:2]
    x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    x1, y1 = int(min(w, c[0] + half)), int(min(h, c[1] + half))
    return image[y0:y1, x0:x1]


# --------------------------------------------------------------------------------------------
# helpers


def _with_anchor(es: Any, anchor: str | None, eng: Any) -> Any:
    """The spec with the pose anchor to use: the caller's, else the spec's own when it is not the
    default, else the engine's (``Engine.pose_anchor``)."""
    import dataclasses

    chosen = anchor or (es.pose_anchor if es.pose_anchor != "face" else getattr(eng, "pose_anchor", "face"))
    return dataclasses.replace(es, pose_anchor=chosen).validate()


def build_spec(spec: Any = None, **kwargs: Any) -> Any:
    """An :class:`~facerig.rig.EditSpec` from an EditSpec, a dict, and/or keyword arguments.

    Keywords are EditSpec fields plus shortcuts: ``smile=0.8`` (expression mouthSmile), ``gaze=(x, y)``
    or "x,y" (the gaze_x / gaze_y controls), ``expression`` as a dict or a list of "NAME=VALUE"
    strings, ``controls`` (:mod:`facerig.rig.controls`) as a dict or a list of "NAME=VALUE" strings.
    The spec is validated.
    """
    from facerig.rig.spec import EditSpec

    if spec is None:
        d: dict[str, Any] = {}
    elif isinstance(spec, EditSpec):
        d = spec.to_dict()
        d = {k: v for k, v in d.items() if v != getattr(EditSpec(), k)}
    elif isinstance(spec, Mapping):
        d = dict(spec)
    elif isinstance(spec, str):
        d = {"text": spec}
    else:
        raise InvalidInput("spec", "an EditSpec, a dict of its fields or a text", type(spec).__name__)
    d.update({k: v for k, v in kwargs.items() if v is not None})
    expr = d.pop("expression", None)
    if isinstance(expr, (list, tuple)):
        expr = parse_expression_args(expr)
    smile = d.pop("smile", None)
    if smile is not None:
        expr = dict(expr or {})
        expr["mouthSmile"] = float(smile)
    if expr:
        d["expression"] = dict(expr)
    controls = d.pop("controls", None)
    gaze = d.pop("gaze", None)
    if controls is not None or gaze is not None:
        from facerig.rig.controls import check_controls, gaze_controls, parse_control_args, parse_gaze

        ctl = parse_control_args(controls) if isinstance(controls, (list, tuple)) else check_controls(controls)
        if gaze is not None:
            ctl.update(gaze_controls(*parse_gaze(gaze, "gaze")))
        if ctl:
            d["controls"] = ctl
    if "take" in d and isinstance(d["take"], str):
        d["take"] = [t.strip() for t in d["take"].split(",") if t.strip()]
    return EditSpec.from_dict(d)


def parse_expression_args(items: Iterable[str]) -> dict[str, float]:
    """["jawOpen=0.5", "eyeBlink_L=1"] -> {"jawOpen": 0.5, "eyeBlink_L": 1.0}."""
    from facerig.rig.expression import parse_name_values

    return parse_name_values(items, "--expression", "jawOpen=0.5")


def _load_source_image(image: Any, what: str = "IMAGE") -> np.ndarray:
    from facerig.io.image import load_image

    if isinstance(image, (str, Path)):
        p = Path(image)
        if p.suffix.lower() in VIDEO_SUFFIXES:
            raise InvalidInput(what, "an image file (jpg/png/...), not a video", str(p),
                               hint="use `facerig reenact SOURCE_IMAGE DRIVING_VIDEO` for videos")
        if not p.exists():
            raise InvalidInput(what, "an existing image file", str(p))
    return load_image(image)


def _precheck(es: Any, fm: Any) -> None:
    """Fail on bad expression names / texts before the (slower) fit."""
    if es.text is not None:
        from facerig.rig.text import text_to_preset

        text_to_preset(es.text)
    if es.expression:
        from facerig.rig.expression import resolve_expression_values

        resolve_expression_values(es.expression, fm)


def _fit_one(image: np.ndarray, model: Any, face: Any, source: str, *, cache: bool = False,
             key_source: Any = None) -> Any:
    """Detect + fit one face. With ``cache``, the fit is looked up / stored by the content of
    ``key_source`` (the image file, else the array) - :mod:`facerig.io.fit_cache`."""
    from facerig.detect.mediapipe import parse_face_selector

    key = None
    if cache:
        from facerig.io.fit_cache import fit_key, load_fit

        key = fit_key(key_source if key_source is not None else image, model, face)
        hit = load_fit(key)
        if hit is not None and hit.model == model.name:
            return hit
    from facerig.fit.api import _default_detector

    lm = _default_detector().detect_one(image, select=parse_face_selector(face), source=source)
    params = _fit_landmarks(image, model, lm)
    if key is not None:
        from facerig.io.fit_cache import store_fit

        store_fit(key, params)
    return params


def _fit_landmarks(image: np.ndarray, model: Any, lm: Any) -> Any:
    """Geometry + photometric fit of one image from its detected landmarks (``FaceLandmarks``)."""
    from facerig.fit.api import FitConfig, fit_landmark_sets, keep_detections, landmark_error_report
    from facerig.fit.photometric import fit_photometric

    params = fit_landmark_sets(model, [lm], FitConfig())
    params, _ = fit_photometric(model, params, [image])
    params.meta["landmark_error"] = _plain(landmark_error_report(model, params, [lm])["landmark_error"])
    return keep_detections(params, lm)


def _plain(x: Any) -> Any:
    """numpy scalars / arrays inside dicts and lists -> JSON-friendly Python values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _naming_extra(engine: Any, make: Callable[[], Any]) -> Any:
    """``make()``, with an ImportError of an optional dependency turned into MissingDependency
    naming the extra to install."""
    from facerig.errors import MissingDependency

    try:
        return make()
    except ImportError as e:
        typed = MissingDependency.from_import_error(e, f"the {engine} engine")
        if typed is not None:
            raise typed from None
        raise


def engine_class(engine: Any) -> type:
    """The Engine class of a name or an instance, before anything is fitted: an unknown name is an
    InvalidInput, a missing optional dependency names the extra to install."""
    from facerig.engines import _resolve

    if hasattr(engine, "render_frame"):
        return type(engine)
    return cast(type, _naming_extra(engine, lambda: _resolve(engine)))


def _make_engine(engine: Any, options: dict[str, Any] | None) -> Any:
    if hasattr(engine, "render_frame"):
        return engine
    cls = engine_class(engine)
    return _naming_extra(engine, lambda: cls(**(options or {})))


#: what an edit with no change is told to add
_NO_CHANGE_HINT = ("give an expression (--preset/--smile/--expression/--text), a pose (--yaw/--pitch/--roll), "
                   "a light (--light/--light-azimuth) or --reference PHOTO --take ...")


def _pose_range(cls: Any) -> Any:
    from facerig.engines.base import Engine

    return getattr(cls, "pose_range", Engine.pose_range)


def _prepare_spec(es: Any, cls: Any, clamp: bool) -> tuple[Any, list[str]]:
    """Pre-fit checks of one spec: not empty, relative pose offsets within the engine's range
    (clamped with ``clamp``). Returns the (possibly clamped) spec and notes."""
    import dataclasses

    if es.is_empty and not getattr(cls, "edits_itself", False):  # (the dualmapper engine's mappers are the edit)
        raise InvalidInput("edit", "at least one change", "none", hint=_NO_CHANGE_HINT)
    notes: list[str] = []
    if es.pose_relative and any(getattr(es, a) is not None for a in ("yaw", "pitch", "roll")):
        from facerig.rig.pose import check_offsets

        (y, p, r), notes = check_offsets(es.yaw, es.pitch, es.roll, _pose_range(cls), clamp=clamp,
                                         engine=getattr(cls, "name", "the"))
        es = dataclasses.replace(es, yaw=y, pitch=p, roll=r).validate()
    return es, notes


def _check_reference(es: Any, reference: Any) -> None:
    """A spec that takes from a reference has one; a reference comes with what to take from it."""
    if es.take and reference is None:
        raise InvalidInput("reference", f"a reference image to take {', '.join(sorted(es.take))} from", None)
    if reference is not None and not es.take:
        raise InvalidInput("take", "what to take from the reference (expression, pose, light)", None)


def _same_params(a: Any, b: Any) -> bool:
    import torch

    return all(torch.allclose(getattr(a, n).double(), getattr(b, n).double(), rtol=0.0, atol=1e-6)
               for n in ("expression", "rotation", "camera", "light", "jaw_pose", "identity"))


def _resolve_reference(reference: Any, like: Any) -> Any:
    if like is None:
        return reference
    import warnings

    if reference is not None:
        raise InvalidInput("like", "either reference= or its deprecated alias like=, not both", like)
    warnings.warn("facerig.edit(like=...) is deprecated: use reference=", DeprecationWarning, stacklevel=3)
    return like


def _split_alpha(image: Any) -> np.ndarray | None:
    """The alpha channel (H, W) uint8 of an image file or an RGBA array, None when opaque."""
    if isinstance(image, (str, Path)):
        from facerig.io.image import load_alpha

        return load_alpha(image)
    a = np.asarray(image) if isinstance(image, np.ndarray) else None
    if a is not None and a.ndim == 3 and a.shape[2] == 4 and a.dtype == np.uint8:
        alpha = a[..., 3].copy()
        return None if (alpha == 255).all() else alpha
    return None


def edit_many(
    image: Any,
    specs: Iterable[Any],
    engine: Any = "warp",
    *,
    reference: Any = None,
    model: Any = "builtin",
    face: Any = "largest",
    params: Any = None,
    seed: int | None = None,
    buffers: bool = True,
    buffer_size: int = 256,
    engine_options: dict[str, Any] | None = None,
    anchor: str | None = None,
    clamp: bool = False,
    check_source: bool = True,
    cache: bool = False,
    like: Any = None,
    **kwargs: Any,
) -> list[EditResult]:
    """Several edits of one photo: one fit (and one engine preparation) for all of them.

    ``specs``: EditSpecs / dicts / texts as for :func:`edit`; ``kwargs`` (EditSpec fields) apply to
    every one. Everything is validated before the fit. Other arguments as for :func:`edit`.
    """
    t0 = time.perf_counter()
    reference = _resolve_reference(reference, like)
    if anchor is not None and anchor not in ("face", "head"):
        raise InvalidInput("anchor", "face or head", anchor)
    cls = engine_class(engine)
    prepared = [_prepare_spec(build_spec(sp, **kwargs), cls, clamp) for sp in specs]
    if not prepared:
        raise InvalidInput("specs", "at least one edit", 0)
    src = _load_source_image(image)
    from facerig.morphable import as_face_model

    fm = as_face_model(model)
    for es, _ in prepared:
        _precheck(es, fm)
        _check_reference(es, reference)
    ref_img = None
    if reference is not None and not hasattr(reference, "identity"):
        ref_img = _load_source_image(reference, "--reference")
    t_checked = time.perf_counter()
    session = EditSession(image, engine, model=fm, face=face, params=params, engine_options=engine_options,
                          check_source=check_source, cache=cache, _source=src)
    session.timings["checks"] += t_checked - t0
    t1 = time.perf_counter()
    ref_params = session._reference_params(reference, ref_img)
    session.timings["fit"] += time.perf_counter() - t1
    return [session._render(es, notes, ref_params, ref_img, seed=seed, buffers=buffers, buffer_size=buffer_size,
                            anchor=anchor, clamp=clamp, t0=t0)
            for es, notes in prepared]


class EditSession:
    """One photo fitted once, its engine prepared once, edited many times.

    The web UI keeps one per uploaded photo so a slider move re-renders only (no detection, fit or
    engine preparation); :func:`edit_many` uses one for its edits. ``image``, ``engine``, ``model``,
    ``face``, ``params``, ``engine_options``, ``check_source`` and ``cache`` as for :func:`edit`.
    ``notes``: the source's warnings (3/4 view, small face, unreliable fit); ``timings``: seconds of
    the fit and of the engine preparation.

    >>> s = EditSession("portrait.jpg")          # detect + fit once
    >>> s.edit(controls={"smile": 0.5}).image    # re-renders only
    """

    def __init__(self, image: Any, engine: Any = "warp", *, model: Any = "builtin", face: Any = "largest",
                 params: Any = None, engine_options: dict[str, Any] | None = None, check_source: bool = True,
                 cache: bool = False, _source: np.ndarray | None = None) -> None:
        t0 = time.perf_counter()
        self.engine_class = engine_class(engine)
        self.source = _source if _source is not None else _load_source_image(image)
        self.alpha = _split_alpha(image)
        from facerig.morphable import as_face_model

        self.model = as_face_model(model)
        self.cache = cache
        self.engine = _make_engine(engine, engine_options)
        self.engine_name = getattr(self.engine, "name", str(engine))
        self.pose_range = _pose_range(self.engine)
        self.timings: dict[str, float] = {"checks": time.perf_counter() - t0}
        t1 = time.perf_counter()
        if params is None:
            params = _fit_one(self.source, self.model, face, "the image", cache=cache,
                              key_source=image if isinstance(image, (str, Path)) else None)
        elif params.batch_size != 1:
            params = params[0]
        self.params = params
        self.notes: list[str] = []
        if check_source:
            from facerig.rig.pose import check_source_pose

            self.notes = check_source_pose(params, self.pose_range, engine=self.engine_name)
            self.notes += _fit_quality_notes(params)
        for n in self.notes:  # once per photo, not once per edit
            log.warning("%s", n)
        self.timings["fit"] = time.perf_counter() - t1
        self._state: Any = None
        self._reuse = type(self.engine).edit is _base_edit()
        self._refs: dict[Any, Any] = {}

    def prepare(self) -> Any:
        """The engine's per-photo state (:meth:`Engine.prepare`), computed on the first call."""
        if self._state is None and self._reuse:
            from facerig.engines.base import _check_image

            t = time.perf_counter()
            _check_image(self.source)
            self._state = self.engine.prepare(self.source, self.params, self.model)
            self.timings["prepare"] = time.perf_counter() - t
        return self._state

    def _reference_params(self, reference: Any, ref_img: np.ndarray | None) -> Any:
        if reference is None:
            return None
        if ref_img is None:  # already fitted FaceParams
            return reference
        import hashlib

        key = hashlib.sha1(np.ascontiguousarray(ref_img).tobytes()).hexdigest()
        if key not in self._refs:
            self._refs = {key: _fit_one(ref_img, self.model, "largest", "the reference image", cache=self.cache,
                                        key_source=reference if isinstance(reference, (str, Path)) else None)}
        return self._refs[key]

    def edit(self, spec: Any = None, *, reference: Any = None, seed: int | None = None, buffers: bool = False,
             buffer_size: int = 256, anchor: str | None = None, clamp: bool = False, **kwargs: Any) -> EditResult:
        """One edit of the session's photo (arguments as for :func:`edit`); a reference photo is
        fitted once and kept for the next edits with it."""
        t0 = time.perf_counter()
        if anchor is not None and anchor not in ("face", "head"):
            raise InvalidInput("anchor", "face or head", anchor)
        es, notes = _prepare_spec(build_spec(spec, **kwargs), self.engine_class, clamp)
        _precheck(es, self.model)
        _check_reference(es, reference)
        ref_img = None
        if reference is not None and not hasattr(reference, "identity"):
            ref_img = _load_source_image(reference, "reference")
        ref_params = self._reference_params(reference, ref_img)
        return self._render(es, notes, ref_params, ref_img, seed=seed, buffers=buffers, buffer_size=buffer_size,
                            anchor=anchor, clamp=clamp, t0=t0, fit_timings=False)

    def _render(self, es: Any, notes: list[str], ref_params: Any, ref_img: np.ndarray | None, *, seed: int | None,
                buffers: bool, buffer_size: int, anchor: str | None, clamp: bool, t0: float,
                fit_timings: bool = True) -> EditResult:
        import torch

        params, fm, eng = self.params, self.model, self.engine
        t2 = time.perf_counter()
        notes = list(self.notes) + notes
        es = _with_anchor(es, anchor, eng)
        after = es.apply(params, fm, reference=ref_params)
        if "pose" in es.take or not es.pose_relative:
            from facerig.rig.pose import check_pose_range

            what = "--reference pose" if "pose" in es.take else "--absolute"
            after, more = check_pose_range(params, after, fm, self.pose_range, clamp=clamp, anchor=es.pose_anchor,
                                           what=what, engine=eng.name)
            notes += more
        mapped = None
        if es.text is not None:
            from facerig.rig.text import text_to_preset

            name, inten = text_to_preset(es.text)
            mapped = (name, es.intensity if es.intensity is not None else inten)
        if _same_params(params, after) and not getattr(eng, "edits_itself", False):
            notes.append("the edit changes nothing (the face already has these values); the photo is "
                         "returned unchanged")
        for n in notes[len(self.notes):]:
            log.warning("%s", n)
        tm = dict(self.timings) if fit_timings else {}
        tm["rig"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        # engines whose conditioning measures the reference PHOTO itself (RigFace's released weights)
        ref_kw: dict[str, Any] = {}
        if getattr(eng, "wants_reference_image", False) and ref_img is not None:
            ref_kw = {"reference_image": ref_img, "reference_take": tuple(es.take)}
        if self._reuse:
            state = self.prepare()
            out = eng.render_frame(state, after, generator=gen, **ref_kw)
        else:
            out = eng.edit(self.source, params, after, fm, generator=gen, **ref_kw)
        tm["engine"] = time.perf_counter() - t3
        b0 = b1 = None
        if buffers:
            from facerig.render.buffers import render_buffers

            with torch.no_grad():
                b0 = render_buffers(fm, params, size=buffer_size)
                b1 = render_buffers(fm, after, size=buffer_size)
        tm["total"] = time.perf_counter() - t0
        return EditResult(out, params, after, b0, b1, self.source, es, self.engine_name, tm,
                          alpha=self.alpha, notes=notes, mapped_preset=mapped)


def _base_edit() -> Any:
    from facerig.engines.base import Engine

    return Engine.edit


#: landmark error (median, % of the inter-ocular distance) above which a fit is called unreliable
UNRELIABLE_LANDMARK_ERROR = 8.0
#: face size (mean side of the landmark box, pixels) below which edits are blurry / unreliable
SMALL_FACE_PX = 96.0


def _fit_quality_notes(params: Any) -> list[str]:
    notes = []
    err = params.meta.get("landmark_error")
    med = None
    if isinstance(err, dict):
        med = err.get("median_pct_iod")
    elif isinstance(err, list) and err and isinstance(err[0], dict):
        med = err[0].get("median_pct_iod")
    if isinstance(med, (int, float)) and med > UNRELIABLE_LANDMARK_ERROR:
        notes.append(f"the fit is unreliable (landmark error {med:.1f}% of the eye distance, above "
                     f"{UNRELIABLE_LANDMARK_ERROR:g}%): the edit may not follow the face")
    pts = params.meta.get("landmarks_px")
    if pts:
        a = np.asarray(pts, np.float64)
        side = float(np.mean(a.max(0) - a.min(0)))
        if side < SMALL_FACE_PX:
            notes.append(f"the face is small ({side:.0f} px): the edit will be soft; a larger or closer "
                         "photo works better")
    return notes


def edit(
    image: Any,
    spec: Any = None,
    engine: Any = "warp",
    *,
    reference: Any = None,
    model: Any = "builtin",
    face: Any = "largest",
    params: Any = None,
    seed: int | None = None,
    buffers: bool = True,
    buffer_size: int = 256,
    engine_options: dict[str, Any] | None = None,
    anchor: str | None = None,
    clamp: bool = False,
    check_source: bool = True,
    cache: bool = False,
    like: Any = None,
    **kwargs: Any,
) -> EditResult:
    """Edit the expression / head pose / lighting of the face in ``image``.

    ``image``: a path or an RGB(A) array. ``spec``: an EditSpec, a dict of its fields, a text
    ("make her smile"), or None with the fields as keywords (``preset="smile"``, ``yaw=15``,
    ``light="left"``, ``smile=0.8``, ``expression={"jawOpen": 0.5}``...). ``reference``: an image
    (or fitted FaceParams) to take expression/pose/light from (``take=...``; ``like=`` is a
    deprecated alias). ``engine``: a name or an Engine instance. ``params``: already fitted params
    of ``image`` (skips fitting); ``cache=True``: reuse / store the fit keyed by the file's content
    (:mod:`facerig.io.fit_cache`).

    Pose: a pose change beyond the engine's faithful range (``Engine.pose_range``, relative to the
    source's own pose; for ``--absolute`` angles and a reference's pose too) raises InvalidInput,
    or with ``clamp=True`` is clamped to it (a logged warning, ``result.notes``). A source beyond the
    engine's source limits (a profile) raises InvalidInput unless ``check_source=False``; a 3/4
    source, a small face or a high landmark error are warnings. An empty edit raises; an edit that
    changes nothing returns the photo with a warning. The source's alpha channel is kept
    (``result.alpha``; :meth:`EditResult.save` writes it to PNG/WebP/TIFF).
    Returns an :class:`EditResult`; the image keeps the input's size.
    """
    return edit_many(image, [spec], engine, reference=reference, model=model, face=face, params=params,
                     seed=seed, buffers=buffers, buffer_size=buffer_size, engine_options=engine_options,
                     anchor=anchor, clamp=clamp, check_source=check_source, cache=cache, like=like, **kwargs)[0]


IMAGE_OUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _edit_name(fields: Mapping[str, Any], i: int) -> str:
    """A file-name-friendly name of one edit of a multi-edit call."""
    import re

    if fields.get("name"):
        raw = str(fields["name"])
    elif fields.get("preset"):
        raw = str(fields["preset"])
    elif fields.get("text"):
        raw = str(fields["text"])[:32]
    else:
        raw = f"edit{i + 1}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("_") or f"edit{i + 1}"


def output_paths(output: Path, names: list[str], image: str) -> list[Path]:
    """Where each edit of a call goes. One edit: ``output`` itself. Several: ``output`` with
    ``{name}`` (and optionally ``{stem}``, the photo's name) replaced, or, when ``output`` is a
    folder (an existing one or a path without a suffix), ``FOLDER/STEM_NAME.png``."""
    out = Path(output)
    stem = Path(str(image)).stem
    if "{" in str(out):
        try:
            paths = [Path(str(out).format(name=n, stem=stem)) for n in names]
        except (KeyError, IndexError, ValueError) as e:
            raise InvalidInput("-o/--output", "a pattern with {name} (and optionally {stem})", str(output),
                               hint=f"unknown field {e}") from None
        if len(set(paths)) != len(paths):
            raise InvalidInput("-o/--output", "a pattern with {name} when there are several edits", str(output))
    elif out.is_dir() or (not out.suffix and len(names) > 1):
        paths = [out / f"{stem}_{n}.png" for n in names]
    elif len(names) > 1:
        raise InvalidInput("-o/--output", f"a pattern with {{name}} or a folder for {len(names)} edits",
                           str(output), hint="e.g. -o 'out_{name}.png' or -o outdir/")
    else:
        paths = [out]
    for p in paths:
        if p.suffix.lower() not in IMAGE_OUT_SUFFIXES:
            raise InvalidInput("-o/--output", "an image path ending in .png/.jpg/.webp", str(p))
    return paths


def load_batch(path: str | Path) -> list[dict[str, Any]]:
    """``--batch FILE.json``: a JSON list of edits, each a dict of EditSpec fields / CLI shortcuts
    (``preset``, ``intensity``, ``smile``, ``expression`` {name: value}, ``yaw``, ``light``, ...)
    and an optional ``name`` used in the output pattern; or ``{"edits": [...]}``."""
    import json

    p = Path(path)
    if not p.is_file():
        raise InvalidInput("--batch", "an existing JSON file with a list of edits", str(path))
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInput("--batch", "a JSON list of edits", str(path), hint=str(e)) from None
    if isinstance(data, dict) and "edits" in data:
        data = data["edits"]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise InvalidInput("--batch", "a non-empty JSON list of objects (one edit each)", str(path))
    return [dict(d) for d in data]


def run_edit(image: str, output: Path, *, preview: bool = False, engine: str = "warp",
             reference: str | None = None, model: str = "builtin", face: str = "largest",
             seed: int | None = None, anchor: str | None = None, clamp: bool = False,
             check_source: bool = True, cache: bool = True, model_path: str | Path | None = None,
             presets: list[str] | None = None, batch: str | Path | None = None,
             engine_options: dict[str, Any] | None = None,
             **spec_fields: Any) -> list[EditResult]:
    """`facerig edit`: one photo in, one edited image per edit (and optionally preview sheets) out.

    Several edits in one call share one fit: repeated ``--preset`` (``presets``; the other edit
    options apply to each) or ``--batch FILE.json`` (:func:`load_batch`), written to
    :func:`output_paths`. Every argument is checked before the photo is fitted."""
    take = spec_fields.get("take")
    if reference is not None and not take:
        raise InvalidInput("--take", "what to take from --reference (expression, pose, light)", None)
    if take and reference is None:
        raise InvalidInput("--reference", f"a reference photo to take {take} from", None)
    if batch is not None and (presets or any(v is not None for v in spec_fields.values())):
        raise InvalidInput("--batch", "the edits in the file, not together with edit options on the command line",
                           str(batch), hint="put every edit's fields into the file")
    if batch is not None:
        edits = load_batch(batch)
    elif presets and len(presets) > 1:
        edits = [{"preset": p} for p in presets]
    else:
        edits = [{"preset": presets[0]} if presets else {}]
    names = [_edit_name(e, i) for i, e in enumerate(edits)]
    paths = output_paths(output, names, image)
    specs = [{k: v for k, v in e.items() if k != "name"} for e in edits]
    fm: Any = model
    if model_path is not None:
        from facerig.pipelines import load_model

        fm = load_model(model, model_path)
    results = edit_many(image, specs, engine, reference=reference, model=fm, face=face, seed=seed,
                        buffers=preview, anchor=anchor, clamp=clamp, check_source=check_source, cache=cache,
                        engine_options=engine_options, **spec_fields)
    said: set[str] = set()
    for res, out_path in zip(results, paths, strict=True):
        res.save(out_path)
        what = ""
        if res.mapped_preset is not None:
            what = f" (text -> preset {res.mapped_preset[0]} at {res.mapped_preset[1]:.2g})"
        msg = f"edited {image}{what} with the {res.engine} engine -> {out_path}"
        if preview:
            from facerig.io.image import save_image

            pv = out_path.with_name(out_path.stem + "_preview.png")
            save_image(pv, res.preview())
            msg += f" (preview {pv})"
        for n in res.notes:
            if n not in said or "clamped" in n or "changes nothing" in n:
                msg += f"; warning: {n}"
                said.add(n)
        print(msg)
    return results


# --------------------------------------------------------------------------------------------
# reenact


def reenact(
    source_image: Any,
    driving_video: str | Path,
    output: str | Path,
    *,
    engine: Any = "warp",
    motion: str = "relative",
    ref_frame: int | None = None,
    relative: bool | None = None,
    smooth: float = 1.0,
    preview: bool | str | Path = False,
    max_frames: int | None = None,
    model: Any = "builtin",
    face: Any = "largest",
    progress: bool | Callable[[int, int], None] = True,
    engine_options: dict[str, Any] | None = None,
    anchor: str | None = None,
    seed: int | None = None,
) -> ReenactResult:
    """Animate the face of ``source_image`` with the motion of ``driving_video``; write ``output``.

    Fits the source once and the driving video (shared identity, smoothed), transfers expression and
    head rotation frame by frame (:func:`facerig.rig.sequence.align_sequence`), smooths the sequence
    (``smooth``: Gaussian sigma in frames, 0 = off), renders every frame from the SOURCE image (no
    drift; the engine also gets each driving frame and its fitted params, ``driving_image=`` /
    ``driving_params=``) and writes a video with the driving video's frame count, fps and audio.

    ``motion``: "relative" (default: the driver's motion against a reference driving frame applied
    on top of the source's pose and expression; the mouth follows the driver's opening fully) or
    "absolute" (the driver's expression and head rotation, the source's identity). ``ref_frame``:
    the reference frame of "relative" (default: the most neutral driving frame). ``relative``:
    older boolean spelling of ``motion`` (True = "relative", False = "absolute").
    ``preview``: also write a grid video (source | driving | result), to ``<output>_preview.mp4`` or
    the given path.
    """
    import torch

    from facerig.fit.api import FitConfig, fit_video
    from facerig.io.video import check_driving_video, check_max_frames, write_video
    from facerig.rig.sequence import align_sequence, check_motion, check_ref_frame, smooth_sequence

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if relative is not None:
        if not isinstance(relative, bool):
            raise InvalidInput("relative", "True or False (older spelling of motion=)", relative)
        motion = "relative" if relative else "absolute"
    motion = check_motion(motion)
    check_ref_frame(ref_frame)
    if ref_frame is not None and motion == "absolute":
        raise InvalidInput("ref_frame", "no reference frame with motion='absolute' (it is for 'relative')",
                           ref_frame, hint="drop --ref-frame or use --motion relative")
    check_max_frames(max_frames, "max_frames")
    drv = Path(driving_video)
    if not drv.exists():
        raise InvalidInput("DRIVING_VIDEO", "an existing video file", str(drv))
    out_path = Path(output)
    if out_path.suffix.lower() not in {".mp4", ".mkv", ".mov", ".webm", ".avi"}:
        raise InvalidInput("-o/--output", "a video path ending in .mp4/.mkv/.mov", str(output))
    if smooth < 0:
        raise InvalidInput("smooth", "a smoothing sigma >= 0 (frames)", smooth)
    info = check_driving_video(drv, max_frames=max_frames)
    src = _load_source_image(source_image, "SOURCE_IMAGE")
    from facerig.morphable import as_face_model

    fm = as_face_model(model)
    sp = _fit_one(src, fm, face, "the source image")
    timings["fit_source"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    cfg = FitConfig(photometric=False)
    fr = fit_video(str(drv), fm, cfg, max_frames=max_frames)
    timings["fit_driving"] = time.perf_counter() - t1
    check_ref_frame(ref_frame, fr.params.batch_size)
    eng = _make_engine(engine, engine_options)
    anchor_at = cast(str, anchor or getattr(eng, "pose_anchor", "face"))
    seq = align_sequence(sp, fr.params, fm, motion=motion, ref_frame=ref_frame, anchor=anchor_at)
    log.info("reenact: motion %s, reference frame %s, mouth rule %s", motion,
             seq.meta["aligned"]["ref_frame"], seq.meta["aligned"]["mouth_follow"])
    if smooth > 0 and seq.batch_size > 1:
        seq = smooth_sequence(seq, smooth)
    n_clamped = 0
    pose_range = getattr(eng, "pose_range", None)
    if pose_range is not None:  # frames beyond what the engine renders faithfully: clamped, said once
        from facerig.rig.pose import clamp_to_range

        seq, n_clamped = clamp_to_range(seq, sp, pose_range, fm, anchor_at)
        if n_clamped:
            log.warning("reenact: %d of %d frames turn the head beyond the %s engine's faithful range "
                        "(%s): clamped to it", n_clamped, seq.batch_size, getattr(eng, "name", "engine"),
                        pose_range.describe())
    n = seq.batch_size
    bar = None
    cb: Callable[[int, int], None] | None = None
    if callable(progress):
        cb = progress
    elif progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"reenact ({getattr(eng, 'name', engine)})", unit="frame", leave=False)

        def cb(i: int, total: int) -> None:  # noqa: ARG001
            bar.update(1)

    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    drv_frames = fr.images if fr.images is not None and len(fr.images) == n else None
    grid_frames: list[np.ndarray] = []  # preview tiles (360 px high), not the full-size outputs
    t2 = time.perf_counter()

    def results() -> Iterable[np.ndarray]:
        # the fit already holds the frames in memory (fit_video reads them once): no copy is made
        for i, img in enumerate(eng.reenact(src, sp, seq, fm, generator=gen, progress=cb, driving_frames=drv_frames,
                                            driving_params=fr.params)):
            if preview:
                grid_frames.append(_grid_frame(src, drv_frames[i] if drv_frames is not None else img, img))
            yield img

    fps = info.fps if info.fps and info.fps > 0 else fr.report.get("fps", 25.0)
    try:
        write_video(out_path, results(), fps=fps, audio_from=str(drv) if info.has_audio else None)
    finally:
        if bar is not None:
            bar.close()
    timings["render"] = time.perf_counter() - t2
    pv_path = None
    if preview:
        pv_path = Path(preview) if isinstance(preview, (str, Path)) else out_path.with_name(
            out_path.stem + "_preview.mp4")
        write_video(pv_path, grid_frames, fps=fps,
                    audio_from=str(drv) if info.has_audio else None)
    timings["total"] = time.perf_counter() - t0
    return ReenactResult(out_path, n, fps, pv_path, bool(info.has_audio), timings, motion,
                         seq.meta["aligned"]["ref_frame"], n_clamped)


def _grid_frame(source: np.ndarray, driving: np.ndarray, result: np.ndarray, height: int = 360) -> np.ndarray:
    import cv2

    tiles = []
    for im in (source, driving, result):
        h, w = im.shape[:2]
        nw = max(2, int(round(w * height / h)) // 2 * 2)
        tiles.append(cv2.resize(im, (nw, height), interpolation=cv2.INTER_AREA))
    return np.concatenate(tiles, 1)


def run_reenact(source_image: str, driving_video: str, output: Path, **kw: Any) -> ReenactResult:
    """`facerig reenact`: prints a one-line summary."""
    res = reenact(source_image, driving_video, output, **kw)
    extra = f", preview {res.preview_path}" if res.preview_path else ""
    audio = " with audio" if res.has_audio else ""
    how = f"motion {res.motion}" + (f", reference frame {res.ref_frame}" if res.ref_frame is not None else "")
    if res.clamped_frames:
        how += f", {res.clamped_frames} frames' head pose clamped to the engine's faithful range"
    print(f"reenacted {res.frames} frames at {float(res.fps):.3g} fps{audio} ({how}) -> {res.path}{extra}")
    return res


# --------------------------------------------------------------------------------------------
# `facerig.edit` is both this module and the function: importing the submodule binds the module
# to the package attribute, so the module itself is made callable (it forwards to `edit`).
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> EditResult:
        return edit(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
