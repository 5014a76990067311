"""Dense-field helpers of the warp engine: push-pull extension, falloff weights, sampling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np


def push_pull(values: np.ndarray, weights: np.ndarray, min_side: int = 3) -> np.ndarray:
    """Fill a sparse field smoothly: ``values`` (H, W, C) known where ``weights`` (H, W) > 0.

    Pull: a Gaussian pyramid of ``values * weights`` and ``weights``; push: from the coarsest
    level down, every level keeps its own (normalised) estimate where it has data (weight ~1) and
    takes the upsampled coarser estimate elsewhere. The result is a smooth (membrane-like)
    extension that equals ``values`` where the weight is 1.
    """
    v = values.astype(np.float32, copy=False)
    if v.ndim == 2:
        v = v[:, :, None]
    c = v.shape[2]
    if c > 4:
        return np.concatenate([push_pull(v[:, :, i:i + 4], weights, min_side) for i in range(0, c, 4)], 2)
    w = np.clip(weights.astype(np.float32), 0, 1)
    levels = []
    vw: np.ndarray = v * w[:, :, None]
    while min(w.shape) > min_side:
        levels.append((vw, w))
        vw = np.asarray(cv2.pyrDown(vw))
        w = np.asarray(cv2.pyrDown(w))
        if vw.ndim == 2:
            vw = vw[:, :, None]
    est = vw / np.maximum(w, 1e-6)[:, :, None]
    if w.max() <= 1e-6:
        est[:] = 0
    for vw_l, w_l in reversed(levels):
        up = cv2.pyrUp(est, dstsize=(w_l.shape[1], w_l.shape[0]))
        if up.ndim == 2:
            up = up[:, :, None]
        a = np.clip(w_l * 2.0, 0, 1)[:, :, None]
        est = a * (vw_l / np.maximum(w_l, 1e-6)[:, :, None]) + (1 - a) * up
    return est if values.ndim == 3 else est[:, :, 0]


def cos_falloff(t: np.ndarray) -> np.ndarray:
    """1 at t <= 0, 0 at t >= 1, raised cosine (C1) in between."""
    return (0.5 * (1.0 + np.cos(np.pi * np.clip(t, 0.0, 1.0)))).astype(np.float32)


def border_taper(h: int, w: int, width: float) -> np.ndarray:
    """(h, w) weights: 0 on the border, 1 farther than ``width`` pixels inside (raised cosine)."""
    ys = np.arange(h, dtype=np.float32) + 0.5
    xs = np.arange(w, dtype=np.float32) + 0.5
    dy = np.minimum(ys, h - ys)
    dx = np.minimum(xs, w - xs)
    width = max(float(width), 1.0)
    ty = 1 - cos_falloff(dy / width)
    tx = 1 - cos_falloff(dx / width)
    return np.minimum(ty[:, None], tx[None, :])


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to ``mask`` (0 inside)."""
    inv = (~mask.astype(bool)).astype(np.uint8)
    return cv2.distanceTransform(inv, cv2.DIST_L2, 5)


def sample(image: np.ndarray, xy: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Sample ``image`` at continuous pixel coordinates ``xy`` (..., 2) (pixel centres at +0.5)."""
    shp = xy.shape[:-1]
    flat = xy.reshape(-1, 2).astype(np.float32) - 0.5
    mx = flat[:, 0].reshape(-1, 1)
    my = flat[:, 1].reshape(-1, 1)
    out = cv2.remap(image, mx, my, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(*shp, *image.shape[2:])


def resize(a: np.ndarray, hw: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    if a.shape[:2] == tuple(hw):
        return a
    if a.ndim == 3 and a.shape[2] > 4:
        return np.concatenate([resize(a[:, :, i:i + 4], hw, interpolation) for i in range(0, a.shape[2], 4)], 2)
    out = cv2.resize(a, (hw[1], hw[0]), interpolation=interpolation)
    if a.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def nearest_extend(values: np.ndarray, weights: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """Extend a field known on a thin set (``weights`` > 0.5) to the whole grid with the value of
    the nearest known pixel, then smooth it with a Gaussian of ``sigma`` pixels.

    Unlike :func:`push_pull` (a membrane, which averages over the whole known set and so decays
    away from a local peak), this carries each boundary point's value straight outwards: outside a
    face, the displacement of the chin continues under the chin, that of a temple into the hair.
    The Gaussian removes the creases where the nearest known point jumps (Voronoi edges).
    """
    from scipy import ndimage

    v = values.astype(np.float32, copy=False)
    squeeze = v.ndim == 2
    if squeeze:
        v = v[:, :, None]
    known = weights > 0.5
    out: np.ndarray
    if not known.any():
        out = np.zeros_like(v)
    else:
        iy, ix = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
        out = v[iy, ix]
        if sigma > 0:
            out = np.asarray(cv2.GaussianBlur(np.ascontiguousarray(out), (0, 0), sigma))
            if out.ndim == 2:
                out = out[:, :, None]
    return out[:, :, 0] if squeeze else out


_KERNELS = [True]  # whether the warp engine's numba kernels (_kernels.py) are used (use_kernels)


@contextmanager
def use_kernels(enabled: bool) -> Iterator[None]:
    """Within this block the warp engine's fast paths use their numba kernels (``enabled``) or their
    numpy references. The engine renders its first frame with the references: loading the kernels
    from numba's cache costs a few hundred ms once per process, more than they save on one frame
    (a single edit), less than they save on a reenactment's frames. Process-global (like
    ``engine._few_threads``); restored on exit."""
    old = _KERNELS[0]
    _KERNELS[0] = bool(enabled)
    try:
        yield
    finally:
        _KERNELS[0] = old


def kernels_enabled() -> bool:
    return _KERNELS[0]


def apply_gain(image: np.ndarray, gain: np.ndarray, white: float = 1.0) -> np.ndarray:
    """:func:`apply_gain_reference` (below, the definition), per pixel in one numba pass for
    float32 (H, W, C) images with (H, W, 1) float32 gains (``_kernels.gain_rolloff``: 0.5 ms on a
    413 px grid where the reference's boolean selection took 13 ms; equal to float32 rounding),
    unless :func:`use_kernels` turned the kernels off."""
    if (_KERNELS[0] and isinstance(image, np.ndarray) and isinstance(gain, np.ndarray) and image.dtype == np.float32
            and gain.dtype == np.float32 and image.ndim == 3 and gain.shape == (*image.shape[:2], 1)):
        from facerig.engines.warp._kernels import gain_rolloff

        n = image.shape[0] * image.shape[1]
        out = np.empty(image.shape, np.float32)
        gain_rolloff(np.ascontiguousarray(image).reshape(n, -1), np.ascontiguousarray(gain).reshape(n),
                     float(white), out.reshape(n, -1))
        return out
    return apply_gain_reference(image, gain, white)


def apply_gain_reference(image: np.ndarray, gain: np.ndarray, white: float = 1.0) -> np.ndarray:
    """``image * gain`` (gain (H, W, 1), one factor per pixel for all channels) with the brightening
    rolled off before ``white`` instead of clipped: where the gain lifts a pixel's largest channel
    from ``m`` towards or past ``white``, the lift ``m (g - 1)`` is mapped to
    ``(white - m) (1 - exp(-lift / (white - m)))`` (slope 1 at no lift, never past white), and
    all channels take the same factor, so hue and saturation are kept where a plain product would
    clip one channel first (a side light on skin: red clipped, the face turns flat and pale).
    Pixels the gain does not lift are exactly ``image * gain``."""
    img = image.astype(np.float32, copy=False)
    out = img * gain
    up = gain[..., 0] > 1.0
    if not up.any():
        return out
    px = img[up]                                   # (N, C): only the lifted pixels
    g = gain[up]                                   # (N, 1)
    m = px.max(axis=1, keepdims=True)
    lift = m * (g - 1.0)
    room = np.maximum(white - m, 1e-6)
    m_new = m + room * (1.0 - np.exp(-lift / room))
    res = px * g * (m_new / np.maximum(m * g, 1e-12))
    out[up] = np.minimum(res, white)  # (float rounding at the white level)
    return out
