"""Filling what an edit reveals (the cheek a turn brings into view), and measuring where the fill's
colours come from.

The warp engine fills target pixels whose source point the photo does not show from the face's own
visible side (the mirrored surface point, shading divided out and the target's put in), then blends
the fill into the warp seamlessly (:func:`seamless_offset`: a membrane correction, i.e. Poisson
cloning with the fill's own gradients). :func:`tearing_fraction` says how much of the revealed
region took its colour from outside the source face (background, hair): a torn look.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from facerig.engines.warp.field import push_pull


def source_face_mask(face_index: np.ndarray, skin: np.ndarray | None, face_px: float) -> np.ndarray:
    """(H, W) bool: the source face - pixels the fitted mesh covers that are skin (skin likelihood
    > 0.2) or lie well inside the mesh (beard, brows, glasses there are still the face), not the
    background or hair the mesh overlaps next to its outline."""
    cov = face_index >= 0
    if skin is None:
        return cov
    n = max(1, int(round(0.06 * face_px)))
    deep = cv2.erode(cov.astype(np.uint8), np.ones((2 * n + 1, 2 * n + 1), np.uint8)) > 0
    return cov & ((skin > 0.2) | deep)


def colour_sources(revealed: np.ndarray, fill_src: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """(H, W, 2) work-grid position each pixel's colour comes from: ``fill_src`` where the fill set
    it (finite), the warp's own source (pixel + ``disp``) elsewhere; a revealed pixel without a
    source (inpainted) takes that of the nearest pixel that has one (an inpaint spreads the colours
    around the hole into it)."""
    h, w = revealed.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    pos = np.stack([xs + 0.5 + disp[..., 0], ys + 0.5 + disp[..., 1]], 2).astype(np.float32)
    have = np.isfinite(fill_src[..., 0])
    pos[have] = fill_src[have]
    none = revealed & ~have
    if none.any() and (~none).any():
        _, lab = cv2.distanceTransformWithLabels(none.astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        zy, zx = np.nonzero(~none)
        near = np.zeros((int(lab.max()) + 1, 2), np.float32)
        near[lab[zy, zx]] = pos[zy, zx]
        ny, nx = np.nonzero(none)
        pos[ny, nx] = near[lab[ny, nx]]
    return pos


def tearing_fraction(layers: dict[str, Any]) -> float:
    """Fraction of the revealed pixels (hidden in the photo and filled) whose colour source lies
    outside the source face (``layers['source_face']``); 0 when nothing was revealed. ``layers`` is
    the warp engine's ``last_layers`` after ``render_frame(..., return_layers=True)``."""
    rev = layers["revealed"]
    if not rev.any():
        return 0.0
    face = layers["source_face"]
    h, w = face.shape
    pos = layers["colour_source"][rev]
    px = np.clip(np.floor(pos).astype(np.int64), 0, [w - 1, h - 1])
    return float(1.0 - face[px[:, 1], px[:, 0]].mean())


def seamless_offset(fill: np.ndarray, warped: np.ndarray, region: np.ndarray, anchor: np.ndarray,
                    max_step: float = 0.25) -> np.ndarray:
    """The fill inside ``region`` corrected so it meets the warp around it without a seam: the
    colour difference between the warp just outside the region (on ``anchor`` pixels only: the
    visible face, never background) and the fill at the region's edge, extended smoothly over the
    region (membrane, :func:`push_pull`) and added to the fill. This is Poisson cloning of the
    fill's gradients into the warp with the membrane solved by push-pull: a mirrored cheek keeps
    its texture while its brightness and tint follow the skin it joins. The correction is clamped
    to ``max_step`` per channel. Returns the corrected fill; outside ``region`` it is unchanged."""
    if not region.any():
        return fill
    k = np.ones((3, 3), np.uint8)
    ys, xs = np.nonzero(region)
    pad = 4
    h, w = region.shape
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    reg = region[y0:y1, x0:x1].astype(np.uint8)
    outer = (cv2.dilate(reg, k, iterations=2) > 0) & (reg == 0) & anchor[y0:y1, x0:x1]
    edge = (reg > 0) & (cv2.erode(reg, k, iterations=2) == 0)
    if not outer.any() or not edge.any():
        return fill
    wv = warped[y0:y1, x0:x1].astype(np.float32)
    w_out = push_pull(wv * outer[..., None], outer.astype(np.float32))
    # only edge pixels next to an anchored outside pixel set the correction
    near = (cv2.dilate(outer.astype(np.uint8), k, iterations=3) > 0) & edge
    if not near.any():
        return fill
    f = fill[y0:y1, x0:x1]
    diff = np.zeros_like(wv)
    diff[near] = np.clip(w_out[near] - f[near], -max_step, max_step)
    corr = push_pull(diff, near.astype(np.float32))
    out = fill.copy()
    r = reg > 0
    sub = out[y0:y1, x0:x1]
    sub[r] = sub[r] + corr[r]
    return out


def texture_fill(warped: np.ndarray, region: np.ndarray, anchor: np.ndarray, centre: np.ndarray, sigma: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fill for ``region`` (the revealed strip of a turned cheek) made of the visible face around
    it, in two bands: the low frequencies are a membrane (:func:`push_pull`) of the warp's colours
    on the ``anchor`` pixels (the visible face) next to the region, the high frequencies (the warp
    less its Gaussian blur of ``sigma`` px: pores, stubble, beard hair) are those of the visible
    face one strip-width further in, towards ``centre`` (x, y: the face's centre), copied with one
    constant offset per connected part of the region: texture at its own scale, neither stretched
    nor repeated row by row. A per-pixel mirror of the other cheek jumps from row to row where it
    meets that cheek's silhouette and drew bands across a beard. Returns ``(ys, xs, colours)``: the
    region's pixels that got a colour (none where no visible face borders the region) and their
    colours (N, 3)."""
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32))
    bx, by, bw, bh = cv2.boundingRect(region.astype(np.uint8))
    if bw == 0:
        return none
    # (everything on the region's box, grown by the reach of the offsets and the blur)
    H, W = region.shape
    inner = cv2.distanceTransform(np.pad(region[by:by + bh, bx:bx + bw], 1).astype(np.uint8), cv2.DIST_L2, 3)
    reach = int(2.0 * float(inner.max()) + 4 * max(float(sigma), 0.5) + 8)
    cy0, cy1, cx0, cx1 = max(0, by - reach), min(H, by + bh + reach), max(0, bx - reach), min(W, bx + bw + reach)
    reg = region[cy0:cy1, cx0:cx1]
    anc = anchor[cy0:cy1, cx0:cx1]
    wp = np.ascontiguousarray(warped[cy0:cy1, cx0:cx1])
    h, w = reg.shape
    reg8 = reg.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    outer = (cv2.dilate(reg8, k, iterations=2) > 0) & ~reg & anc
    if not outer.any():
        return none
    base = push_pull(wp * outer[..., None], outer.astype(np.float32))
    hp = wp - cv2.GaussianBlur(wp, (0, 0), max(float(sigma), 0.5))
    n, lab = cv2.connectedComponents(reg8, connectivity=8)
    dist = cv2.distanceTransform(reg8, cv2.DIST_L2, 3)
    ys, xs = np.nonzero(reg8)
    col = base[ys, xs]
    comp = lab[ys, xs]
    cen = np.asarray(centre, np.float64) - (cx0, cy0)
    for c in range(1, n):
        sel = comp == c
        d = cen - np.array([xs[sel].mean(), ys[sel].mean()])
        nd = float(np.hypot(*d))
        if nd < 1e-6:
            continue
        t = d / nd * (2.0 * float(dist[ys[sel], xs[sel]].max()) + 2.0)
        sx = np.clip(np.rint(xs[sel] + t[0]).astype(np.int64), 0, w - 1)
        sy = np.clip(np.rint(ys[sel] + t[1]).astype(np.int64), 0, h - 1)
        good = anc[sy, sx]
        idx = np.nonzero(sel)[0]
        col[idx[good]] += hp[sy[good], sx[good]]
    return ys + cy0, xs + cx0, col
