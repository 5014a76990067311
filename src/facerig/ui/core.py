"""The web UI's work, as plain functions and one :class:`Studio` object (no gradio here).

The gradio layout (:mod:`facerig.ui.app`) only wires widgets to these. A photo is loaded once per
upload (size-checked before decoding), its faces detected once, and each chosen face fitted once: a
:class:`~facerig.edit.EditSession` per (photo, face, engine) is kept in a small LRU cache, so a slider
move only re-renders (the warp engine's ``render_frame`` on the prepared state).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerig.errors import FacerigError, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["ENGINE_CHOICES", "EditValues", "EngineChoice", "LoadedPhoto", "Rendered", "Studio", "engine_status",
           "error_message", "face_thumbnails", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_MAX_UPLOAD_PIXELS"]

#: largest upload accepted (file bytes; checked before decoding); env FACERIG_UI_MAX_MB
DEFAULT_MAX_UPLOAD_MB = 25.0
#: largest upload accepted (pixels, read from the header before decoding); env FACERIG_UI_MAX_PIXELS
DEFAULT_MAX_UPLOAD_PIXELS = 40_000_000
#: photos kept fitted at once (each holds the prepared warp state, a few MB)
SESSION_CACHE = 6

#: engines the selector offers; the neural ones need weights (and the [diffusion] extra)
ENGINE_CHOICES = ("warp", "rigface", "diffusionrig", "magicportrait", "instaface", "dualmapper")


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(name, "a number", raw) from None


def error_message(e: BaseException) -> str:
    """The one line a person sees for an error: typed facerig errors as they read, a missing optional
    package with the extra to install, anything else as an internal error (logged with its traceback)."""
    if isinstance(e, FacerigError):
        return str(e)
    if isinstance(e, ImportError):
        from facerig.errors import MissingDependency

        typed = MissingDependency.from_import_error(e, "this engine")
        if typed is not None:
            return str(typed)
    log.exception("internal error in the web UI")
    return f"internal error: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------
# photos and faces


@dataclass
class LoadedPhoto:
    """An uploaded photo: its content key, RGB pixels, alpha (or None) and detected faces (largest
    first; each a FaceLandmarks)."""

    key: str
    image: np.ndarray
    alpha: np.ndarray | None
    faces: list[Any]
    path: str | None = None


def face_thumbnails(image: np.ndarray, faces: list[Any], side: int = 96) -> list[np.ndarray]:
    """A square thumbnail per face (its landmark box widened by 30 %)."""
    import cv2

    h, w = image.shape[:2]
    out = []
    for f in faces:
        x0, y0, x1, y1 = f.box
        c, half = ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * 0.65
        a, b = int(max(0, c[0] - half)), int(max(0, c[1] - half))
        e, g = int(min(w, c[0] + half)), int(min(h, c[1] + half))
        crop = image[b:g, a:e]
        out.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA) if crop.size else
                   np.zeros((side, side, 3), np.uint8))
    return out


# ---------------------------------------------------------------------------------------------
# engines


@dataclass(frozen=True)
class EngineChoice:
    """An engine and its paths as the selector gives them; ``options()`` are the constructor's."""

    name: str = "warp"
    weights: str = ""
    base: str = ""
    steps: int = 0  # sampling steps of a diffusion engine (0: the engine's default)

    def options(self) -> dict[str, Any] | None:
        if self.name == "warp":
            return None
        out: dict[str, Any] = {k: v.strip() for k, v in (("weights", self.weights), ("base", self.base))
                               if v and v.strip()}
        if self.steps and int(self.steps) > 0:
            out["steps"] = int(self.steps)
        return out or None


def engine_status(choice: EngineChoice) -> tuple[bool, str]:
    """(usable, reason): warp always; a neural engine only with the [diffusion] extra installed and
    its weight paths given and present."""
    import importlib.util

    name = choice.name
    if name == "warp":
        return True, "warp: training-free, no weights; edits re-render as the sliders move"
    if name not in ENGINE_CHOICES:
        return False, f"unknown engine {name!r} (one of {', '.join(ENGINE_CHOICES)})"
    if importlib.util.find_spec("diffusers") is None:
        return False, f"{name} is disabled: it needs the diffusion extra (pip install 'facerig[diffusion]')"
    if not choice.weights.strip():
        return False, f"{name} is disabled: give the path of its weights"
    if not Path(choice.weights.strip()).expanduser().exists():
        return False, f"{name} is disabled: no weights at {choice.weights.strip()}"
    needs_base = name in ("rigface", "magicportrait", "instaface")
    base = choice.base.strip() or os.environ.get("FACERIG_SD15", "")
    if needs_base and not base:
        return False, f"{name} is disabled: give the Stable Diffusion 1.5 base (or set FACERIG_SD15)"
    if needs_base and not Path(base).expanduser().exists():
        return False, f"{name} is disabled: no Stable Diffusion base at {base}"
    return True, f"{name}: weights {choice.weights.strip()}; a render takes seconds to minutes (press Render)"


# ---------------------------------------------------------------------------------------------
# edits


@dataclass
class EditValues:
    """Everything the Edit tab's widgets say, as one edit: ``controls`` (slider name -> value,
    :mod:`facerig.rig.controls`), a preset with its intensity, or a text; pose offsets (degrees,
    relative to the photo); a light preset (or "custom" for ``light_azimuth``/``light_elevation``, or
    "photo" for none); a reference photo with what to take from it."""

    controls: dict[str, float] = field(default_factory=dict)
    preset: str = "none"
    intensity: float = 1.0
    text: str = ""
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    light: str = "photo"
    light_azimuth: float = 0.0
    light_elevation: float = 0.0
    reference: str | None = None
    take: tuple[str, ...] = ()

    def spec_fields(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`facerig.edit.EditSession.edit` (only what changes)."""
        d: dict[str, Any] = {}
        ctl = {k: float(v) for k, v in self.controls.items() if float(v) != 0.0}
        if ctl:
            d["controls"] = ctl
        text = (self.text or "").strip()
        if text:  # the text's own intensity words ("slightly", "a lot") decide its strength
            d["text"] = text
        elif self.preset and self.preset != "none":
            d["preset"] = self.preset
            d["intensity"] = float(self.intensity)
        for ax in ("yaw", "pitch", "roll"):
            if float(getattr(self, ax)) != 0.0:
                d[ax] = float(getattr(self, ax))
        if self.light == "custom":
            d["light_azimuth"], d["light_elevation"] = float(self.light_azimuth), float(self.light_elevation)
        elif self.light and self.light != "photo":
            d["light"] = self.light
        if self.reference and self.take:
            d["take"] = list(self.take)
        return d


@dataclass
class Rendered:
    """One render for the UI: the edited image, the face before/after (crop views), labelled buffer views, the
    notes (warnings), the preset a text mapped to, and the server-side seconds."""

    image: np.ndarray
    before: np.ndarray
    after: np.ndarray
    buffers: list[tuple[np.ndarray, str]]
    notes: list[str]
    mapped: tuple[str, float] | None
    seconds: float
    result: Any = None
    key: str = ""  # the photo's upload key (names its download file)

    @property
    def message(self) -> str:
        parts = []
        if self.mapped is not None:
            parts.append(f"text -> preset **{self.mapped[0]}** at {self.mapped[1]:.2g}")
        parts += [f"warning: {n}" for n in self.notes]
        if self.result is not None and self.result.spec is None:
            parts.append("the photo as uploaded: move a slider, pick a preset or describe an expression")
        else:
            parts.append(f"rendered in {self.seconds * 1000:.0f} ms")
        return "; ".join(parts)


class Studio:
    """State of the web UI: uploaded photos (by content) and their fitted sessions.

    ``max_upload_mb`` / ``max_upload_pixels``: upload limits (env FACERIG_UI_MAX_MB /
    FACERIG_UI_MAX_PIXELS); ``model``: the face model; ``work_dir``: where downloads and reenacted
    videos are written (a temporary folder by default). Thread-safe: gradio calls from worker threads.
    """

    def __init__(self, *, max_upload_mb: float | None = None, max_upload_pixels: int | None = None,
                 model: Any = "builtin", work_dir: str | Path | None = None, sessions: int = SESSION_CACHE) -> None:
        self.max_upload_bytes = int((max_upload_mb if max_upload_mb is not None else
                                     _env_number("FACERIG_UI_MAX_MB", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024)
        self.max_upload_pixels = int(max_upload_pixels if max_upload_pixels is not None else
                                     _env_number("FACERIG_UI_MAX_PIXELS", DEFAULT_MAX_UPLOAD_PIXELS))
        from facerig.morphable import as_face_model

        self.model = as_face_model(model)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="facerig-ui-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._photos: OrderedDict[str, LoadedPhoto] = OrderedDict()
        self._sessions: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._n_sessions = max(1, int(sessions))
        self._lock = threading.RLock()
        self._session_locks: dict[tuple[Any, ...], threading.Lock] = {}

    # ---- uploads ------------------------------------------------------------------------------
    def check_upload(self, path: str | Path, what: str = "photo") -> Path:
        """The upload's path after the size checks (bytes, then the header's pixel count)."""
        p = Path(path)
        if not p.is_file():
            raise InvalidInput(what, "an uploaded image file", str(path))
        size = p.stat().st_size
        if size > self.max_upload_bytes:
            raise InvalidInput(what, f"a file of at most {self.max_upload_bytes / 2 ** 20:.0f} MB",
                               f"{size / 2 ** 20:.1f} MB")
        return p

    def load(self, path: str | Path, name: str | None = None) -> LoadedPhoto:
        """Check, decode and detect the faces of an uploaded photo (once per content); ``name``: the
        file's name on the user's side, used in messages instead of the server's upload path."""
        from facerig.errors import ImageUnreadable
        from facerig.io.image import load_alpha, load_image

        p = self.check_upload(path)
        shown = name or p.name
        data = p.read_bytes()
        key = hashlib.sha1(data).hexdigest()[:16]
        with self._lock:
            if key in self._photos:
                self._photos.move_to_end(key)
                return self._photos[key]
        try:
            image = load_image(p, max_pixels=self.max_upload_pixels)
        except ImageUnreadable:
            raise InvalidInput("photo", "a readable image file (PNG, JPEG, WebP, TIFF, BMP)", shown) from None
        except InvalidInput as e:  # too large / too small / odd mode: the message, with the user's file name
            raise InvalidInput("photo", "an image this server accepts", shown,
                               hint=str(e).replace(str(p), shown)) from None
        alpha = load_alpha(p)
        from facerig.fit.api import _default_detector

        faces = _default_detector().detect(image)
        if not faces:  # the checked path: tiles for a small face in a large photo, else a hint
            faces = [_default_detector().detect_one(image, source="the photo")]
        photo = LoadedPhoto(key, image, alpha, list(faces), str(p))
        with self._lock:
            self._photos[key] = photo
            while len(self._photos) > self._n_sessions:
                self._photos.popitem(last=False)
        return photo

    def photo(self, key: str) -> LoadedPhoto:
        with self._lock:
            if key not in self._photos:
                raise InvalidInput("photo", "an uploaded photo (upload it again: it left the cache)", key)
            return self._photos[key]

    # ---- sessions -----------------------------------------------------------------------------
    def session(self, key: str, face: int = 0, engine: EngineChoice | None = None) -> Any:
        """The fitted :class:`~facerig.edit.EditSession` of a photo's face (created once)."""
        from facerig.edit import EditSession, _fit_landmarks

        engine = engine or EngineChoice()
        ok, reason = engine_status(engine)
        if not ok:
            raise InvalidInput("engine", "an engine that can run here", engine.name, hint=reason)
        photo = self.photo(key)
        if not 0 <= int(face) < len(photo.faces):
            raise InvalidInput("face", f"a face index 0..{len(photo.faces) - 1}", face)
        skey = (key, int(face), engine)
        with self._lock:
            if skey in self._sessions:
                self._sessions.move_to_end(skey)
                return self._sessions[skey]
            lock = self._session_locks.setdefault(skey, threading.Lock())
        with lock:  # two slider events racing on a fresh upload fit it once
            with self._lock:
                if skey in self._sessions:
                    return self._sessions[skey]
            fit_key = (key, int(face))
            params = next((s.params for (k, f, _), s in self._sessions.items() if (k, f) == fit_key), None)
            if params is None:
                params = _fit_landmarks(photo.image, self.model, photo.faces[int(face)])
            image: Any = photo.image if photo.alpha is None else np.dstack([photo.image, photo.alpha])
            s = EditSession(image, engine.name, model=self.model, params=params, engine_options=engine.options())
            s.prepare()
            with self._lock:
                self._sessions[skey] = s
                while len(self._sessions) > self._n_sessions:
                    self._sessions.popitem(last=False)
            return s

    def render(self, key: str, values: EditValues, *, face: int = 0, engine: EngineChoice | None = None,
               buffers: bool = False, buffer_size: int = 256) -> Rendered:
        """One edit of an uploaded photo's face; the photo itself when nothing is changed."""
        import time

        t0 = time.perf_counter()
        s = self.session(key, face, engine)
        fields = values.spec_fields()
        reference = None
        if values.reference and values.take:
            reference = str(self.check_upload(values.reference, "reference photo"))
        if not fields:
            from facerig.edit import EditResult

            res = EditResult(s.source.copy(), s.params, s.params, source=s.source, alpha=s.alpha, engine=s.engine_name)
            notes = list(s.notes)
        else:
            res = s.edit(reference=reference, buffers=buffers, buffer_size=buffer_size, **fields)
            notes = list(res.notes)
        views: list[tuple[np.ndarray, str]] = []
        if buffers:
            views = self.buffer_views(res, buffer_size)
        from facerig.edit import _crop_view

        crop = s.params.crop[0]
        return Rendered(res.image, display_view(_crop_view(s.source, crop)), display_view(_crop_view(res.image, crop)),
                        views, notes, res.mapped_preset, time.perf_counter() - t0, res, f"{key}-{int(face)}")

    def buffer_views(self, res: Any, size: int = 256) -> list[tuple[np.ndarray, str]]:
        """Labelled buffers (render, normal, albedo, shading, depth) before and after the edit."""
        import torch

        from facerig.render.buffers import render_buffers
        from facerig.viz import buffer_to_rgb

        with torch.no_grad():
            b0 = res.buffers_before if res.buffers_before is not None else render_buffers(self.model, res.params_before, size=size)
            b1 = res.buffers_after if res.buffers_after is not None else render_buffers(self.model, res.params_after, size=size)
        out = []
        for name in ("render", "normal", "albedo", "shading", "depth"):
            for tag, b in (("before", b0), ("after", b1)):
                out.append((buffer_to_rgb(name, getattr(b, name)[0], b.region_names), f"{name} {tag}"))
        return out

    def save(self, rendered: Rendered, stem: str = "facerig-edit") -> Path:
        """Write the edited image as PNG (keeping the photo's alpha) for download: one file per photo
        and face, rewritten by each edit (a slider session does not fill the disk with one file per move)."""
        from facerig.edit import EditResult

        res = rendered.result
        if not isinstance(res, EditResult):
            res = EditResult(rendered.image, None, None)
        tag = rendered.key or hashlib.sha1(rendered.image.tobytes()).hexdigest()[:10]
        out = self.work_dir / f"{stem}-{tag}.png"
        res.save(out)
        return out

    # ---- reenactment --------------------------------------------------------------------------
    def reenact(self, portrait: str | Path, video: str | Path, *, motion: str = "relative",
                ref_frame: int | None = None, max_frames: int | None = None, face: int = 0,
                engine: EngineChoice | None = None,
                progress: Callable[[int, int], None] | None = None) -> Any:
        """Animate the portrait with the driving video; returns the :class:`~facerig.edit.ReenactResult`
        (an .mp4 in ``work_dir``, with the driver's audio when ffmpeg is available)."""
        from facerig.edit import reenact

        engine = engine or EngineChoice()
        ok, reason = engine_status(engine)
        if not ok:
            raise InvalidInput("engine", "an engine that can run here", engine.name, hint=reason)
        p = self.check_upload(portrait, "portrait")
        v = Path(video)
        if not v.is_file():
            raise InvalidInput("driving video", "an uploaded video file", str(video))
        if v.stat().st_size > 20 * self.max_upload_bytes:
            raise InvalidInput("driving video", f"a file of at most {20 * self.max_upload_bytes / 2 ** 20:.0f} MB",
                               f"{v.stat().st_size / 2 ** 20:.1f} MB")
        out = self.work_dir / f"reenact-{hashlib.sha1(p.read_bytes()[:1 << 20]).hexdigest()[:8]}-{v.stem[:24]}.mp4"
        return reenact(str(p), str(v), out, motion=motion, ref_frame=ref_frame, max_frames=max_frames,
                       face=int(face), engine=engine.name, engine_options=engine.options(),
                       progress=progress if progress is not None else False, model=self.model)


#: the face views are shown at least this large (a small face in a group photo is upscaled for viewing;
#: the download is always the photo at its own size)
DISPLAY_SIDE = 480


def display_view(view: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """``view`` resized (bicubic) so its long side is at least ``side`` pixels; larger views as they are."""
    import cv2

    h, w = view.shape[:2]
    if max(h, w) >= side or min(h, w) < 1:
        return view
    s = side / max(h, w)
    return cv2.resize(view, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)


def slider_specs() -> list[tuple[str, float, float, str]]:
    """(name, low, high, description) of every control slider, in the rig's order."""
    from facerig.rig.controls import CONTROLS

    return [(n, c.low, c.high, c.description) for n, c in CONTROLS.items()]


def controls_from(values: Mapping[str, Any]) -> dict[str, float]:
    from facerig.rig.controls import CONTROL_NAMES

    return {n: float(values[n]) for n in CONTROL_NAMES if n in values and values[n] is not None}
