"""MediaPipe face mesh (legacy ``solutions.face_mesh`` graph, 478 landmarks) behind a small API.

:class:`FaceDetector` wraps the graph that ``mediapipe.solutions.face_mesh.FaceMesh(refine_landmarks=True)``
runs (BlazeFace short-range detection + face landmark model with attention/iris refinement). It also
reads the graph's ``face_detections`` stream, so each face gets the detector's confidence as ``score``.

Coordinates (``FaceLandmarks.points``, (478, 3) float32): ``x = x_norm * W``, ``y = y_norm * H`` in the
*original* frame's continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1)), and
``z = z_norm * W`` (MediaPipe's relative depth, smaller = closer to the camera, same pixel units). Images
are resized before detection — upscaled (bicubic) when the shorter side is below ``upscale_below``
(256 px: the landmark model needs the face to cover enough pixels; LFW-size crops fail without it),
downscaled (area) when the longer side exceeds ``max_side`` (4096 px; MediaPipe works on a 128 px
detector input and a 256 px landmark crop anyway, so this bounds memory and time for huge images
without costing accuracy: on 15 portraits of 2000-4600 px from ../shared, landmarks found after
downscaling to 1920 or 1024 px differ from native-resolution ones by 0.02-0.6 % of the face size.
Below 4096 px MediaPipe's own ROI resampling is faster than an area resize: 5.7 ms at 2048 px native
vs 17.5 ms with an area resize to 1920 first). Because MediaPipe reports normalised coordinates,
mapping back is exact.
Measured (astronaut / grace_hopper shrunk to a 64 px short side, against the landmarks found at full
size): mean landmark error 3.4 / 1.2 % of the face size with upscaling, 6.0 / 2.8 % without. When the
resized image gives no face, detection is retried once at the native size (on skimage's 25 px LFW
crops this takes recall from 95 to 100 of 100; upscaled results are preferred because they are more
accurate).

Points may lie outside the frame when the face is cut by the border; ``box`` is the tight box of all
478 points, unclipped. Faces are sorted largest first (by ``FaceLandmarks.size``).

mediapipe is imported lazily (on the first detection), graphs are built once per detector and reused;
call :meth:`FaceDetector.close` (or use ``with FaceDetector() as det:``) to free them. Not thread-safe:
use one detector per thread.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from facerig.errors import FaceTooSmall, ImageTooSmall, InvalidInput, NoFaceFound
from facerig.types import FaceLandmarks

__all__ = ["FaceDetector", "parse_face_selector"]

# MediaPipe's C++ side logs to stderr (glog/absl) unless told otherwise; keep the CLI's output clean.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _quiet_native_stderr() -> Any:
    """Silence what MediaPipe's native code writes to file descriptor 2 (TFLite/absl banners) while
    graphs start and run; Python exceptions still propagate. FACERIG_DEBUG=1 keeps it visible."""
    if os.environ.get("FACERIG_DEBUG") == "1":
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

_GRAPH = "mediapipe/modules/face_landmark/face_landmark_front_cpu.binarypb"
_DET_THRESH = (
    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
    "TensorsToDetectionsCalculator.min_score_thresh"
)
_PRESENCE_THRESH = "facelandmarkcpu__ThresholdingCalculator.threshold"


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def parse_face_selector(face: Any, name: str = "face") -> str | int:
    """A user's face choice ("largest", None, an index or its text) -> what ``detect_one`` takes."""
    if face in (None, "largest"):
        return "largest"
    try:
        return int(face)
    except (TypeError, ValueError):
        raise InvalidInput(name, "'largest' or a face index (0 = largest)", face) from None


#: side (pixels) of the tiles a large image is searched in when the whole-image detectors find no face
TILE_SIDE = 1024
#: smallest tile side: half the image's long side, within [MIN_TILE_SIDE, TILE_SIDE]
MIN_TILE_SIDE = 512
#: images whose long side is at least this are searched in tiles when nothing else found a face
TILED_FROM = 1000

class FaceDetector:
    """MediaPipe face-mesh detector producing :class:`~facerig.types.FaceLandmarks` (478 points).

    ``max_faces``: most faces returned per image. ``min_face_px``: smallest face size (mean side of
    the landmark box, in frame pixels) :meth:`detect_one` accepts. ``min_confidence``: BlazeFace
    detection threshold. ``min_tracking_confidence``: face-presence threshold of the landmark model
    (in video mode, falling below it triggers re-detection). ``upscale_below`` / ``max_side``: the
    resizing described in the module docstring (``None`` disables each).
    """

    def __init__(
        self,
        max_faces: int = 16,
        min_face_px: float = 48,
        min_confidence: float = 0.5,
        *,
        min_tracking_confidence: float = 0.5,
        upscale_below: int | None = 256,
        max_side: int | None = 4096,
    ) -> None:
        if max_faces < 1:
            raise InvalidInput("max_faces", "at least 1", max_faces)
        if not 0.0 <= min_confidence <= 1.0:
            raise InvalidInput("min_confidence", "a value in [0, 1]", min_confidence)
        self.max_faces = int(max_faces)
        self.min_face_px = float(min_face_px)
        self.min_confidence = float(min_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.upscale_below = upscale_below
        self.max_side = max_side
        self._static: Any = None
        self._full_range: Any = None

    # ---- graph management ------------------------------------------------------------------
    def _make_graph(self, static: bool, max_faces: int) -> Any:
        with warnings.catch_warnings(), _quiet_native_stderr():
            warnings.simplefilter("ignore")
            from mediapipe.python.solution_base import SolutionBase

            return SolutionBase(
                binary_graph_path=_GRAPH,
                side_inputs={"num_faces": max_faces, "with_attention": True, "use_prev_landmarks": not static},
                calculator_params={
                    _DET_THRESH: self.min_confidence,
                    _PRESENCE_THRESH: self.min_tracking_confidence,
                },
                outputs=["multi_face_landmarks", "face_detections"],
            )

    def _static_graph(self) -> Any:
        if self._static is None:
            self._static = self._make_graph(static=True, max_faces=self.max_faces)
        return self._static

    def close(self) -> None:
        """Free the MediaPipe graph (a later call builds it again)."""
        for attr in ("_static", "_full_range"):
            g = getattr(self, attr, None)
            if g is not None:
                try:
                    g.close()
                finally:
                    setattr(self, attr, None)

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---- preprocessing ---------------------------------------------------------------------
    def _as_rgb(self, image: Any, source: str | None = None) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            from facerig.io.image import DEFAULT_MIN_SIDE

            if min(image.shape[:2]) < DEFAULT_MIN_SIDE:
                raise ImageTooSmall(source or "image", f"both sides at least {DEFAULT_MIN_SIDE} px",
                                    f"{image.shape[1]}x{image.shape[0]}")
            return np.ascontiguousarray(image)
        from facerig.io.image import load_image

        return load_image(image, name=source)

    def _resized(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        s = 1.0
        if self.upscale_below and min(h, w) < self.upscale_below:
            s = self.upscale_below / min(h, w)
        elif self.max_side and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
        if s == 1.0:
            return rgb
        size = (max(1, round(w * s)), max(1, round(h * s)))
        interp = cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA
        return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=interp))

    def _process(self, graph: Any, image: np.ndarray) -> Any:
        with warnings.catch_warnings(), _quiet_native_stderr():
            warnings.simplefilter("ignore")
            return graph.process({"image": image})

    def _full_range_boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Face boxes (frame pixels) from BlazeFace's full-range model, which finds the small faces
        (group photos, full-body shots) that the face-mesh graph's short-range detector misses."""
        if self._full_range is None:
            with warnings.catch_warnings(), _quiet_native_stderr():
                warnings.simplefilter("ignore")
                from mediapipe.python.solutions.face_detection import FaceDetection

                self._full_range = FaceDetection(model_selection=1, min_detection_confidence=self.min_confidence)
        h, w = rgb.shape[:2]
        with warnings.catch_warnings(), _quiet_native_stderr():
            warnings.simplefilter("ignore")
            res = self._full_range.process(rgb)
        boxes = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            boxes.append((bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h))
        return boxes

    def _tiled_boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        """Full-range detections on overlapping tiles of a large image: the detector sees a 192 px
        thumbnail of its input, where a 90 px face of a 4000 px photo is 4 px; on a ~1000 px tile it
        is 17 px, which it finds. Overlapping boxes of neighbouring tiles are merged."""
        h, w = rgb.shape[:2]
        tile = int(min(TILE_SIDE, max(MIN_TILE_SIDE, max(h, w) / 2)))
        step = int(tile * 0.75)
        boxes: list[tuple[float, float, float, float]] = []
        ys = list(range(0, max(1, h - tile), step)) + [max(0, h - tile)]
        xs = list(range(0, max(1, w - tile), step)) + [max(0, w - tile)]
        for y in sorted(set(ys)):
            for x in sorted(set(xs)):
                part = np.ascontiguousarray(rgb[y:y + tile, x:x + tile])
                for b in self._full_range_boxes(part):
                    fb = (b[0] + x, b[1] + y, b[2] + x, b[3] + y)
                    if not any(_box_iou(fb, o) > 0.3 for o in boxes):
                        boxes.append(fb)
        boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
        return boxes

    def _run_in_boxes(self, graph: Any, rgb: np.ndarray, frame_index: int) -> list[FaceLandmarks]:
        """Face mesh on an enlarged square around each full-range detection, mapped back to the frame;
        in a large image with none, on the detections of its tiles (:meth:`_tiled_boxes`)."""
        import cv2

        h, w = rgb.shape[:2]
        faces: list[FaceLandmarks] = []
        boxes = self._full_range_boxes(rgb)
        if not boxes and max(h, w) >= TILED_FROM:
            boxes = self._tiled_boxes(rgb)
        for x0, y0, x1, y1 in boxes[: self.max_faces]:
            side = 2.2 * max(x1 - x0, y1 - y0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            ox, oy = cx - side / 2, cy - side / 2
            out = 384
            m = np.array([[out / side, 0, -ox * out / side], [0, out / side, -oy * out / side]])
            crop = cv2.warpAffine(rgb, m, (out, out), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            for f in self._run(graph, np.ascontiguousarray(crop), frame_index, retry=False, boxes=False):
                pts = f.points.copy()
                pts[:, :2] = pts[:, :2] * side / out + np.array([ox, oy])
                pts[:, 2] = pts[:, 2] * side / out
                box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
                if any(_box_iou(box, g.box) > 0.3 for g in faces):
                    continue
                faces.append(FaceLandmarks(points=pts, frame_size=(h, w), box=box, score=f.score,
                                           frame_index=frame_index))
                break
        faces.sort(key=lambda f: f.size, reverse=True)
        return faces

    def _run(self, graph: Any, rgb: np.ndarray, frame_index: int, retry: bool = True,
             boxes: bool = True) -> list[FaceLandmarks]:
        h, w = rgb.shape[:2]
        resized = self._resized(rgb)
        res = self._process(graph, resized)
        if retry and not res.multi_face_landmarks and resized is not rgb:
            # the resized image found nothing: try the native resolution before giving up
            res = self._process(graph, rgb)
        faces: list[FaceLandmarks] = []
        if not res.multi_face_landmarks:
            if boxes:
                # small faces: find them with the full-range detector, then run the mesh on each
                return self._run_in_boxes(graph, rgb, frame_index)
            return faces
        dets = []
        for d in res.face_detections or []:
            bb = d.location_data.relative_bounding_box
            box = (bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h)
            dets.append((box, float(d.score[0]) if len(d.score) else 1.0))
        for lms in res.multi_face_landmarks:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lms.landmark], dtype=np.float32)
            x0, y0 = float(pts[:, 0].min()), float(pts[:, 1].min())
            x1, y1 = float(pts[:, 0].max()), float(pts[:, 1].max())
            box = (x0, y0, x1, y1)
            score = 1.0
            if dets:
                ious = [_box_iou(box, db) for db, _ in dets]
                k = int(np.argmax(ious))
                if ious[k] > 0.1:
                    score = dets[k][1]
            faces.append(FaceLandmarks(points=pts, frame_size=(h, w), box=box, score=score,
                                       frame_index=frame_index))
        faces.sort(key=lambda f: f.size, reverse=True)
        return faces

    # ---- public API ------------------------------------------------------------------------
    def detect(self, image: Any, *, frame_index: int = 0) -> list[FaceLandmarks]:
        """All faces in one image (an RGB uint8 array, or anything ``load_image`` accepts), largest first.

        Faces smaller than ``min_face_px`` are included; :meth:`detect_one` is the checked variant.
        """
        rgb = self._as_rgb(image)
        return self._run(self._static_graph(), rgb, frame_index)

    def detect_one(
        self, image: Any, select: str | int = "largest", source: str = "image", *, frame_index: int = 0
    ) -> FaceLandmarks:
        """The one face to work on: ``select="largest"`` or an index into the largest-first list.

        Raises :class:`NoFaceFound` (none found, or the index is out of range) and
        :class:`FaceTooSmall` (the selected face is smaller than ``min_face_px``). ``source`` names the
        image in those messages.
        """
        rgb = self._as_rgb(image, source)
        faces = self._run(self._static_graph(), rgb, frame_index)
        return self._select(faces, select, source, rgb.shape[:2])

    def _select(self, faces: list[FaceLandmarks], select: str | int, source: str,
                hw: tuple[int, ...]) -> FaceLandmarks:
        if not faces:
            detail = f"MediaPipe found no face in the {hw[1]}x{hw[0]} image"
            if max(hw[:2]) >= TILED_FROM:
                detail += (" (a face that is small relative to the image is easily missed: crop the photo "
                           "around the face and try again)")
            raise NoFaceFound(source, detail)
        if select == "largest":
            face = faces[0]
        elif isinstance(select, (int, np.integer)) and not isinstance(select, bool):
            if not -len(faces) <= int(select) < len(faces):
                raise NoFaceFound(source, f"face {select} requested, {len(faces)} found")
            face = faces[int(select)]
        else:
            raise InvalidInput("select", "'largest' or a face index (0 = largest)", select)
        if face.size < self.min_face_px:
            raise FaceTooSmall(source, face.size, self.min_face_px)
        return face

    def detect_batch(self, images: Iterable[Any]) -> list[list[FaceLandmarks]]:
        """:meth:`detect` over unrelated images (static mode; ``frame_index`` = position in the list)."""
        graph = self._static_graph()
        return [self._run(graph, self._as_rgb(im), i) for i, im in enumerate(images)]

    def detect_video(
        self, frames: Iterable[Any], *, select: str | int = "largest", min_iou: float = 0.1
    ) -> list[FaceLandmarks | None]:
        """One face per frame of a video, with MediaPipe's tracking mode.

        Landmarks of frame t seed the region of frame t+1; when the face-presence score falls below
        ``min_tracking_confidence`` (track lost, scene cut, occlusion) the graph runs the detector
        again on the next frame. A frame where no face is found gives ``None``. With several faces,
        the first frame's face is chosen by ``select`` and later frames keep the face whose box
        overlaps the last chosen box most (IoU >= ``min_iou``; otherwise ``select`` is applied
        again). A fresh tracking graph is built per call, so videos do not leak state into each other.
        ``frame_index`` of each result is the frame's position.
        """
        graph = self._make_graph(static=False, max_faces=self.max_faces)
        out: list[FaceLandmarks | None] = []
        last_box: tuple[float, float, float, float] | None = None
        last_score = 1.0
        size: tuple[int, int] | None = None
        try:
            for i, frame in enumerate(frames):
                rgb = self._as_rgb(frame, f"frame {i}")
                if size is not None and rgb.shape[:2] != size:
                    raise InvalidInput(f"frames[{i}]", f"a frame of size {size[1]}x{size[0]}",
                                       f"{rgb.shape[1]}x{rgb.shape[0]}")
                size = rgb.shape[:2]
                faces = self._run(graph, rgb, i, retry=False, boxes=False)
                chosen: FaceLandmarks | None = None
                if faces:
                    if last_box is not None and len(faces) > 1:
                        ious = [_box_iou(f.box, last_box) for f in faces]
                        k = int(np.argmax(ious))
                        if ious[k] >= min_iou:
                            chosen = faces[k]
                    if chosen is None:
                        if select == "largest":
                            chosen = faces[0]
                        elif isinstance(select, int) and -len(faces) <= select < len(faces):
                            chosen = faces[select]
                        else:
                            chosen = faces[0]
                    # the detector runs only on (re-)detection frames: keep the track's last score
                    if chosen.score == 1.0 and last_box is not None:
                        chosen.score = last_score
                    last_box, last_score = chosen.box, chosen.score
                out.append(chosen)
        finally:
            graph.close()
        return out
