"""numba kernels of the warp engine's per-frame hot spots (imported lazily; each keeps its slow
numpy reference beside its caller, and tests/engines/test_warp_speed_paths.py checks that the two
agree).

* :func:`gain_rolloff`: :func:`facerig.engines.warp.field.apply_gain` per pixel (the reference
  selects the lifted pixels with boolean indexing: 13 ms on a 413 px work grid, this 0.5 ms).

(A fused numba pass for the full-resolution compose - layers upsampled, photo looked up, multiply-
add, rounding - was tried and dropped: its scalar gathers took 14-30 ms a megapixel where cv2's
SIMD warps, remap and multiply take 8-10 ms together.)
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gain_rolloff(img, gain, white, out):  # noqa: ANN001, ANN201
    """:func:`facerig.engines.warp.field.apply_gain` on (N, C) float32 pixels and (N,) gains into
    ``out`` (N, C) float32: the plain product where the gain does not lift, else the lift of the
    largest channel rolled off below ``white``, one factor for all channels."""
    n, nc = img.shape
    wf = np.float32(white)
    for i in range(n):
        g = gain[i]
        if not g > np.float32(1.0):
            for k in range(nc):
                out[i, k] = img[i, k] * g
            continue
        m = img[i, 0]
        for k in range(1, nc):
            if img[i, k] > m:
                m = img[i, k]
        lift = m * (g - np.float32(1.0))
        room = max(wf - m, np.float32(1e-6))
        m_new = m + room * (np.float32(1.0) - np.exp(-lift / room))
        s = m_new / max(m * g, np.float32(1e-12))
        for k in range(nc):
            v = img[i, k] * g * s
            out[i, k] = v if v < wf else wf


@njit(cache=True, nogil=True)
def barycentrics(xy, faces, f, iy, ix, out):  # noqa: ANN001, ANN201
    """Screen-space barycentrics (N, 3) float64 into ``out`` of the pixel centres (ix + 0.5,
    iy + 0.5) in triangles ``f`` (N,) of ``faces`` (F, 3) over vertices ``xy`` (V, 2) float64
    (already rounded to float32, as the rasteriser sees them): the formula of
    ``WarpEngine._barycentrics_reference``, term for term (bit-identical)."""
    for n in range(f.shape[0]):
        t = f[n]
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        x0, y0 = xy[a, 0], xy[a, 1]
        x1, y1 = xy[b, 0], xy[b, 1]
        x2, y2 = xy[c, 0], xy[c, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0:
            area = 1e-30
        px = ix[n] + 0.5
        py = iy[n] + 0.5
        w1 = ((y2 - y0) * (px - x0) - (x2 - x0) * (py - y0)) / area
        w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
        out[n, 0] = 1 - w1 - w2
        out[n, 1] = w1
        out[n, 2] = w2


@njit(cache=True, nogil=True)
def interpolate(b, tri, table, out):  # noqa: ANN001, ANN201
    """``out[n] = sum_k b[n, k] * table[tri[n, k]]`` ((N, 3) weights, (N, 3) vertex indices, (V, C)
    table, float64): ``np.einsum("nk,nkc->nc", b, table[tri])`` for several per-vertex attributes at
    once, without the (N, 3, C) gather."""
    nc = table.shape[1]
    for n in range(b.shape[0]):
        t0, t1, t2 = tri[n, 0], tri[n, 1], tri[n, 2]
        b0, b1, b2 = b[n, 0], b[n, 1], b[n, 2]
        for c in range(nc):
            out[n, c] = b0 * table[t0, c] + b1 * table[t1, c] + b2 * table[t2, c]


@njit(cache=True, nogil=True)
def gain_layers(res, base, gain, alpha, filled, fld, kd, lay_m, lay_y, reach):  # noqa: ANN001, ANN201
    """The reduced-grid compose's work-grid layers in one pass (``engine._gain_layers_reference``,
    operation for operation, so bit-identical): ``lay_m`` (h, w, 4) = the applied gain
    ``res / max(base, 4)`` (the plain ``gain`` where ``base <= 4``) times ``1 - alpha`` when
    ``filled``, and ``fld[..., 0] * kd``; ``lay_y`` = ``fld[..., 1] * kd``; ``reach`` (uint8) where
    the displacement, gain or fill is not neutral."""
    h, w = res.shape[0], res.shape[1]
    four = np.float32(4.0)
    one = np.float32(1.0)
    for y in range(h):
        for x in range(w):
            g = gain[y, x, 0]
            a = alpha[y, x]
            for k in range(3):
                bv = base[y, x, k]
                m = g if bv <= four else res[y, x, k] / max(bv, four)
                if filled:
                    m = m * (one - a)
                lay_m[y, x, k] = m
            f0 = fld[y, x, 0]
            f1 = fld[y, x, 1]
            lay_m[y, x, 3] = f0 * kd
            lay_y[y, x] = f1 * kd
            reach[y, x] = 1 if (f0 != 0 or f1 != 0 or fld[y, x, 2] != 0 or a > 0) else 0


@njit(cache=True, nogil=True)
def mesh_blend(fld, D, inner, cin, y0, y1, x0, x1):  # noqa: ANN001, ANN201
    """In place over rows y0:y1, columns x0:x1: ``fld[..., :2] = inner * D[..., :2] + (1 - inner) *
    fld[..., :2]`` and ``fld[..., 2] = cin * D[..., 2] + (1 - cin) * fld[..., 2]`` (float32, the
    numpy expressions' operations in their order: bit-identical)."""
    one = np.float32(1.0)
    for y in range(y0, y1):
        for x in range(x0, x1):
            a = inner[y, x]
            c = cin[y, x]
            fld[y, x, 0] = a * D[y, x, 0] + (one - a) * fld[y, x, 0]
            fld[y, x, 1] = a * D[y, x, 1] + (one - a) * fld[y, x, 1]
            fld[y, x, 2] = c * D[y, x, 2] + (one - c) * fld[y, x, 2]
