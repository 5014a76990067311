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


def segment_person(image: np.ndarray) -> np.ndarray | None:
    """The segmenter's own soft person mask (H, W) of an RGB uint8 image, without the elliptical
    face prior :func:`person_mask` adds (that prior reaches well onto the background round a bald
    head or short hair); None when segmentation is unavailable."""
    seg = _segmenter()
    if seg is None:
        return None
    with _LOCK:
        res = seg.process(np.ascontiguousarray(image))
    m = getattr(res, "segmentation_mask", None)
    return None if m is None else np.clip(np.asarray(m, np.float32), 0, 1)


def skin_likelihood(image: np.ndarray, skin_mask: np.ndarray, scale: float = 2.5) -> np.ndarray:
    """Soft skin map (H, W) in [0, 1] of a float RGB image in [0, 1]: how close each pixel's
    chroma (YCrCb) is to the face's own skin (``skin_mask``: the fitted mesh's skin pixels), as a
    Gaussian of the Mahalanobis distance with ``scale`` standard deviations of tolerance, gated by
    luminance (far darker or brighter pixels - dark hair, white background - are not skin)."""
    import cv2

    img = np.clip(image.astype(np.float32), 0, 1)
    if skin_mask.sum() < 30:
        return np.zeros(img.shape[:2], np.float32)
    ycc = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)
    samp = ycc[skin_mask]
    mu = samp[:, 1:].mean(0)
    cov = np.cov(samp[:, 1:].T) + np.eye(2) * 1e-5
    inv = np.linalg.inv(cov)
    d = ycc[..., 1:] - mu
    m2 = np.einsum("...i,ij,...j->...", d, inv, d)
    chroma = np.exp(-0.5 * m2 / scale ** 2)
    y_lo, y_hi = np.percentile(samp[:, 0], [5, 95])
    y = ycc[..., 0]
    # 1 inside [0.6 y_lo, 1.3 y_hi + 0.05], falling to 0 over 0.1 outside it
    lum = np.clip(1 - np.maximum(0.6 * y_lo - y, y - min(1.0, 1.3 * y_hi + 0.05)) / 0.1, 0, 1)
    out = (chroma * lum).astype(np.float32)
    return cv2.GaussianBlur(out, (0, 0), 1.5)
