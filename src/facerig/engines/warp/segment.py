"""Person (head + hair + body) segmentation for the warp engine: MediaPipe selfie segmentation
(the model ships inside the mediapipe wheel); an elliptical head prior when it is unavailable."""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_SEG = None
_FAILED = False


def _segmenter():
    global _SEG, _FAILED
    if _SEG is None and not _FAILED:
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import mediapipe as mp

                _SEG = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        except Exception as e:  # pragma: no cover - depends on the wheel
            log.warning("selfie segmentation unavailable (%s); using an elliptical head prior", e)
            _FAILED = True
    return _SEG


def ellipse_prior(hw: tuple[int, int], centre: np.ndarray, face_px: float) -> np.ndarray:
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rx, ry = 0.85 * face_px, 1.05 * face_px
    d = ((xs + 0.5 - centre[0]) / rx) ** 2 + ((ys + 0.5 - centre[1] + 0.1 * face_px) / ry) ** 2
    return np.clip(1.5 - d, 0, 1).astype(np.float32)


def person_mask(image: np.ndarray, centre: np.ndarray, face_px: float, use_model: bool = True) -> np.ndarray:
    """Soft person mask (H, W) float32 in [0, 1] of an RGB uint8 image."""
    seg = _segmenter() if use_model else None
    if seg is None:
        return ellipse_prior(image.shape[:2], centre, face_px)
    with _LOCK:
        res = seg.process(np.ascontiguousarray(image))
    m = getattr(res, "segmentation_mask", None)
    if m is None:
        return ellipse_prior(image.shape[:2], centre, face_px)
    m = np.clip(np.asarray(m, np.float32), 0, 1)
    # the face itself is always "person" (segmenters sometimes miss pale foreheads)
    return np.maximum(m, ellipse_prior(image.shape[:2], centre, 0.75 * face_px))
