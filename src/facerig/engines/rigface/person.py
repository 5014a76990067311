"""The person region RigFace paints grey in its background condition.

RigFace's release parses the aligned 512 crop with a 19-class face-parsing BiSeNet and counts every
non-background class (skin, brows, eyes, glasses, ears, earrings, nose, mouth, lips, neck, necklace,
cloth, hair, hat) as the person; those pixels are painted grey 127 (``np.full_like(uint8, 127.5)``
truncates to 127). facerig does not ship that network. :func:`person_mask` gets the same region from

* MediaPipe's selfie (person) segmentation, whose model ships inside the mediapipe wheel (no
  download): hair, hats, neck, clothes, shoulders; thresholded at 0.5;
* united with the face itself: the convex hull of the face's landmarks (given, or detected with
  facerig's MediaPipe face mesh), because a segmenter can miss pale foreheads or faces against a
  background of the same colour; the region right under the chin (neck), which thin
  segmentations cut; and, of a band outside each jaw from the ear down past the jaw angle
  (:func:`earring_zone`: ear lobes and earrings, which the segmenter often drops), the pixels that
  do not look like the background around the band;
* cleaned: holes inside the person (glasses lenses, an open mouth against a similar background)
  are filled, specks far from the person are dropped, and the boundary is dilated by ``grow``
  (default 1% of the image side) so no fringe of hair or skin is left outside the grey region (the
  released masks come from a 512 parser, whose boundary is not pixel exact either).

:func:`paint_background` paints a mask grey 127 (uint8 image) or 127/127.5 - 1 (float [-1, 1] tensor).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch

from facerig.errors import InvalidInput, NoFaceFound
from facerig.types import FaceLandmarks

log = logging.getLogger(__name__)

__all__ = ["GREY", "earring_zone", "face_hull_mask", "paint_background", "person_mask", "segment_person_soft"]

#: the grey of the released backgrounds (uint8)
GREY = 127


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise InvalidInput(name, "an RGB uint8 image (H, W, 3)", f"{a.dtype} {a.shape}")
    if min(a.shape[:2]) < 8:
        raise InvalidInput(name, "an image of at least 8x8 pixels", a.shape[:2])
    return np.ascontiguousarray(a)


def segment_person_soft(image: np.ndarray) -> np.ndarray | None:
    """MediaPipe's selfie segmentation (H, W) float32 in [0, 1] of an RGB uint8 image, or None
    when the segmenter cannot run (it ships with the mediapipe wheel; logged)."""
    from facerig.engines.warp.segment import segment_person

    return segment_person(_check_image(image))


def _points_of(face: Any, hw: tuple[int, int]) -> np.ndarray:
    if isinstance(face, FaceLandmarks):
        pts = np.asarray(face.points, np.float64)[:, :2]
    else:
        pts = np.asarray(face, np.float64)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3) or len(pts) < 3:
            raise InvalidInput("face", "FaceLandmarks or (N, 2) landmark points in image pixels", pts.shape)
        pts = pts[:, :2]
    if not np.isfinite(pts).all():
        raise InvalidInput("face", "finite landmark coordinates", "NaN/inf")
    return pts


def face_hull_mask(points: np.ndarray, hw: tuple[int, int], neck: float = 0.35) -> np.ndarray:
    """bool (H, W): the convex hull of the face's landmark points, extended below the chin by
    ``neck`` times the face height (the neck, narrower than the face) so the chin-neck junction is
    always part of the person."""
    import cv2

    h, w = hw
    pts = np.asarray(points, np.float64)[:, :2]
    out = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(np.round(pts - 0.5).astype(np.int32))
    cv2.fillConvexPoly(out, hull, 1)
    lo, hi = pts.min(0), pts.max(0)
    fh, fw = hi[1] - lo[1], hi[0] - lo[0]
    if neck > 0 and fh > 0:
        cx = 0.5 * (lo[0] + hi[0])
        # a trapezoid from the lower face (60% of its width) down to the neck (45%)
        y0, y1 = lo[1] + 0.75 * fh, hi[1] + neck * fh
        quad = np.array([[cx - 0.30 * fw, y0], [cx + 0.30 * fw, y0], [cx + 0.225 * fw, y1],
                         [cx - 0.225 * fw, y1]])
        cv2.fillConvexPoly(out, np.round(quad - 0.5).astype(np.int32), 1)
    return out.astype(bool)


#: MediaPipe ids per image side: (cheek at the tragus, jaw angle)
_EAR_JAW = ((234, 172), (454, 397))


def earring_zone(points: np.ndarray, hw: tuple[int, int], out: float = 0.12, down: float = 0.15) -> np.ndarray:
    """bool (H, W): the band outside each jaw from the ear down past the jaw angle, where ear lobes
    and earrings hang (the release's parser counts ears and earrings as the person; the selfie
    segmenter and the face hull often leave them out). ``out`` / ``down``: the band's extent in face
    widths / heights. Needs MediaPipe's 478 (or 468) points; empty for other point sets."""
    import cv2

    h, w = hw
    pts = np.asarray(points, np.float64)[:, :2]
    zone = np.zeros((h, w), np.uint8)
    if pts.shape[0] not in (468, 478):
        return zone.astype(bool)
    lo, hi = pts[:468].min(0), pts[:468].max(0)
    fw, fh = hi[0] - lo[0], hi[1] - lo[1]
    cx = 0.5 * (lo[0] + hi[0])
    for ear, jaw in _EAR_JAW:
        top, bot = pts[ear], pts[jaw]
        sgn = 1.0 if top[0] > cx else -1.0
        o = np.array([sgn * out * fw, 0.0])
        d = np.array([0.0, down * fh])
        quad = np.array([top, top + o, bot + o + d, bot + d, bot])
        cv2.fillPoly(zone, [np.round(quad - 0.5).astype(np.int32)], 1)
    return zone.astype(bool)


def _looks_like_background(img: np.ndarray, band: np.ndarray, person: np.ndarray, pts: np.ndarray,
                           tol: float = 3.0) -> np.ndarray:
    """bool (H, W): pixels of ``band`` whose Lab colour is within ``tol`` standard deviations
    (Mahalanobis) of the background seen just outside the person around the band."""
    import cv2

    fw = float(np.ptp(np.asarray(pts)[:, 0]))
    r = max(2, round(0.1 * fw))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    ring = cv2.dilate(band.astype(np.uint8), k).astype(bool) & ~person & ~band
    if ring.sum() < 20:
        return np.zeros_like(band)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float64)
    samp = lab[ring]
    mu = samp.mean(0)
    cov = np.cov(samp.T) + np.eye(3) * 4.0  # a floor: flat walls have almost no variance
    inv = np.linalg.inv(cov)
    d = lab[band] - mu
    out = np.zeros_like(band)
    out[band] = np.einsum("ni,ij,nj->n", d, inv, d) < tol * tol
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    h, w = m.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = m
    flood = pad.copy()
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 1)  # background reachable from the border
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def _keep_person_components(mask: np.ndarray, anchor: np.ndarray | None, min_frac: float = 0.02) -> np.ndarray:
    """Drop connected components that are small (< ``min_frac`` of the largest) and do not touch
    ``anchor`` (the face)."""
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = areas >= min_frac * areas.max()
    if anchor is not None:
        touched = np.unique(lab[anchor & mask])
        for t in touched:
            if t > 0:
                keep[t - 1] = True
    return keep[lab - 1] & (lab > 0)


_DETECTOR: Any = None
_DETECTOR_LOCK = threading.Lock()


def _detect_points(img: np.ndarray) -> np.ndarray:
    """The largest face's landmarks (N, 2) with one shared facerig FaceDetector (made on first use,
    used under a lock); raises NoFaceFound."""
    global _DETECTOR
    with _DETECTOR_LOCK:
        if _DETECTOR is None:
            from facerig.detect import FaceDetector

            _DETECTOR = FaceDetector()
        return np.asarray(_DETECTOR.detect_one(img).points, np.float64)[:, :2]


def person_mask(image: Any, *, face: Any = None, detect: bool = True, threshold: float = 0.5,
                grow: float | None = None, soft: np.ndarray | None = None) -> np.ndarray:
    """bool (H, W): the person (face, hair, hat, neck, clothes) of an RGB uint8 image.

    ``face``: the face's landmarks in this image (:class:`~facerig.types.FaceLandmarks` or an (N, 2)
    array, e.g. MediaPipe's 478 points or the fitted model's projected landmarks); when None and
    ``detect``, facerig's MediaPipe face mesh finds the largest face (none found: the segmentation
    alone). ``threshold``: on the segmenter's confidence. ``grow``: dilation radius in pixels
    (default 1% of the image side). ``soft``: a precomputed (H, W) segmentation in [0, 1] to use
    instead of running the segmenter (tests, or a caller that already has it).
    """
    import cv2

    img = _check_image(image)
    h, w = img.shape[:2]
    if not 0.0 < float(threshold) < 1.0:
        raise InvalidInput("threshold", "a confidence threshold in (0, 1)", threshold)
    if soft is None:
        soft = segment_person_soft(img)
        if soft is None:
            log.warning("person segmentation unavailable: the person region is the face hull only")
    else:
        soft = np.asarray(soft, np.float32)
        if soft.shape != (h, w):
            raise InvalidInput("soft", f"a ({h}, {w}) segmentation", soft.shape)
    mask = np.zeros((h, w), bool) if soft is None else soft >= float(threshold)

    pts = None
    if face is not None:
        pts = _points_of(face, (h, w))
    elif detect:
        try:
            pts = _detect_points(img)
        except NoFaceFound:
            log.info("person_mask: no face detected; using the segmentation alone")
    hull = None
    if pts is not None:
        hull = face_hull_mask(pts, (h, w))
        mask |= hull
        # ears and earrings beside the jaw: the segmenter often drops them (measured: 0.0 on a drop
        # earring against a white wall); of the band, only what does not look like the background
        # around it joins
        band = earring_zone(pts, (h, w)) & ~mask
        if band.any():
            ear = band & ~_looks_like_background(img, band, mask, pts)
            mask |= ear
            hull = hull | ear  # an earring apart from the face is still the subject's
    if not mask.any():
        return mask
    mask = _keep_person_components(mask, hull)
    mask = _fill_holes(mask)
    r = max(1, round((0.01 * max(h, w)) if grow is None else float(grow)))
    if grow is None or float(grow) > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    return mask


def paint_background(image: Any, mask: Any) -> Any:
    """A copy of ``image`` with ``mask`` painted grey: uint8 (H, W, 3) -> 127 inside the mask;
    a float tensor (B, 3, H, W) in [-1, 1] -> 127 / 127.5 - 1 inside (the same grey after the
    usual uint8 -> [-1, 1] mapping). Pixels outside the mask are untouched."""
    if isinstance(image, torch.Tensor):
        x = image
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidInput("image", "a (B, 3, H, W) tensor in [-1, 1] or an RGB uint8 array", tuple(x.shape))
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(x.device)
        m = m.bool()
        while m.ndim < 4:
            m = m[None]
        if m.shape[-2:] != x.shape[-2:]:
            raise InvalidInput("mask", f"a mask of size {tuple(x.shape[-2:])}", tuple(m.shape))
        grey = torch.tensor(GREY / 127.5 - 1.0, dtype=x.dtype, device=x.device)
        return torch.where(m.expand_as(x), grey, x)
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInput("image", "an RGB uint8 image (H, W, 3) or a (B, 3, H, W) tensor", f"{img.dtype} {img.shape}")
    mk = np.asarray(mask)
    if mk.ndim == 3 and mk.shape[2] == 1:
        mk = mk[..., 0]
    if mk.shape != img.shape[:2]:
        raise InvalidInput("mask", f"a ({img.shape[0]}, {img.shape[1]}) mask", mk.shape)
    out = img.copy()
    out[mk.astype(bool)] = GREY
    return out
