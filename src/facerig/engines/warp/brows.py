"""Raised brows without the smear (warp engine, issue 10).

Raising a brow moves it up by 10-25 % of the eye distance while the upper lid stays: the mesh
between the brow's lower edge and the lid interpolates that motion, so the warp stretches the
shadowed skin under the brow (and the brow's lower rows) 2-3x vertically: thick, dark, streaky
brows. A real raise does not stretch the brow or the shadow of its ridge: they move up as they are
and the lighter lid skin under them unfolds.

:func:`unfold_raised_brows` rewrites the backward field's vertical component over each raised brow,
column by column (work pixels, ``source = target + field``), as a monotonic 1D map from a little
above the brow down to the lid: the brow (down to its detected lower edge) rises rigidly, the lid
and its lash band move as the mesh's lid, and the stretch the rise needs in between is shared
among the source rows by how stretchable each is (light, smooth skin most; the shadow, creases and
edges little), so the photo's dark tones keep their size and what grows is the skin that was light.
It is blended with the field it replaces above the brow and at the brow's two ends, and smoothed
across columns. Positions are the photo's detected brows and lids where the params carry
detections (the fitted mesh's brow vertices are often a few pixels off the real brow), the rise
the mesh's. (Folding the lid skin over the exposed rows instead - texture at its own scale -
repeated brow hairs and lashes as stripes on real faces; not used.)
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: brow upper edge outer -> inner, lower edge outer -> inner, upper lid outer -> inner (MediaPipe)
_BROWS = (
    ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55), (33, 246, 161, 160, 159, 158, 157, 173, 133)),
    ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285), (263, 466, 388, 387, 386, 385, 384, 398, 362)),
)


def _smooth(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _along(pts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y of the polyline ``pts`` (N, 2) at the columns ``x`` (clamped at its ends)."""
    o = np.argsort(pts[:, 0])
    return np.interp(x, pts[o, 0], pts[o, 1])


def _tri(t: np.ndarray, period_half: np.ndarray) -> np.ndarray:
    """Triangle wave 0 -> ``period_half`` -> 0 ... of ``t`` >= 0."""
    p = np.maximum(period_half, 1e-6)
    m = np.mod(t, 2 * p)
    return np.where(m <= p, m, 2 * p - m)


def _stretchable(g: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """How freely each source row may stretch (G, C) from the columns' lightness ``g`` (G, C) over
    their ``valid`` rows: light, smooth skin ~1; rows darker than the column's light skin (brow,
    its shadow, lashes) or on an edge ~0.12 (a gap that is all shadow still stretches, evenly);
    0 outside ``valid``."""
    srt = np.sort(np.where(valid, g, np.inf), axis=0)  # (nanpercentile per column: 80 % of the cost)
    m = np.maximum(valid.sum(0), 1) - 1

    def q(f: float) -> np.ndarray:
        return np.take_along_axis(srt, np.floor(f * m).astype(np.int64)[None, :], 0)[0]

    lo, hi = q(0.10), q(0.95)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 1.0)
    span = np.maximum(hi - lo, 1e-3)[None, :]
    light = np.clip((g - lo[None, :]) / span, 0.0, 1.0) ** 2
    edge = np.abs(np.gradient(g, axis=0)) / span
    return np.where(valid, 0.12 + light * np.clip(1.0 - 3.0 * edge, 0.0, 1.0), 0.0)


def _damp(fld: np.ndarray, sc: float, xa: float, xb: float, y_top: float, y_low: float, y_lid: float,
          rise: float) -> None:
    """Scale the vertical field round one brow by ``sc`` (< 1): full over the brow's columns
    ``xa .. xb`` from its lower edge ``y_low`` up, falling off smoothly over 3x the rise removed
    above the brow's top ``y_top`` and beyond its ends (the forehead's slope stays gentle: at most
    a 2x stretch, no fold) and below the lower edge down to the lid ``y_lid``, or over as many
    rows where the lid is nearer (ending at the lid, the nose bridge between the eyes was
    compressed ~2x where the mesh lifts it with the inner brows)."""
    h, w = fld.shape[:2]
    cut = (1.0 - sc) * rise
    f = max(3.0 * cut, 4.0)
    fx = max(f, 0.15 * (xb - xa))
    c0, c1 = max(0, int(np.floor(xa - fx))), min(w, int(np.ceil(xb + fx)) + 1)
    fl = max(y_lid - y_low, f)
    r0, r1 = max(0, int(np.floor(y_top - rise - f))), min(h, int(np.ceil(y_low + fl)) + 1)
    if c1 <= c0 or r1 <= r0:
        return
    xx = np.arange(c0, c1, dtype=np.float64) + 0.5
    yy = (np.arange(r0, r1, dtype=np.float64) + 0.5)[:, None]
    mx = _smooth(np.minimum(xx - (xa - fx), (xb + fx) - xx) / fx)[None, :]
    my = _smooth((yy - (y_top - rise - f)) / f) * (1.0 - _smooth((yy - y_low) / max(fl, 1.0)))
    fld[r0:r1, c0:c1, 1] *= (1.0 - (1.0 - sc) * mx * my).astype(fld.dtype)


def unfold_raised_brows(fld: np.ndarray, src: np.ndarray, tgt: np.ndarray, image: np.ndarray,
                        det: np.ndarray | None = None, min_rise: float = 1.5, top_blend: float = 0.35,
                        end_gap: float = 0.3, dark_stretch: float = 2.0, light_stretch: float = 4.5) -> int:
    """Rewrite ``fld[..., 1]`` (H, W, >= 2; backward, work pixels) in place over the raised brows.

    ``src`` / ``tgt``: the source / target vertices (V, >= 2) on the work grid (MediaPipe topology,
    >= 468); ``image`` (H, W, 3): the source on the work grid; ``det``: the photo's detected
    landmarks there (or None: ``src``). ``min_rise``: px below which a brow is left as it is;
    ``top_blend``: rows above the brow over which the new field blends in, x the brow's height;
    ``end_gap``: the share of the brow-lid gap above the lid that moves with the lid, unstretched
    (its lashes; stretched, a widened eye's painted white showed as a line above it);
    ``dark_stretch`` / ``light_stretch``: how far a dark (shadow, brow) / light skin row of the gap
    may be stretched at most; a rise that needs more is scaled down (:func:`_damp`).
    Returns the number of brows rewritten (0: nothing raised; lowering is left to the field)."""
    if src.shape[0] < 468 or tgt.shape[0] < 468:
        return 0
    h, w = fld.shape[:2]
    pos = det if det is not None and det.shape[0] >= 468 else src[:, :2]
    done = 0
    preps: list[tuple] = []  # per raised brow: its evidence, columns, rows, rise, stretchability
    for up_i, lo_i, lid_i in _BROWS:
        up, lo, lid = pos[list(up_i), :2], pos[list(lo_i), :2], pos[list(lid_i), :2]
        rise_v = src[list(up_i + lo_i), 1] - tgt[list(up_i + lo_i), 1]  # > 0: up
        lid_v = tgt[list(lid_i), 1] - src[list(lid_i), 1]
        xs_b = np.concatenate([up[:, 0], lo[:, 0]])
        if float(np.median(rise_v)) < min_rise:
            continue
        xa, xb = float(xs_b.min()), float(xs_b.max())
        c0, c1 = max(0, int(np.floor(xa))), min(w, int(np.ceil(xb)) + 1)
        if c1 - c0 < 3:
            continue
        x = np.arange(c0, c1, dtype=np.float64) + 0.5
        y_t = _along(up, x)
        y_b = np.maximum(_along(lo, x), y_t + 1.0)
        y_l = np.maximum(_along(lid, x), y_b + 2.0)
        o = np.argsort(xs_b)
        rise = np.maximum(np.interp(x, xs_b[o], rise_v[o]), 0.0)
        dl = np.interp(x, lid[np.argsort(lid[:, 0]), 0], lid_v[np.argsort(lid[:, 0])])
        hb = np.maximum(y_b - y_t, 1.0)
        # source rows mapped: from a little above the brow to the lid (which moves as the mesh's
        # lid: the eye's own motion); each stretched by 1 + lam * a(y), a its stretchability
        # (:func:`_stretchable`; 0 for the brow itself and for the lid's lash band)
        a_src = y_t - top_blend * hb - 2.0
        g_lo = int(np.floor(a_src.min()))
        g_hi = int(np.ceil(y_l.max())) + 2
        # the source's lightness around the brow (rows g_lo .. y_l + 2)
        g0, g1 = max(0, g_lo - 2), min(h, g_hi + 3)
        gray = np.zeros((h, w), np.float32)
        gray[g0:g1, c0:c1] = cv2.GaussianBlur(np.ascontiguousarray(image[g0:g1, c0:c1].mean(2), np.float32), (0, 0), 1.0)
        ys = (np.arange(g_lo, g_hi, dtype=np.float64) + 0.5)[:, None]  # (G, 1)
        yi = np.clip(np.floor(ys[:, 0]).astype(np.int64), 0, h - 1)
        g = gray[yi, c0:c1].astype(np.float64)
        inside = (ys >= a_src[None, :] - 0.5) & (ys <= y_l[None, :] + 0.5)
        a = _stretchable(g, inside)
        a[(ys < (y_b + 0.1 * hb)[None, :]) | (ys > (y_l - end_gap * (y_l - y_b))[None, :])] = 0.0
        # the photo's evidence: the gap may give (dark_stretch - 1) px per dark row and
        # (light_stretch - 1) per light one; a brow that must rise more (deep-set eyes, a narrow
        # gap in shadow, a small face) rises less, it and the skin round it (a smaller, clean raise
        # instead of the shadow smeared down to the lashes)
        room = np.where(a > 0, (dark_stretch - 1.0) + (light_stretch - dark_stretch) * np.clip(a - 0.12, 0.0, 1.0), 0.0).sum(0)
        mid = slice(len(x) // 5, max(len(x) // 5 + 1, len(x) - len(x) // 5))
        sc_own = float(np.clip(np.median((room[mid] - np.maximum(dl[mid], 0.0)) / np.maximum(rise[mid], 1e-6)), 0.0, 1.0))
        preps.append((sc_own, xa, xb, c0, c1, x, y_t, y_b, y_l, rise, dl, hb, a, inside, ys))
    # both brows rise by the same share of their own rise (one raised less than the other read
    # as a lopsided expression): the share the scarcer evidence allows
    sc_all = min((p[0] for p in preps), default=1.0)
    for sc_own, xa, xb, c0, c1, x, y_t, y_b, y_l, rise, dl, hb, a, inside, ys in preps:
        sc = sc_all
        log.debug("raised brow: rise %.1f px, kept %.2f of it (its own evidence: %.2f)", float(np.median(rise)), sc, sc_own)
        if sc < 0.999:
            _damp(fld, sc, xa, xb, float(y_t.min()), float(y_b.max()), float(y_l.max()), float(np.median(rise)))
            rise = rise * sc
            if float(np.median(rise)) < min_rise:
                done += 1
                continue
        t_top = y_t - rise - 2.0 * top_blend * (y_b - y_t) - 4.0   # target rows: the blend starts
        t_lid = y_l + dl                                      # target row of the lid
        r0 = max(0, int(np.floor(t_top.min())))
        r1 = min(h, int(np.ceil(t_lid.max())) + 1)
        if r1 - r0 < 3:
            continue
        ty = (np.arange(r0, r1, dtype=np.float64) + 0.5)[:, None]  # (R, 1) target rows
        old = fld[r0:r1, c0:c1, 1].astype(np.float64)
        extra = (t_lid + rise) - y_l                    # target length - source length
        tot = a.sum(0)
        even = (extra <= 0) | (tot < 1e-6)
        n_in = np.maximum(inside.sum(0), 1)
        lam_a = np.where(even[None, :], inside * (extra / n_in)[None, :], a * (extra / np.maximum(tot, 1e-6))[None, :])
        # target position of each source row: rigid (ys - rise) above the window, then the stretch
        T = ys - rise[None, :] + np.concatenate([np.zeros((1, c1 - c0)), np.cumsum(lam_a, 0)[:-1]], 0)
        s_new = np.empty((r1 - r0, c1 - c0))
        for k in range(c1 - c0):
            s_new[:, k] = np.interp(ty[:, 0], T[:, k], ys[:, 0], left=np.nan, right=np.nan)
        s_new = np.where(np.isfinite(s_new), s_new, ty + rise[None, :])
        # neighbouring columns' mappings agree (each column's own profile is noisy)
        s_new = ty + cv2.GaussianBlur(np.ascontiguousarray(s_new - ty), (0, 0), sigmaX=1.5, sigmaY=0.01)
        # weights: in from above the brow, out at the lid and at the brow's ends
        w_top = _smooth((ty - t_top) / np.maximum(top_blend * hb, 1.0))
        w_lid = np.where(ty <= t_lid[None, :], 1.0, 0.0)
        L = max(xb - xa, 1.0)
        w_x = _smooth(np.minimum(x - xa, xb - x) / (0.12 * L))[None, :]
        wgt = w_top * w_lid * w_x
        wgt *= _smooth((rise - min_rise) / max(min_rise, 1.0))[None, :]
        fld[r0:r1, c0:c1, 1] = (old * (1 - wgt) + (s_new - ty) * wgt).astype(fld.dtype)
        done += 1
    return done
