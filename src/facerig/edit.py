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

__all__ = ["EditResult", "ReenactResult", "build_spec", "edit", "reenact", "run_edit", "run_reenact"]


# --------------------------------------------------------------------------------------------
# results


@dataclass
class EditResult:
    """Output of :func:`edit`.

    ``image``: the edited photo, RGB uint8 of the input's size; ``params_before`` / ``params_after``:
    the fitted and the edited FaceParams (batch 1, crop set); ``buffers_before`` / ``buffers_after``:
    RenderBuffers of both in crop space (``buffer_size`` pixels; None when not asked); ``source``: the
    input image; ``spec``: the applied EditSpec; ``engine``: engine name; ``timings``: seconds per stage.
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

    def save(self, path: str | Path) -> Path:
        from facerig.io.image import save_image

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
    "absolute")."""

    path: Path
    frames: int
    fps: Any
    preview_path: Path | None = None
    has_audio: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    motion: str = "relative"
    ref_frame: int | None = None


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

    Keywords are EditSpec fields plus shortcuts: ``smile=0.8`` (expression mouthSmile), and
    ``expression`` as a dict or a list of "NAME=VALUE" strings. The spec is validated.
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
    if "take" in d and isinstance(d["take"], str):
        d["take"] = [t.strip() for t in d["take"].split(",") if t.strip()]
    return EditSpec.from_dict(d)


def parse_expression_args(items: Iterable[str]) -> dict[str, float]:
    """["jawOpen=0.5", "eyeBlink_L=1"] -> {"jawOpen": 0.5, "eyeBlink_L": 1.0}."""
    out: dict[str, float] = {}
    for it in items:
        name, sep, val = str(it).partition("=")
        if not sep or not name.strip():
            raise InvalidInput("--expression", "NAME=VALUE (e.g. jawOpen=0.5)", it)
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise InvalidInput("--expression", f"a number after '{name.strip()}='", val) from None
    return out


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


def _fit_one(image: np.ndarray, model: Any, face: Any, source: str) -> Any:
    from facerig.detect.mediapipe import parse_face_selector
    from facerig.fit.api import _default_detector

    lm = _default_detector().detect_one(image, select=parse_face_selector(face), source=source)
    return _fit_landmarks(image, model, lm)


def _fit_landmarks(image: np.ndarray, model: Any, lm: Any) -> Any:
    """Geometry + photometric fit of one image from its detected landmarks (``FaceLandmarks``)."""
    from facerig.fit.api import FitConfig, fit_landmark_sets, keep_detections, landmark_error_report
    from facerig.fit.photometric import fit_photometric

    params = fit_landmark_sets(model, [lm], FitConfig())
    params, _ = fit_photometric(model, params, [image])
    params.meta["landmark_error"] = landmark_error_report(model, params, [lm])["landmark_error"]
    return keep_detections(params, lm)


# --------------------------------------------------------------------------------------------
# edit


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
    **kwargs: Any,
) -> EditResult:
    """Edit the expression / head pose / lighting of the face in ``image``.

    ``image``: a path or an RGB array. ``spec``: an EditSpec, a dict of its fields, a text ("make
    her smile"), or None with the fields as keywords (``preset="smile"``, ``yaw=15``,
    ``light="left"``, ``smile=0.8``, ``expression={"jawOpen": 0.5}``...). ``reference``: an image
    (or fitted FaceParams) to take expression/pose/light from (``take=...``). ``engine``: a name or
    an Engine instance. ``params``: already fitted params of ``image`` (skips fitting).
    Returns an :class:`EditResult`; the image keeps the input's size.
    """
    import torch

    from facerig.engines import get_engine

    t0 = time.perf_counter()
    es = build_spec(spec, **kwargs)
    src = _load_source_image(image)
    from facerig.morphable import as_face_model

    fm = as_face_model(model)
    _precheck(es, fm)
    timings: dict[str, float] = {}
    if params is None:
        params = _fit_one(src, fm, face, "the image")
    elif params.batch_size != 1:
        params = params[0]
    timings["fit"] = time.perf_counter() - t0
    ref_params = None
    if es.take:
        if reference is None:
            raise InvalidInput("reference", f"a reference image to take {', '.join(sorted(es.take))} from", None)
        if hasattr(reference, "identity"):
            ref_params = reference
        else:
            ref_params = _fit_one(_load_source_image(reference, "--like"), fm, "largest", "the reference image")
    elif reference is not None:
        raise InvalidInput("take", "what to take from the reference (expression, pose, light)", None)
    eng = engine if hasattr(engine, "render_frame") else get_engine(engine, **(engine_options or {}))
    es = _with_anchor(es, anchor, eng)
    after = es.apply(params, fm, reference=ref_params)
    timings["rig"] = time.perf_counter() - t0 - sum(timings.values())
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    t1 = time.perf_counter()
    out = eng.edit(src, params, after, fm, generator=gen)
    timings["engine"] = time.perf_counter() - t1
    b0 = b1 = None
    if buffers:
        from facerig.render.buffers import render_buffers

        with torch.no_grad():
            b0 = render_buffers(fm, params, size=buffer_size)
            b1 = render_buffers(fm, after, size=buffer_size)
    timings["total"] = time.perf_counter() - t0
    return EditResult(out, params, after, b0, b1, src, es, getattr(eng, "name", str(engine)), timings)


def run_edit(image: str, output: Path, *, preview: bool = False, engine: str = "warp",
             reference: str | None = None, model: str = "builtin", face: str = "largest",
             seed: int | None = None, anchor: str | None = None, **spec_fields: Any) -> EditResult:
    """`facerig edit`: one image in, the edited image (and optionally a preview sheet) out."""
    from facerig.io.image import save_image

    out_path = Path(output)
    if out_path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}:
        raise InvalidInput("-o/--output", "an image path ending in .png/.jpg/.webp", str(output))
    if reference is not None and not spec_fields.get("take"):
        raise InvalidInput("--take", "what to take from --like (expression, pose, light)", None)
    res = edit(image, None, engine, reference=reference, model=model, face=face, seed=seed, buffers=preview,
               anchor=anchor, **spec_fields)
    save_image(out_path, res.image)
    msg = f"edited {image} with the {res.engine} engine -> {out_path}"
    if preview:
        pv = out_path.with_name(out_path.stem + "_preview.png")
        save_image(pv, res.preview())
        msg += f" (preview {pv})"
    print(msg)
    return res


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

    from facerig.engines import get_engine
    from facerig.fit.api import FitConfig, fit_video
    from facerig.io.video import probe_video, write_video
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
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise InvalidInput("max_frames", "a number of driving frames >= 1 (or None for all)", max_frames)
    drv = Path(driving_video)
    if not drv.exists():
        raise InvalidInput("DRIVING_VIDEO", "an existing video file", str(drv))
    out_path = Path(output)
    if out_path.suffix.lower() not in {".mp4", ".mkv", ".mov", ".webm", ".avi"}:
        raise InvalidInput("-o/--output", "a video path ending in .mp4/.mkv/.mov", str(output))
    if smooth < 0:
        raise InvalidInput("smooth", "a smoothing sigma >= 0 (frames)", smooth)
    info = probe_video(drv)
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
    eng = engine if hasattr(engine, "render_frame") else get_engine(engine, **(engine_options or {}))
    seq = align_sequence(sp, fr.params, fm, motion=motion, ref_frame=ref_frame,
                         anchor=cast(str, anchor or getattr(eng, "pose_anchor", "face")))
    log.info("reenact: motion %s, reference frame %s, mouth rule %s", motion,
             seq.meta["aligned"]["ref_frame"], seq.meta["aligned"]["mouth_follow"])
    if smooth > 0 and seq.batch_size > 1:
        seq = smooth_sequence(seq, smooth)
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
                         seq.meta["aligned"]["ref_frame"])


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
