"""Glasses on the source photo, from image evidence only (no learned weights): a frame is a long,
coherent, roughly horizontal edge across the nose bridge between the eyes and along the lower rims
under them, where a bare face is smooth. Where glasses are found, the warp engine moves the frame
rigidly with the head pose (not with brows, lids or cheeks) and keeps it on top of its eye fills.

The detector works on MediaPipe's 478 landmarks (``params.meta['landmarks_px']`` on the work grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facerig.detect.landmark_sets import FACE_OVAL

#: MediaPipe vertices: eye corners (subject's right outer/inner, left inner/outer), nasion and
#: nose bridge, lower lids, brows
_R_OUT, _R_IN, _L_IN, _L_OUT = 33, 133, 362, 263
_NASION, _BRIDGE = 168, 6
_R_LOW, _L_LOW = 145, 374
_R_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
_L_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
_R_BROW_UP, _R_BROW_LO = (70, 63, 105, 66, 107), (46, 53, 52, 65, 55)
_L_BROW_UP, _L_BROW_LO = (300, 293, 334, 296, 336), (276, 283, 282, 295, 285)
_R_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_L_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)

#: score above which a face may wear glasses (then the frame mask must also cross the bridge). Measured
#: 2026-12-02 on 105 shared portraits with a detected face (single-person photos of portraits/*): the
#: 3 with clear glasses scored 2.3-3.6 and were found; of the rest (checked by eye on thumbnails) 6 scored
#: 1.8-2.4 and none passed the bridge test; sunglasses on a 41 px face (human/person-vlado5) were missed
THRESHOLD = 1.8


@dataclass
class Glasses:
    score: float           # detection score (>= THRESHOLD: glasses)
    present: bool
    frame: np.ndarray      # (H, W) float32 soft mask of the frame pixels (zeros when absent)
    anchor_ids: tuple[int, ...]  # vertices that carry the frame (rigid fit)
    box: tuple[int, int, int, int] | None = None  # (set by the engine) y0, y1, x0, x1 the frame can reach


def _row_peak(gy: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> tuple[float, float]:
    """The strongest row of mean |d/dy| in a box, and the box's median row (robust background)."""
    h, w = gy.shape
    xa, xb = int(np.clip(round(x0), 0, w - 1)), int(np.clip(round(x1), 1, w))
    ya, yb = int(np.clip(round(y0), 0, h - 1)), int(np.clip(round(y1), 1, h))
    if xb - xa < 2 or yb - ya < 3:
        return 0.0, 1.0
    rows = gy[ya:yb, xa:xb].mean(1)
    return float(rows.max()), float(np.median(rows))


def glasses_score(image: np.ndarray, pts: np.ndarray) -> float:
    """How strongly the photo shows a glasses frame: the peak row-mean of the vertical luminance
    gradient across the nose bridge and under each eye (a frame's rims are edges spanning the whole
    width there), relative to the face's own gradient texture on the cheeks. ``image``: float RGB
    in [0, 1]; ``pts``: (>= 468, 2) landmarks in the image's pixels. A bare face scores about
    at most 2.4 on shared portraits without glasses, 2.3-3.6 with, thick drawn frames about 5."""
    g = image.mean(2).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    if iod < 8:
        return 0.0
    g = cv2.GaussianBlur(g, (0, 0), max(0.6, 0.006 * iod))
    gy = np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    gx = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3))
    # the face's own texture level: the mean gradient on the cheeks (below the lower rims' reach)
    tex = []
    for low, side in ((_R_LOW, _R_OUT), (_L_LOW, _L_OUT)):
        c = (pts[low] + pts[side]) / 2 + np.array([0.0, 0.55 * iod])
        r = 0.08 * iod
        h, w = g.shape
        ya, yb = int(max(0, c[1] - r)), int(min(h, c[1] + r))
        xa, xb = int(max(0, c[0] - r)), int(min(w, c[0] + r))
        if yb > ya and xb > xa:
            tex.append(float((gx[ya:yb, xa:xb] + gy[ya:yb, xa:xb]).mean()))
    ref = max(np.median(tex) if tex else 0.0, 0.004)
    # nose bridge: between the inner corners, from above the nasion to below the lids' level
    cx = float((pts[_R_IN, 0] + pts[_L_IN, 0]) / 2)
    yn = float(pts[_NASION, 1])
    yb_ = float(max(pts[_R_IN, 1], pts[_L_IN, 1]))
    half = 0.07 * iod
    bridge, _ = _row_peak(gy, cx - half, cx + half, yn - 0.12 * iod, yb_ + 0.08 * iod)
    # lower rims: from just under the lower lid to well down the cheek, across the eye's width
    rims = []
    for a, b_, low in ((_R_OUT, _R_IN, _R_LOW), (_L_IN, _L_OUT, _L_LOW)):
        x0, x1 = sorted((float(pts[a, 0]), float(pts[b_, 0])))
        y = float(pts[low, 1])
        pk, _ = _row_peak(gy, x0, x1, y + 0.06 * iod, y + 0.45 * iod)
        rims.append(pk)
    # a frame needs both: the bridge and (at least one) lower rim
    return float(min(bridge, max(rims)) / ref)


def _poly(pts: np.ndarray, ids: tuple[int, ...], hw: tuple[int, int]) -> np.ndarray:
    m = np.zeros(hw, np.uint8)
    cv2.fillPoly(m, [np.round(pts[list(ids)] * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    return m


def frame_mask(image: np.ndarray, pts: np.ndarray, rims: bool = True) -> np.ndarray:
    """(H, W) float32 soft mask of the frame's pixels: inside the glasses' reach around the eyes
    (the eye corners widened by 0.3 IOD, from the brows to 0.5 IOD below the eyes), the pixels
    much darker or much more contrasted than the skin around them, minus the eye openings and
    the brows (which must stay free to move). With ``rims``, also each rim traced as a closed loop
    of thin dark ridges round its eye (``_rim_loops``: a thin frame, 1-3 px, is too faint for the
    darkness/contrast test except where it is darkest), and the mask is trimmed to the frame's own
    pixels (dark, on a ridge or on a rim) and their neighbours. ``rims=False``: the
    darkness/contrast parts alone, untrimmed (what the detection's bridge test looks at)."""
    h, w = image.shape[:2]
    g = image.mean(2).astype(np.float32)
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    x0 = min(pts[_R_OUT, 0], pts[_L_OUT, 0]) - 0.3 * iod
    x1 = max(pts[_R_OUT, 0], pts[_L_OUT, 0]) + 0.3 * iod
    brow_y = float(min(pts[list(_R_BROW), 1].min(), pts[list(_L_BROW), 1].min()))
    y0 = brow_y - 0.05 * iod
    y1 = float(max(pts[_R_LOW, 1], pts[_L_LOW, 1])) + 0.5 * iod
    xa, xb = int(max(0, x0)), int(min(w, x1 + 1))
    ya, yb = int(max(0, y0)), int(min(h, y1 + 1))
    out = np.zeros((h, w), np.float32)
    if xb - xa < 4 or yb - ya < 4:
        return out
    sub = g[ya:yb, xa:xb]
    s = max(1.0, 0.08 * iod)
    local = cv2.GaussianBlur(sub, (0, 0), s)
    gm = cv2.GaussianBlur(np.abs(cv2.Laplacian(cv2.GaussianBlur(sub, (0, 0), max(0.6, 0.006 * iod)), cv2.CV_32F)),
                          (0, 0), max(0.6, 0.008 * iod))
    dark = np.clip((local - sub) / max(float(np.std(sub)), 1e-3), 0, None)
    edge = gm / max(float(np.median(gm)) * 4.0, 1e-4)
    m = ((dark > 1.0) | (edge > 1.0)).astype(np.uint8)
    # not the eyes (with a margin for lashes) nor the brows
    free = _poly(pts, _R_EYE, (h, w)) | _poly(pts, _L_EYE, (h, w))
    k = max(1, int(round(0.05 * iod)))
    free = cv2.dilate(free, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    # the brows' upper half only: a frame's top bar often runs along the brows' lower edge
    brows = np.zeros((h, w), np.uint8)
    for up, lo in ((_R_BROW_UP, _R_BROW_LO), (_L_BROW_UP, _L_BROW_LO)):
        top = pts[list(up)] - [0.0, 0.03 * iod]
        mid = (pts[list(up)] + pts[list(lo)]) / 2
        cv2.fillPoly(brows, [np.round(np.concatenate([top, mid[::-1]]) * 4).astype(np.int32)], 1,
                     lineType=cv2.LINE_8, shift=2)
    m = m & (1 - free[ya:yb, xa:xb]) & (1 - brows[ya:yb, xa:xb])
    # only long structures (frame parts), not skin pores or single dark specks
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, bool)
    span = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep[1:] = span[1:] > 0.4 * iod
    m = keep[lab].astype(np.uint8)
    ridge = _ridges(sub, max(0.8, 0.015 * iod)) if rims else None
    if ridge is not None:
        face = _poly(pts, FACE_OVAL, (h, w))[ya:yb, xa:xb]
        loops = _rim_loops(ridge, pts - [xa, ya], iod, free[ya:yb, xa:xb], face) & (1 - brows[ya:yb, xa:xb])
        m |= loops
    # close the notches the brows' exclusion cut into a frame bar that runs along them
    kc = max(1, int(round(0.06 * iod)))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kc + 1, kc + 1)))
    if ridge is not None:
        # only the frame's own pixels (dark or on a traced rim; the soft edges are added below): the
        # contrast test and the closing also take a halo of skin round a thin frame (4-5 px each
        # side of a 1 px line at 60 px IOD: the brows' lower half, the lids' skin)
        core = (dark > 1.0) | (loops > 0)
        m = m & core.astype(np.uint8)
    m = m.astype(np.float32)
    # the frame's soft (anti-aliased, blurred) edges too: left to the warp they draw a second rim
    kd = max(1, int(round(0.025 * iod)))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kd + 1, 2 * kd + 1)))
    out[ya:yb, xa:xb] = cv2.GaussianBlur(m, (0, 0), 0.8)
    return np.clip(out, 0, 1)


#: a rim loop is kept when this fraction of its angles lies on a ridge >= _RIDGE_ON x the region's
#: typical (75th percentile) ridge level. Measured 2026-12-03 on 119 shared portraits: the 6 rims of
#: the 3 with glasses 0.96-1.0; of the 232 loops traced round bare eyes (lid folds, lower lids, brows)
#: 7 reach 0.9-0.95, so the loops are no detector: they are only traced once glasses are detected
_RIM_SUPPORT, _RIDGE_ON = 0.9, 2.0


def _ridges(g: np.ndarray, sigma: float) -> np.ndarray:
    """Dark line-likeness at scale ``sigma``: the Hessian's larger eigenvalue (positive across a
    dark line) less the magnitude of the smaller (a line is flat along itself; a dark speck or pore
    curves both ways), scale-normalised by sigma^2, clipped at 0."""
    gb = cv2.GaussianBlur(g, (0, 0), sigma)
    dxx = cv2.Sobel(gb, cv2.CV_32F, 2, 0, ksize=3)
    dyy = cv2.Sobel(gb, cv2.CV_32F, 0, 2, ksize=3)
    dxy = cv2.Sobel(gb, cv2.CV_32F, 1, 1, ksize=3)
    tr, d = dxx + dyy, np.sqrt((dxx - dyy) ** 2 + 4 * dxy ** 2)
    return np.clip((tr + d) / 2 - np.abs((tr - d) / 2), 0, None) * np.float32(sigma * sigma)


def _loop_path(P: np.ndarray, jump: int = 4, pen: float = 0.05) -> np.ndarray:
    """The closed path through a polar score map ``P`` (angles, radii) that maximises its summed
    score, moving at most ``jump`` radius steps per angle step (``pen`` per step): dynamic
    programming over the angles unrolled twice, the middle turn kept (closure without a fixed
    start). Returns the radius index per angle."""
    n, nr = P.shape
    pp = np.concatenate([P, P], 0).astype(np.float32)
    val = pp[0].copy()
    back = np.zeros((2 * n, nr), np.int64)
    cost = (pen * np.abs(np.arange(-jump, jump + 1))).astype(np.float32)  # window column i: j' = j + i - jump
    rows = np.arange(nr)
    idx = rows[:, None] + np.arange(2 * jump + 1)[None, :]      # into val padded by jump each side
    buf = np.full(nr + 2 * jump, -np.inf, np.float32)
    for k in range(1, 2 * n):
        buf[jump:jump + nr] = val
        win = buf[idx] - cost
        arg = np.argmax(win, axis=1)
        val, back[k] = win[rows, arg] + pp[k], rows + arg - jump
    j = int(np.argmax(val))
    path = np.zeros(2 * n, np.int64)
    path[-1] = j
    for k in range(2 * n - 1, 0, -1):
        j = int(back[k, j])
        path[k - 1] = j
    out = np.zeros(n, np.int64)
    out[np.arange(n // 2, n // 2 + n) % n] = path[n // 2:n // 2 + n]
    return out


def _ridge_ref(ridge: np.ndarray) -> float:
    """A region's typical ridge level (75th percentile): skin texture, not the frame."""
    return max(float(np.percentile(ridge, 75)), 1e-5)


def _rim_loops(ridge: np.ndarray, pts: np.ndarray, iod: float, free: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(h, w) uint8: each glasses rim traced as a closed loop round its eye on a region's dark
    ridges at the frame's scale (``ridge``: ``_ridges`` at 0.015 IOD; ``pts`` in its pixels,
    ``free``: the eye openings with their lash margin). The ridges are sampled on rays from the eye's centre (0.45-1.7
    eye widths, not into the opening, not past the nose's midline), the best smooth closed path is
    traced (``_loop_path``, the inner of two ridges a little preferred), and a loop whose angles
    lie on a ridge for less than ``_RIM_SUPPORT`` of the turn is dropped (a rimless lens, a frame
    hidden by hair). A kept loop is drawn whole (1 px, + 0.8 % of the IOD each side), its few gaps
    included: a rim is a loop. Round bare eyes this finds loops too (lid folds, lower lids): only
    call it where glasses were detected."""
    h, w = ridge.shape
    out = np.zeros((h, w), np.uint8)
    ref = _ridge_ref(ridge)
    u = (pts[_L_OUT] - pts[_R_OUT]) / iod
    v = np.array([-u[1], u[0]])
    n, rho = 120, np.arange(0.45, 1.7, 0.02)
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(th)[:, None], np.sin(th)[:, None]
    half = int(round(0.008 * iod))
    for eye, sgn in ((_R_EYE, -1.0), (_L_EYE, 1.0)):
        c = pts[list(eye)].mean(0)
        we = float(np.linalg.norm(pts[eye[0]] - pts[eye[8]]))
        r = rho[None, :] * we
        xs = (c[0] + r * (ct * u[0] + st * v[0])).astype(np.float32)
        ys = (c[1] + r * (ct * u[1] + st * v[1])).astype(np.float32)
        p = np.minimum(cv2.remap(ridge, xs, ys, cv2.INTER_LINEAR, borderValue=0.0) / ref, 6.0)
        inside = cv2.remap(free.astype(np.float32), xs, ys, cv2.INTER_NEAREST, borderValue=1.0) > 0
        side = sgn * ((xs - pts[_NASION, 0]) * u[0] + (ys - pts[_NASION, 1]) * u[1])
        bad = inside | (side < 0.02 * iod) | (xs < 0) | (ys < 0) | (xs > w - 1) | (ys > h - 1)
        p = np.where(bad, -2.0, p).astype(np.float32)
        # of two ridges on a ray the inner one is a little preferred (a thick frame's inner edge,
        # not the brow's lower edge above its top bar)
        path = _loop_path(p - 0.5 * rho[None, :].astype(np.float32))
        on = p[np.arange(n), path] > _RIDGE_ON
        if on.mean() < _RIM_SUPPORT:
            continue
        loop = np.stack([xs[np.arange(n), path], ys[np.arange(n), path]], 1)
        cv2.polylines(out, [np.round(loop * 4).astype(np.int32)], True, 1, 2 * half + 1, cv2.LINE_8, shift=2)
        arm = _temple_arm(ridge / ref, loop, c, we, sgn * u, v, face, iod)
        if arm is not None:
            cv2.polylines(out, [np.round(arm * 4).astype(np.int32)], False, 1, 2 * half + 1, cv2.LINE_8, shift=2)
    return out & (1 - free)


def _temple_arm(p: np.ndarray, loop: np.ndarray, c: np.ndarray, we: float, out_dir: np.ndarray,
                down: np.ndarray, face: np.ndarray, iod: float) -> np.ndarray | None:
    """The temple arm leaving a traced rim towards the face's edge, as a (2, 2) segment, or None:
    of the straight lines within 30 degrees of the eye line from the points of the rim's outer upper
    half (``c``: the eye's centre, ``we``: its width), the one that stays longest on a ridge
    (``p``: ridge / typical ridge; a run ends at 2 px off it), at least 0.08 IOD, cut at the face's
    edge (``face``: the face oval's mask) + 0.03 IOD: beyond it the arm is on hair or background."""
    h, w = p.shape
    rel = loop - c
    starts = loop[(rel @ out_dir > 0.35 * we) & (rel @ down < 0.25 * we)]
    if starts.shape[0] == 0:
        return None
    step = np.arange(1.0, 0.6 * iod, 0.5)
    best: tuple[int, np.ndarray] | None = None
    for ang in np.deg2rad(np.arange(-30.0, 31.0, 2.0)):
        d = np.cos(ang) * out_dir + np.sin(ang) * down
        q = starts[:, None, :] + step[None, :, None] * d          # (starts, steps, 2)
        # the best of three parallel lines 1 px apart: a straight line through a slightly curved
        # or pixel-stepped ridge
        val = np.max([cv2.remap(p, (q[..., 0] + o * d[1]).astype(np.float32), (q[..., 1] - o * d[0]).astype(np.float32),
                                cv2.INTER_LINEAR, borderValue=0.0) for o in (-1.0, 0.0, 1.0)], axis=0)
        off = (val <= _RIDGE_ON).astype(np.float32)
        gap = cv2.filter2D(off, -1, np.ones((1, 4), np.float32), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT) >= 4
        gap[:, -1] = True
        run = np.argmax(gap, axis=1)                              # samples before the first 2 px off the ridge
        i = int(np.argmax(run))
        if best is None or run[i] > best[0]:
            best = (int(run[i]), q[i])
    if best is None or best[0] * 0.5 < 0.08 * iod:
        return None
    end, q = best
    xi = np.clip(np.round(q[:end, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(q[:end, 1]).astype(int), 0, h - 1)
    inside = face[yi, xi] > 0
    if not inside.all():
        end = min(end, int(np.argmin(inside)) + int(0.03 * iod / 0.5))
    return np.stack([q[0], q[end - 1]])


#: the vertices the frame rests on / moves with (nose bridge, temples, around the eyes)
ANCHORS = (168, 6, 197, 33, 133, 263, 362, 70, 300, 46, 276, 127, 356, 116, 345, 9)


def detect_glasses(image: np.ndarray, pts: np.ndarray | None, threshold: float = THRESHOLD) -> Glasses:
    """Glasses on a work-grid image (float RGB [0, 1]) with its detected landmarks ``pts``."""
    hw = image.shape[:2]
    if pts is None or pts.shape[0] < 468:
        return Glasses(0.0, False, np.zeros(hw, np.float32), ANCHORS)
    sc = glasses_score(image, pts)
    if sc < threshold:
        return Glasses(sc, False, np.zeros(hw, np.float32), ANCHORS)
    # the decision is the dark/contrasted parts' (the traced rims would widen what crosses the bridge)
    coarse = frame_mask(image, pts, rims=False)
    if _frame_bridges(coarse, pts):
        return Glasses(sc, True, _not_nostrils(frame_mask(image, pts), pts), ANCHORS)
    if _browline_bars(coarse, image, pts):
        return Glasses(sc, True, _browline_bridge(_not_nostrils(frame_mask(image, pts), pts), pts), ANCHORS)
    lenses = _dark_lenses(image, pts)
    if lenses is not None:
        # sunglasses: the lenses themselves are the frame (the eyes behind them do not show)
        return Glasses(sc, True, np.maximum(_not_nostrils(frame_mask(image, pts), pts), lenses), ANCHORS)
    return Glasses(sc, False, np.zeros(hw, np.float32), ANCHORS)


#: dark lenses: the band under each eye (where a bare eye has lid and cheek skin) darker than this x
#: the cheeks' median luminance, the two lenses' bands within this ratio of each other. Measured
#: 2026-12-03 over the 11 of 130 cached shared portraits that pass the score: person-vlado5's
#: sunglasses 0.57, the others 0.82-1.98 (a bare eye's lower-lid shadow, clear glasses)
LENS_DARK, LENS_SYMMETRY = 0.65, 0.6


def _dark_lenses(image: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    """The soft mask (H, W) of two dark sunglasses lenses, or None where there are none.

    A dark lens reaches well below the eye, where a bare eye has lid and cheek skin: for each eye
    the median luminance of a band from 0.04 to 0.16 IOD under the lower lid (the eye's middle
    60 %) must be below :data:`LENS_DARK` x the cheeks' median, and the two eyes' bands alike
    (:data:`LENS_SYMMETRY`). (The opening itself is no evidence: the landmarks of eyes hidden by a
    lens are a guess, and a lens shows bright reflections.) The lens is then the connected dark
    pixels (< 0.75 x the cheeks) round that band, within a box of 0.55 IOD either side of the eye
    and from 0.3 IOD above it to 0.4 below, as their convex hull (reflections inside included); it
    must be larger than the eye opening (1.5x) and smaller than 80 % of that box.
    ``pts``: the landmarks in the image's pixels."""
    h, w = image.shape[:2]
    lum = cv2.GaussianBlur(image.mean(2).astype(np.float32), (0, 0), 0.7)
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    if iod < 8:
        return None
    cheeks = []
    for low, side in ((_R_LOW, _R_OUT), (_L_LOW, _L_OUT)):
        c = (pts[low] + pts[side]) / 2 + np.array([0.0, 0.55 * iod])
        r = 0.1 * iod
        ya, yb = int(max(0, c[1] - r)), int(min(h, c[1] + r))
        xa, xb = int(max(0, c[0] - r)), int(min(w, c[0] + r))
        if yb > ya and xb > xa:
            cheeks.append(lum[ya:yb, xa:xb].ravel())
    if not cheeks:
        return None
    skin = float(np.median(np.concatenate(cheeks)))
    if skin <= 0.05:
        return None
    darks, seeds = [], []
    for eye in (_R_EYE, _L_EYE):
        e = pts[list(eye)]
        x0, x1 = float(e[:, 0].min()), float(e[:, 0].max())
        xm0, xm1 = int(np.clip(x0 + 0.2 * (x1 - x0), 0, w - 1)), int(np.clip(x1 - 0.2 * (x1 - x0), 1, w))
        bot = float(e[:, 1].max())
        ya, yb = int(np.clip(bot + 0.04 * iod, 0, h - 1)), int(np.clip(bot + 0.16 * iod, 1, h))
        band = lum[ya:yb, xm0:xm1]
        if band.size < 4:
            return None
        d = float(np.median(band))
        if d > LENS_DARK * skin:
            return None
        darks.append(d)
        seeds.append((ya, yb, xm0, xm1))
    if min(darks) < LENS_SYMMETRY * max(darks):
        return None
    dark = (lum < 0.75 * skin).astype(np.uint8)
    out = np.zeros((h, w), np.uint8)
    for eye, (ya, yb, xm0, xm1) in zip((_R_EYE, _L_EYE), seeds, strict=True):
        e = pts[list(eye)]
        c = e.mean(0)
        bx0, bx1 = int(np.clip(c[0] - 0.55 * iod, 0, w - 1)), int(np.clip(c[0] + 0.55 * iod, 1, w))
        by0, by1 = int(np.clip(c[1] - 0.3 * iod, 0, h - 1)), int(np.clip(c[1] + 0.4 * iod, 1, h))
        sub = dark[by0:by1, bx0:bx1]
        _, lab = cv2.connectedComponents(sub, connectivity=8)
        seed = lab[max(0, ya - by0):max(0, yb - by0), max(0, xm0 - bx0):max(0, xm1 - bx0)]
        ids = np.unique(seed[seed > 0])
        if ids.size == 0:
            return None
        yy, xx = np.nonzero(np.isin(lab, ids))
        hull = cv2.convexHull(np.stack([xx + bx0, yy + by0], 1).astype(np.int32))
        lens = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(lens, hull, 1)
        area = int(lens.sum())
        opening = int((_poly(pts, eye, (h, w)) > 0).sum())
        if area < 1.5 * opening or area > 0.8 * (by1 - by0) * (bx1 - bx0):
            return None
        out |= lens
    kd = max(1, int(round(0.025 * iod)))
    m = cv2.dilate(out.astype(np.float32), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * kd + 1, 2 * kd + 1)))
    return np.clip(cv2.GaussianBlur(m, (0, 0), 0.8), 0, 1).astype(np.float32)


#: browline frames: the fraction of each eye's width its dark top bar must cover, and how dark it
#: must be (30th percentile luminance over the face's skin median)
BAR_COVER, BAR_DARK = 0.8, 0.5


def _browline_bars(fm: np.ndarray, image: np.ndarray, pts: np.ndarray) -> bool:
    """Both eyes under a dark bar of the frame mask (between the brows' top and the eyes' top) across
    at least :data:`BAR_COVER` of the eye's width, much darker than the skin: a browline frame whose
    bridge and lower rims are light or translucent (Grace Hopper's, amber), which the bridge test
    misses. Over the shared portraits no face without glasses has even one such bar (their masks
    hold nothing there: the brows' upper halves are excluded and their lower halves are lighter)."""
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    lum = image.mean(2)
    m = fm > 0.5
    face = _poly(pts, FACE_OVAL, fm.shape) > 0
    skin_px = lum[face & ~m]
    if skin_px.size < 16:
        return False
    skin = float(np.median(skin_px))
    h, w = fm.shape
    for eye, brow in ((_R_EYE, _R_BROW), (_L_EYE, _L_BROW)):
        e, b = pts[list(eye)], pts[list(brow)]
        xa, xb = int(np.clip(e[:, 0].min(), 0, w - 1)), int(np.clip(e[:, 0].max(), 1, w))
        ya, yb = int(np.clip(b[:, 1].min() - 0.05 * iod, 0, h - 1)), int(np.clip(e[:, 1].min(), 1, h))
        if xb - xa < 2 or yb - ya < 1:
            return False
        band = m[ya:yb, xa:xb]
        px = lum[ya:yb, xa:xb][band]
        if band.any(0).mean() < BAR_COVER or px.size < 10 or np.percentile(px, 30) > BAR_DARK * skin:
            return False
    return True


def _not_nostrils(fm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The frame mask without the dark blobs on the nose below the eyes (the nostrils: a frame's
    lower rims lie less than 0.3 IOD below the lower lids and its bridge above them; Grace Hopper's
    nostrils were "frame" and stayed put under a smile)."""
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    mid = (pts[_R_IN, 0] + pts[_L_IN, 0]) / 2
    low = max(pts[_R_LOW, 1], pts[_L_LOW, 1]) + 0.3 * iod
    n, lab, stats, cen = cv2.connectedComponentsWithStats((fm > 0.05).astype(np.uint8), connectivity=8)
    drop = np.zeros(n, bool)
    drop[1:] = (cen[1:, 1] > low) & (np.abs(cen[1:, 0] - mid) < 0.3 * iod)
    if not drop.any():
        return fm
    return np.where(drop[lab], 0.0, fm).astype(np.float32)


def _browline_bridge(fm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """A browline frame's mask with its bridge: the light (amber, translucent) piece between the two
    dark bars' inner ends, down to the inner eye corners, which neither the darkness test nor the
    rims find; left to the warp, its top stretched up with a raised forehead (Grace Hopper)."""
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    h, w = fm.shape
    mid = (pts[_R_IN, 0] + pts[_L_IN, 0]) / 2
    ya = int(np.clip(min(pts[list(_R_BROW), 1].min(), pts[list(_L_BROW), 1].min()) - 0.05 * iod, 0, h - 1))
    yb = int(np.clip(max(pts[_R_IN, 1], pts[_L_IN, 1]), ya + 1, h))
    m = fm[ya:yb] > 0.5
    ys, xs = np.nonzero(m)
    right, left = xs < mid, xs >= mid
    if not right.any() or not left.any():
        return fm
    xr, xl = int(xs[right].max()), int(xs[left].min())
    if xl - xr > 0.6 * iod or xl <= xr:
        return fm
    near = (np.abs(xs - xr) < 0.1 * iod) | (np.abs(xs - xl) < 0.1 * iod)
    top = ya + int(ys[near].min())
    out = fm.copy()
    bridge = np.zeros((h, w), np.float32)
    k = max(1, int(round(0.02 * iod)))
    bridge[top:yb, max(0, xr - k):min(w, xl + k + 1)] = 1.0
    free = _poly(pts, _R_EYE, (h, w)) | _poly(pts, _L_EYE, (h, w))
    bridge *= 1 - free
    return np.maximum(out, np.clip(cv2.GaussianBlur(bridge, (0, 0), 0.8), 0, 1)).astype(np.float32)


def _frame_bridges(fm: np.ndarray, pts: np.ndarray) -> bool:
    """The frame's pixels cross the nose bridge (in most columns between the inner eye corners,
    at the nasion-to-lid height) and span both eyes: a nostril, a cheek edge or a brow is none."""
    iod = float(np.linalg.norm(pts[_R_OUT] - pts[_L_OUT]))
    h, w = fm.shape
    xa, xb = sorted((float(pts[_R_IN, 0]), float(pts[_L_IN, 0])))
    xa, xb = int(np.clip(xa + 0.05 * iod, 0, w - 1)), int(np.clip(xb - 0.05 * iod, 1, w))
    ya = int(np.clip(pts[_NASION, 1] - 0.15 * iod, 0, h - 1))
    yb = int(np.clip(max(pts[_R_IN, 1], pts[_L_IN, 1]) + 0.1 * iod, 1, h))
    if xb - xa < 2 or yb - ya < 2:
        return False
    cols = (fm[ya:yb, xa:xb] > 0.5).any(0).mean()
    ys, xs = np.nonzero(fm > 0.5)
    span = float(xs.max() - xs.min()) if xs.size else 0.0
    return bool(cols >= 0.6 and span >= 1.2 * iod)


def glasses_taper(frame_t: np.ndarray, offset: np.ndarray, stretch: float | np.ndarray = 2.0,
                  margin: float = 1.0) -> np.ndarray:
    """How much of the expression motion each pixel near a rigid glasses frame keeps, in [0, 1].

    ``frame_t`` (h, w) is the frame's soft mask where it lands in the target; ``offset`` (h, w, 2)
    the expression part of the warp (source point minus the rigid head motion's source point, in
    pixels). A pixel whose expression offset points towards the frame (skin moving away from it:
    raised brows, lids closing under the top rim) would sample the frame a second time, or
    nothing useful: the frame hid what it uncovers. It keeps the fraction
    ``(t - margin) / (stretch * e)`` of its offset (``t``: its distance to the frame, ``e``: the
    offset's component towards it), so the skin between the frame and the moved feature is
    stretched by ``stretch / (stretch - 1)`` and the samples move monotonically away from the
    frame: no sample lands on it and none repeat (a clamp to the nearest skin pixel drew streaks
    and blocks). ``stretch`` may be a per-pixel (h, w) map. Pixels on the frame keep none (they
    move rigidly), those moving towards it or along it keep all. A pure function of the arrays."""
    if frame_t.ndim != 2 or offset.shape != (*frame_t.shape, 2):
        raise ValueError(f"glasses_taper: expected frame_t (h, w) and offset (h, w, 2), got "
                         f"{frame_t.shape} and {offset.shape}")
    st = np.asarray(stretch, np.float32)
    if st.ndim not in (0, 2) or (st.ndim == 2 and st.shape != frame_t.shape) or float(st.min()) <= 1.0:
        raise ValueError(f"glasses_taper: stretch must be > 1 (a number or an (h, w) map), got shape "
                         f"{st.shape}, min {float(st.min()) if st.size else 'n/a'}")
    on = (frame_t > 0.3).astype(np.uint8)
    if not on.any():
        return np.ones(frame_t.shape, np.float32)
    t = cv2.distanceTransform(1 - on, cv2.DIST_L2, 5).astype(np.float32)
    ts = cv2.GaussianBlur(t, (0, 0), 1.0)
    gy, gx = np.gradient(ts)
    n = np.hypot(gx, gy) + 1e-6
    toward = np.maximum(0.0, -(offset[..., 0] * gx + offset[..., 1] * gy) / n)
    lam = np.clip((t - margin) / (st * toward + 1e-6), 0.0, 1.0)
    lam = np.minimum(lam, 1.0 - np.clip(frame_t, 0.0, 1.0))
    return lam.astype(np.float32)


def rigid_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, translation) taking points ``src``
    (N, 2) to ``dst`` (N, 2): a frame does not shear or stretch."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if m is None:
        m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        m[:, 2] = (dst - src).mean(0)
    return np.asarray(m, np.float64)


def splat_frame(values: np.ndarray, src_xy: np.ndarray, tgt_xy: np.ndarray, box: tuple[int, int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixels carried forward: ``values`` (N,) soft frame mask of source points ``src_xy`` (N, 2,
    work pixels) that land at ``tgt_xy`` (N, 2) are splatted (nearest) onto the target grid within
    ``box`` (y0, y1, x0, x1), the stronger frame pixel winning where two meet; single-pixel holes
    (a frame stretched a little) take the mean of their neighbours. Returns the target mask (h, w) of
    the box and there the backward flow (h, w, 2) to each pixel's source point (0 elsewhere).
    A pure function of the arrays."""
    y0, y1, x0, x1 = box
    mask_t = np.zeros((y1 - y0, x1 - x0), np.float32)
    flow_t = np.zeros((y1 - y0, x1 - x0, 2), np.float32)
    ti = np.floor(tgt_xy).astype(np.int64)
    ok = (ti[:, 0] >= x0) & (ti[:, 0] < x1) & (ti[:, 1] >= y0) & (ti[:, 1] < y1)
    if not ok.any():
        return mask_t, flow_t
    v, ti, d = values[ok].astype(np.float32), ti[ok], (src_xy[ok] - tgt_xy[ok]).astype(np.float32)
    order = np.argsort(v, kind="stable")
    ty, tx = ti[order, 1] - y0, ti[order, 0] - x0
    mask_t[ty, tx] = v[order]
    flow_t[ty, tx] = d[order]
    have = (mask_t > 0).astype(np.float32)
    k = np.ones((3, 3), np.float32)
    wsum = cv2.filter2D(have, -1, k, borderType=cv2.BORDER_CONSTANT)
    # a hole: set neighbours on two opposite sides (a thin rim stretched along itself) or most round it
    hp = np.pad(have > 0, 1)
    hh, ww = have.shape
    def nb(dy: int, dx: int) -> np.ndarray:
        return hp[1 + dy:1 + dy + hh, 1 + dx:1 + dx + ww]
    between = (nb(0, -1) & nb(0, 1)) | (nb(-1, 0) & nb(1, 0)) | (nb(-1, -1) & nb(1, 1)) | (nb(-1, 1) & nb(1, -1))
    hole = (have == 0) & (between | (wsum >= 4))
    if hole.any():
        ms = cv2.filter2D(mask_t, -1, k, borderType=cv2.BORDER_CONSTANT)
        fs = [cv2.filter2D(np.ascontiguousarray(flow_t[..., c]), -1, k, borderType=cv2.BORDER_CONSTANT) for c in (0, 1)]
        mask_t[hole] = ms[hole] / wsum[hole]
        flow_t[hole, 0] = fs[0][hole] / wsum[hole]
        flow_t[hole, 1] = fs[1][hole] / wsum[hole]
    return mask_t, flow_t
