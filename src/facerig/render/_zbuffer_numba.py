"""numba z-buffer over the triangle table built by ``raster._triangle_setup`` (imported lazily).

Parallel over (batch item, row band): every pixel is written by one thread only, triangles are
visited in index order, so the result is deterministic and equal to the torch and reference passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def _band(tab, box, bi, r0, r1, width, face_index, zbuf):  # noqa: ANN001, ANN201
    """Rows [r0, r1) of batch item bi: clear, then draw every triangle in index order."""
    f = tab.shape[1]
    for i in range(r0, r1):
        for j in range(width):
            face_index[bi, i, j] = -1
            zbuf[bi, i, j] = -np.inf
    for t in range(f):
        lo = max(box[bi, t, 0], r0)
        hi = min(box[bi, t, 1], r1 - 1)
        if lo > hi:
            continue
        j0 = box[bi, t, 2]
        j1 = box[bi, t, 3]
        ox0 = tab[bi, t, 0]
        oy0 = tab[bi, t, 1]
        dx0 = tab[bi, t, 2]
        dy0 = tab[bi, t, 3]
        sg0 = tab[bi, t, 4]
        tl0 = tab[bi, t, 5] > 0
        ox1 = tab[bi, t, 6]
        oy1 = tab[bi, t, 7]
        dx1 = tab[bi, t, 8]
        dy1 = tab[bi, t, 9]
        sg1 = tab[bi, t, 10]
        tl1 = tab[bi, t, 11] > 0
        ox2 = tab[bi, t, 12]
        oy2 = tab[bi, t, 13]
        dx2 = tab[bi, t, 14]
        dy2 = tab[bi, t, 15]
        sg2 = tab[bi, t, 16]
        tl2 = tab[bi, t, 17] > 0
        a = tab[bi, t, 18]
        za = tab[bi, t, 19]
        zb = tab[bi, t, 20]
        zc = tab[bi, t, 21]
        for i in range(lo, hi + 1):
            py = i + 0.5
            for j in range(j0, j1 + 1):
                px = j + 0.5
                e0 = sg0 * (dx0 * (py - oy0) - dy0 * (px - ox0))
                if e0 < 0 or (e0 == 0 and not tl0):
                    continue
                e1 = sg1 * (dx1 * (py - oy1) - dy1 * (px - ox1))
                if e1 < 0 or (e1 == 0 and not tl1):
                    continue
                e2 = sg2 * (dx2 * (py - oy2) - dy2 * (px - ox2))
                if e2 < 0 or (e2 == 0 and not tl2):
                    continue
                z = np.float32((e0 / a) * za + (e1 / a) * zb + (e2 / a) * zc)
                cur = zbuf[bi, i, j]
                idx = face_index[bi, i, j]
                if idx < 0 or z > cur or (z == cur and t < idx):
                    zbuf[bi, i, j] = z
                    face_index[bi, i, j] = t


@njit(cache=True, parallel=True, nogil=True)
def zbuffer(tab, box, height, width, nbands, face_index, zbuf):  # noqa: ANN001, ANN201
    """Parallel over (batch item, row band)."""
    b = tab.shape[0]
    band = (height + nbands - 1) // nbands
    for item in prange(b * nbands):
        bi = item // nbands
        r0 = (item % nbands) * band
        r1 = min(height, r0 + band)
        if r0 < r1:
            _band(tab, box, bi, r0, r1, width, face_index, zbuf)


@njit(cache=True, nogil=True)
def zbuffer_serial(tab, box, height, width, face_index, zbuf):  # noqa: ANN001, ANN201
    """Single-threaded: no thread-pool hand-off (cheaper for small work next to torch's own pool)."""
    for bi in range(tab.shape[0]):
        _band(tab, box, bi, 0, height, width, face_index, zbuf)
