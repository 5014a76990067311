"""The mouth interior where an edit opens the mouth: a real one moved along the lips, or a synthesised one.

Everything is built in "mouth coordinates": ``u`` in [0, 1] along the inner mouth corners (subject's
right 78 -> left 308), and, at each ``u``, the pixel's distance below the upper inner-lip curve and
above the lower inner-lip curve. In order of preference the interior comes from

1. the DRIVING frame of a reenactment (:func:`transfer_interior` from the driving face's inner-lip
   contour to the target's, colour-matched to the source by per-channel mean/std in Lab of the lips,
   :func:`match_colour`, and blurred to the source's sharpness);
2. the source photo's own open mouth (its teeth and cavity): the part next to each lip moves with that
   lip at its own scale (teeth stay teeth-sized), what opens between them continues the photo's
   interior darkening into its cavity colour; a real interior is never painted over;
3. the procedural fill (:func:`synthesize_mouth`: cavity, teeth band, tongue) in colours derived from
   the photo in a hue-safe way (:func:`safe_mouth_colours`: never bluer than the skin), blurred to
   the photo's measured sharpness (:func:`estimate_blur`) with its noise.

The interior is bounded by the inner-lip contour (the detected one where the fit carries detections:
:func:`lip_residual`), so a beard or moustache around the mouth stays the photo's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe inner-lip contours (corner to corner, subject's right -> left)
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# outer lip contours (corner 61 -> corner 291)
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
INNER_LOOP = UPPER_INNER + tuple(reversed(LOWER_INNER[1:-1]))
OUTER_LOOP = UPPER_OUTER + tuple(reversed(LOWER_OUTER[1:-1]))


def mouth_opening(xy: np.ndarray) -> float:
    """Inner-lip opening at the centre (vertices 13 / 14), in the units of ``xy``: how far the lower
    lip lies below the upper one across the mouth's axis (78 -> 308), 0 when it reaches above it.
    (The plain distance counted lips pressed past each other - mouthShrugLower, mouthPress - as an
    opening, and a grey teeth band was painted between closed lips.)"""
    d = xy[14, :2] - xy[13, :2]
    axis = xy[308, :2] - xy[78, :2]
    n = np.array([-axis[1], axis[0]], dtype=np.float64)
    nn = float(np.linalg.norm(n))
    if nn < 1e-9:
        return float(np.linalg.norm(d))
    n /= nn
    down = xy[152, :2] - xy[13, :2] if xy.shape[0] > 152 else np.array([0.0, 1.0])  # towards the chin
    if float(np.dot(down, n)) < 0:
        n = -n
    return max(float(np.dot(d, n)), 0.0)


def mouth_width(xy: np.ndarray) -> float:
    return float(np.linalg.norm(xy[308] - xy[78]))


def synthesize_mouth(
    xy: np.ndarray,
    box: tuple[int, int, int, int],
    lip_rgb: np.ndarray,
    skin_rgb: np.ndarray,
    noise_sigma: float,
    rng: np.random.Generator,
    teeth_rgb: np.ndarray | None = None,
    cavity_rgb: np.ndarray | None = None,
    blur: float = 0.0,
    teeth: bool = True,
    lip_dark: np.ndarray | None = None,
) -> np.ndarray:
    """RGB float32 [0, 1] interior image over ``box`` = (x0, y0, x1, y1) (work pixels) for the target
    vertices ``xy`` (V, 2) in work pixels; ``blur``: the photo's measured blur sigma (px), which the
    interior gets too (a crisp procedural mouth in a soft photo read as a cartoon). ``teeth=False``:
    cavity and tongue only (what opens between a real mouth's teeth, :func:`transfer_interior`).
    ``lip_dark``: the lips' own shaded colour (:func:`dark_lip_colour`): the cavity's walls and the
    shadow the upper lip casts on the teeth take it, so next to dark skin and dark lips the interior
    is in the face's own colours (a flat light band there read as grey)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    a, b = xy[78], xy[308]
    axis = b - a
    width = float(np.linalg.norm(axis)) + 1e-6
    ux = axis / width
    down = np.array([-ux[1], ux[0]])  # image y is down: perpendicular pointing to the chin
    if down[1] < 0:
        down = -down

    def coords(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rel = pts - a
        return rel @ ux / width, rel @ down

    uu, hu = coords(xy[list(UPPER_INNER)])
    ul, hl = coords(xy[list(LOWER_INNER)])
    ou, ol = np.argsort(uu), np.argsort(ul)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    P = np.stack([xs + 0.5, ys + 0.5], -1)
    u, hh = coords(P.reshape(-1, 2))
    u = u.reshape(h, w)
    hh = hh.reshape(h, w)
    h_up = np.interp(u, uu[ou], hu[ou])
    h_lo = np.interp(u, ul[ol], hl[ol])
    gap = np.maximum(h_lo - h_up, 1e-3)
    d_up = hh - h_up                     # pixels below the upper lip
    d_lo = h_lo - hh                     # pixels above the lower lip
    v = np.clip(d_up / gap, 0, 1)        # 0 at the upper lip, 1 at the lower lip
    uc = np.clip(u, 0, 1)
    side = np.abs(2 * uc - 1)            # 0 centre, 1 corners
    open_c = float(np.linalg.norm(xy[14] - xy[13]))

    lip = np.clip(np.asarray(lip_rgb, np.float32), 0.05, 1)
    teeth_lip = lip  # the colour the teeth's shadow turns to
    if lip_dark is not None:
        # the walls of a mouth are the lips' shaded colour (deeper than their mean on dark lips)
        ld = np.clip(np.asarray(lip_dark, np.float32), 0.02, 1)
        if float(ld[2]) <= float(ld[0]):  # (a blue-ish dark lip pixel set: keep the mean's)
            # (half way: the shaded lips alone, more saturated than their mean, painted a lipstick red)
            lip = np.clip(0.5 * lip + 0.5 * ld * (float(lip.mean()) / max(float(ld.mean()), 1e-3)) ** 0.5, 0.05, 1)
            teeth_lip = ld
    skin_l = float(np.mean(skin_rgb))
    # cavity: dark, reddish, darkest at the back (centre), lighter towards the lips/corners
    hue = lip / max(float(lip.max()), 1e-3)
    hue = np.array([1.0, min(hue[1], 0.7), min(hue[2], 0.7)], np.float32)  # keep it red, never blue
    scale = min(1.4, max(0.5, skin_l / 0.6))
    lip_chroma = lip / max(float(lip.mean()), 1e-3)
    # in the lips' own hue (saturated a little more), so the interior reads as a mouth, not a hole:
    # dark red at the back, the lips' colour in shadow on the inner walls
    sat = lip.mean() * lip_chroma ** 1.4
    sat = np.minimum(sat, sat[0])  # red the largest channel: a cool-balanced photo's lips made it blue
    back = 0.13 * sat * scale                                                     # throat: dark red
    front = 0.40 * sat * scale                                                    # shaded inner walls
    near = 1.0 - np.minimum(np.minimum(d_up, d_lo) / max(2.0, 0.3 * open_c), 1.0)  # 1 at the lip edge
    near = np.maximum(near, side ** 3)
    out = back[None, None] * (1 - near[..., None]) + front[None, None] * near[..., None]

    # tongue: lower part of a wide-open mouth, lip-coloured but shaded
    if open_c > 0.22 * width:
        # in the lips' hue, more saturated (a tongue in the mouth's shade is a deep pink; a scaled
        # lip colour read as grey next to the teeth)
        tongue_col = sat ** 1.0 * (lip_chroma ** 0.6) * 0.5 * min(1.3, max(0.6, skin_l / 0.6))
        t = np.clip((v - 0.55) / 0.3, 0, 1) * (1 - side ** 2) * np.clip((open_c / width - 0.22) / 0.2, 0, 1)
        out = out * (1 - t[..., None]) + tongue_col[None, None] * t[..., None] * (0.7 + 0.3 * v[..., None])

    # teeth: brighter than the skin and warm-neutral (grey teeth read as blue next to warm skin)
    # the photo's illuminant colour, estimated from the skin against a typical skin reflectance,
    # tints the (near neutral) teeth so they sit in the photo's white balance
    # (teeth = the skin's hue at half its saturation: neutral-looking in the photo's white balance;
    # a fixed grey reads as blue next to warm skin)
    # (in Lab: lighter than the skin with a little of its warmth, never bluer: safe_mouth_colours)
    teeth_base = safe_mouth_colours(lip, np.asarray(skin_rgb, np.float32))[0]
    if teeth_rgb is not None and float(teeth_rgb[2]) <= float(teeth_rgb[0]):
        teeth_base = np.clip(np.asarray(teeth_rgb, np.float32) * 1.05, 0.2, 0.95)
    elif lip_dark is not None:
        teeth_base = safe_mouth_colours(lip, np.asarray(skin_rgb, np.float32), bright=True)[0]
    if teeth:
        # upper teeth: band under the upper lip; incisal edge curves down in the middle
        tu = 0.13 * width * (1 - 0.45 * side ** 2)  # (0.17 drew a tall flat band)
        tu = np.minimum(tu, 0.55 * gap + 0.6)   # keep some cavity visible
        soft = max(0.8, 0.04 * width)
        m_up = np.clip((tu - d_up) / soft + 0.5, 0, 1) * np.clip((0.47 - np.abs(uc - 0.5)) / 0.08, 0, 1)
        # in the upper lip's shadow at the gum line, lit towards the incisal edge
        lit_t = np.clip(d_up / max(1.0, 0.6 * tu.max()), 0, 1)
        if lip_dark is not None:  # a deeper shadow, in the lips' shaded colour, and darker corners
            shade_u = (1 - 0.4 * side ** 1.5) * (0.8 + 0.25 * lit_t)
        else:
            shade_u = (1 - 0.35 * side ** 2) * (0.88 + 0.17 * lit_t)
        # faint gaps between incisors / laterals / canines
        gaps = np.zeros_like(u)
        for g in (0.5, 0.5 - 0.085, 0.5 + 0.085, 0.5 - 0.165, 0.5 + 0.165, 0.5 - 0.235, 0.5 + 0.235):
            gaps += np.exp(-0.5 * ((u - g) * width / max(0.6, 0.005 * width)) ** 2)
        shade_u = shade_u * (1 - 0.22 * np.clip(gaps, 0, 1))
        upper = teeth_base[None, None] * shade_u[..., None]
        if lip_dark is not None:
            # the shadowed part takes the lips' shaded colour (light bounced inside the mouth)
            k_sh = np.clip((1.0 - shade_u) / 0.45, 0, 1)[..., None] * 0.4
            upper = upper * (1 - k_sh) + (teeth_lip * 0.9)[None, None] * k_sh
        out = out * (1 - m_up[..., None]) + upper * m_up[..., None]

        # lower teeth: shorter band above the lower lip, in shadow, only in a clearly open mouth
        if open_c > 0.12 * width:
            # (a few millimetres at most: a wide grey band there reads as a second row of upper teeth)
            tl = 0.06 * width * (1 - 0.5 * side ** 2)
            tl = np.minimum(tl, 0.2 * gap)
            k = np.clip((open_c / width - 0.12) / 0.15, 0, 1)
            m_lo = np.clip((tl - d_lo) / soft + 0.5, 0, 1) * np.clip((0.33 - np.abs(uc - 0.5)) / 0.08, 0, 1) * k
            m_lo = 0.5 * m_lo * (1 - m_up)  # the lower teeth are mostly behind the lower lip
            lower = teeth_base[None, None] * (0.5 * (1 - 0.6 * side ** 1.5))[..., None]
            out = out * (1 - m_lo[..., None]) + lower * m_lo[..., None]

    # dark contact shadow just inside the lips
    edge = np.exp(-np.minimum(np.maximum(d_up, 0), np.maximum(d_lo, 0)) / max(0.7, 0.025 * width))
    out = out * (1 - 0.15 * edge[..., None])
    out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), max(0.5, 0.008 * width, float(blur)))
    if noise_sigma > 0:
        lum = rng.normal(0, noise_sigma, out.shape[:2]).astype(np.float32)[..., None]
        chroma = rng.normal(0, 0.25 * noise_sigma, out.shape).astype(np.float32)
        out = out + (lum + chroma) * np.sqrt(np.clip(out.mean(2, keepdims=True) / 0.5, 0.2, 1.0))
    return np.clip(out, 0, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# measurements and the real (source / driving) interior

def lip_residual(det: np.ndarray | None, xy: np.ndarray) -> np.ndarray | None:
    """(V, 2) offsets that put the fitted inner-lip vertices where the photo's inner lips were
    detected (``det``: MediaPipe's 468/478 landmarks in the units of ``xy``), 0 elsewhere; a
    detection more than 8 % of the eye distance from the fit is ignored. None without detections
    or off MediaPipe's topology."""
    if det is None or xy.shape[0] < 468 or det.shape[0] < 468:
        return None
    ids = sorted(set(INNER_LOOP))
    delta = np.zeros((xy.shape[0], 2), np.float64)
    delta[ids] = det[ids, :2] - xy[ids, :2]
    iod = float(np.linalg.norm(xy[33, :2] - xy[263, :2]))
    delta[np.linalg.norm(delta, axis=1) > 0.08 * max(iod, 1.0)] = 0.0
    return delta


def poly_mask(xy: np.ndarray, loop: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    """Anti-aliased (H, W) float32 mask of the polygon ``xy[loop]`` over ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((xy[list(loop), :2] - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def lip_ring(xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the lips (between the outer and the inner contour)."""
    box = (0, 0, hw[1], hw[0])
    return (poly_mask(xy, OUTER_LOOP, box) > 0.5) & (poly_mask(xy, INNER_LOOP, box) < 0.5)


def estimate_blur(image: np.ndarray, mask: np.ndarray) -> float:
    """Gaussian sigma (px) of the photo's blur around ``mask`` (the lips and skin next to them), from
    the loss of gradient energy when re-blurred by 1 px: a step edge blurred by ``b`` keeps
    ``b / sqrt(b^2 + 1)`` of its gradient peak, so ``b = r / sqrt(1 - r^2)`` for the measured ratio
    ``r`` of the 90th gradient percentiles. 0.5 for too small a region."""
    if mask.sum() < 30:
        return 0.5
    g = image.mean(2).astype(np.float32) if image.ndim == 3 else image.astype(np.float32)

    def grad(x: np.ndarray) -> np.ndarray:
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
        return np.sqrt(gx * gx + gy * gy)[mask]

    e0 = float(np.percentile(grad(g), 90))
    e1 = float(np.percentile(grad(cv2.GaussianBlur(g, (0, 0), 1.0)), 90))
    if e0 < 1e-4:
        return 0.5
    r = min(e1 / e0, 0.985)
    return float(np.clip(r / np.sqrt(1 - r * r), 0.3, 6.0))


def lab_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel mean and std in CIE Lab (float RGB [0, 1] in) of the ``mask`` pixels."""
    if mask.sum() < 10:
        return None
    lab = cv2.cvtColor(np.ascontiguousarray(image[mask][None].astype(np.float32)), cv2.COLOR_RGB2LAB)[0]
    return lab.mean(0), lab.std(0) + 1e-3


def match_colour(rgb: np.ndarray, src: tuple[np.ndarray, np.ndarray], dst: tuple[np.ndarray, np.ndarray],
                 floor: tuple[float, float] | None = None, chroma: float = 1.0) -> np.ndarray:
    """``rgb`` (float [0, 1]) with ``src``'s Lab statistics moved to ``dst``'s (per channel
    ``(x - mean_s) / std_s * std_d + mean_d``, the std ratio kept within [0.75, 1.3] for L* and
    [0.8, 1.2] for a*/b*: the statistics are the lips', and a wider ratio pushed the teeth, far
    from the lips' mean, to white or cyan); ``floor``: minimum (a*, b*) of the result; ``chroma``:
    the fraction of the a*/b* change applied."""
    lab = cv2.cvtColor(np.ascontiguousarray(np.clip(rgb, 0, 1).astype(np.float32)), cv2.COLOR_RGB2LAB)
    k = np.clip(dst[1] / src[1], [0.75, 0.8, 0.8], [1.3, 1.2, 1.2])
    orig = lab
    lab = (lab - src[0]) * k + dst[0]
    lab[..., 1:] = orig[..., 1:] + chroma * (lab[..., 1:] - orig[..., 1:])
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    if floor is not None:  # (a*, b*) minimum: hue-safe
        lab[..., 1] = np.maximum(lab[..., 1], floor[0])
        lab[..., 2] = np.maximum(lab[..., 2], floor[1])
    return np.clip(cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB), 0, 1)


def safe_mouth_colours(lip_rgb: np.ndarray, skin_rgb: np.ndarray, bright: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(teeth, cavity) RGB in [0, 1] derived from the lips and skin in Lab so that neither turns
    blue or grey-blue next to dark or warm skin: the teeth are lighter than the skin, with some of
    its warmth (b* >= 12, a* >= 1), the cavity dark and in the lips' red (a* >= 12, b* >= 4).
    ``bright``: lit teeth (L* >= 74: their shaded part is drawn separately; a mid-grey L* 65 band
    read as grey next to dark skin)."""
    def lab(c: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(np.clip(np.asarray(c, np.float32), 0, 1).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0]

    def rgb(c: np.ndarray) -> np.ndarray:
        return np.clip(cv2.cvtColor(np.asarray(c, np.float32).reshape(1, 1, 3), cv2.COLOR_LAB2RGB)[0, 0], 0, 1)

    s, li = lab(skin_rgb), lab(lip_rgb)
    # (real teeth in photos: L* 65-85, a* 0-4, b* 8-20 - yellowish; a neutral grey read as grey-blue)
    # (next to saturated skin, b* < 10 still read as grey: the teeth keep ~55 % of the skin's b*)
    # (teeth are about as light on dark skin as on any: L* from 65 whatever the skin's)
    if bright:  # ivory with more of the skin's warmth: the band's chroma near the skin's keeps it from reading grey
        teeth = np.array([np.clip(max(1.3 * s[0], s[0] + 30), 74, 88), np.clip(0.35 * s[1], 2, 10),
                          np.clip(0.75 * s[2], 14, 30)], np.float32)
    else:
        teeth = np.array([np.clip(max(1.3 * s[0], s[0] + 30), 65, 88), np.clip(0.25 * s[1], 1, 9),
                          np.clip(0.55 * s[2], 12, 30)], np.float32)
    cav = np.array([np.clip(0.3 * li[0], 6, 20), max(0.8 * li[1], 12), max(0.5 * li[2], 4)], np.float32)
    return rgb(teeth), rgb(cav)


def dark_interior(image: np.ndarray, mask: np.ndarray, lip_rgb: np.ndarray) -> np.ndarray | None:
    """The cavity colour of a real open mouth: its darkest quarter, when that is clearly darker than
    the lips (else None: teeth together or a lit tongue, no cavity to continue)."""
    if mask.sum() < 12:
        return None
    px = image[mask]
    lum = px.mean(1)
    dark = px[lum <= np.percentile(lum, 25)].mean(0)
    return dark if float(dark.mean()) < 0.55 * float(np.mean(lip_rgb)) else None


def transfer_interior(src_img: np.ndarray, src_xy: np.ndarray, tgt_xy: np.ndarray, box: tuple[int, int, int, int],
                      scale: float, cavity_rgb: np.ndarray, noise: float = 0.0,
                      rng: np.random.Generator | None = None, cavity_img: np.ndarray | None = None) -> np.ndarray:
    """A real mouth interior moved from the source contour ``src_xy`` (pixels of ``src_img``, float
    RGB [0, 1]) to the target contour ``tgt_xy`` over ``box`` (target pixels); ``scale`` = source
    pixels per target pixel (the faces' size ratio). Where the target opening is no larger than the
    source's (x scale), the interior is mapped proportionally; where it is larger, the half next to
    each lip moves with that lip at its own scale (the teeth keep their size) and what opens between
    them continues the source's middle, darkening into ``cavity_rgb`` within 5 % of the mouth width
    (shaded: darkest at the back of a wide opening, lighter towards the lips and corners, with the
    photo's ``noise``; a flat colour read as a hole), or into ``cavity_img`` (H, W, 3) where given
    (a synthesised cavity and tongue: :func:`synthesize_mouth` with ``teeth=False``)."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    fs, ft = _frame(src_xy), _frame(tgt_xy)
    ps, pt = _profiles(src_xy, fs), _profiles(tgt_xy, ft)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    u, hh = _coords(np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1), ft)
    uc = np.clip(u, 0.0, 1.0)
    h_up_t, h_lo_t = np.interp(uc, *pt[0]), np.interp(uc, *pt[1])
    gap_t = np.maximum(h_lo_t - h_up_t, 1e-3)
    d_up, d_lo = hh - h_up_t, h_lo_t - hh
    v = np.clip(d_up / gap_t, 0, 1)
    h_up_s, h_lo_s = np.interp(uc, *ps[0]), np.interp(uc, *ps[1])
    gap_s = np.maximum(h_lo_s - h_up_s, 0.0)
    half = 0.5 * gap_s
    upper = v < 0.5
    ds = np.where(upper, d_up, d_lo) * scale
    h_s = np.where(upper, h_up_s + np.minimum(ds, half), h_lo_s - np.minimum(ds, half))
    ext = np.maximum(ds - half, 0.0)
    a_s, ux_s, down_s, width_s = fs
    P = a_s[None] + (uc * width_s)[:, None] * ux_s[None] + h_s[:, None] * down_s[None]
    mx = (P[:, 0] - 0.5).reshape(h, w).astype(np.float32)
    my = (P[:, 1] - 0.5).reshape(h, w).astype(np.float32)
    col = cv2.remap(np.ascontiguousarray(src_img, dtype=np.float32), mx, my, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    t = np.clip(ext / max(0.05 * width_s, 1.5), 0, 1).reshape(h, w, 1).astype(np.float32)
    # the cavity's shade: 1 next to the lips / corners, 0.6 at the back of a wide opening
    depth = np.clip(np.minimum(d_up, d_lo) / max(0.15 * ft[3], 1.0), 0, 1) * (1 - np.abs(2 * uc - 1) ** 2)
    shade = (1.15 - 0.55 * depth).reshape(h, w, 1).astype(np.float32)
    cav = np.asarray(cavity_rgb, np.float32)[None, None] * shade
    if cavity_img is not None:
        cav = cavity_img.astype(np.float32)
    elif noise > 0 and rng is not None:
        cav = cav + rng.normal(0, noise, (h, w, 1)).astype(np.float32) * 0.6
    return np.clip(col * (1 - t) + cav * t, 0, 1).astype(np.float32)


def _frame(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mouth frame of a contour: origin (corner 78), unit axis to corner 308, unit down, width."""
    a, b = xy[78, :2].astype(np.float64), xy[308, :2].astype(np.float64)
    axis = b - a
    width = float(np.linalg.norm(axis)) + 1e-6
    ux = axis / width
    down = np.array([-ux[1], ux[0]])
    if down[1] < 0:
        down = -down
    return a, ux, down, width


def _coords(pts: np.ndarray, fr: tuple[np.ndarray, np.ndarray, np.ndarray, float]) -> tuple[np.ndarray, np.ndarray]:
    a, ux, down, width = fr
    rel = pts - a
    return rel @ ux / width, rel @ down


def _profiles(xy: np.ndarray, fr: tuple[np.ndarray, np.ndarray, np.ndarray, float]
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(u, h) of the upper and the lower inner lip, sorted by u (for np.interp)."""
    out = []
    for loop in (UPPER_INNER, LOWER_INNER):
        uu, hu = _coords(xy[list(loop), :2].astype(np.float64), fr)
        o = np.argsort(uu)
        out.append((uu[o], hu[o]))
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# per source, per driving frame, per target

@dataclass
class MouthSource:
    """What :meth:`WarpEngine.prepare` measures about the source's mouth (work pixels)."""

    delta: np.ndarray | None        # (V, 2) fitted -> detected inner-lip offsets (None: no detections)
    xy: np.ndarray                  # (V, 2) source vertices with the detected inner lips
    real: bool                      # the photo shows its mouth interior (teeth or a cavity)
    cavity: np.ndarray              # cavity colour (the photo's darkest interior, else hue-safe)
    teeth: np.ndarray | None        # teeth colour seen in the photo (None: none seen)
    lips: tuple[np.ndarray, np.ndarray] | None  # Lab mean/std of the lips
    blur: float                     # the photo's blur sigma around the mouth
    lip_dark: np.ndarray | None = None  # RGB of the lips' darker part (their shaded, deeper-coloured fifth)


def _box(xy: np.ndarray, hw: tuple[int, int], pad: float) -> tuple[int, int, int, int]:
    pts = xy[list(OUTER_LOOP), :2]
    lo, hi = pts.min(0), pts.max(0)
    p = pad * float(hi[0] - lo[0]) + 2
    return (int(max(0, np.floor(lo[0] - p))), int(max(0, np.floor(lo[1] - p))),
            int(min(hw[1], np.ceil(hi[0] + p))), int(min(hw[0], np.ceil(hi[1] + p))))


def measure_mouth(image: np.ndarray, xy: np.ndarray, det: np.ndarray | None, lip_rgb: np.ndarray,
                  skin_rgb: np.ndarray) -> tuple[MouthSource | None, np.ndarray]:
    """Measure a face's mouth in ``image`` (float RGB [0, 1]) from its vertices ``xy`` (V, 2) and
    detections ``det`` (same pixels, or None): (MouthSource, inner-lip-corrected xy); None (and xy)
    off MediaPipe's topology or with the mouth outside the image."""
    if xy.shape[0] < 468:
        return None, xy
    delta = lip_residual(det, xy)
    xy_c = xy[:, :2] + delta if delta is not None else xy[:, :2].copy()
    box = _box(xy_c, image.shape[:2], 0.25)
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return None, xy_c
    crop = image[box[1]:box[3], box[0]:box[2]]
    inner = poly_mask(xy_c, INNER_LOOP, box) > 0.5
    lips = (poly_mask(xy_c, OUTER_LOOP, box) > 0.5) & ~inner
    blur = estimate_blur(crop, ~inner)
    op, mw = mouth_opening(xy_c), max(mouth_width(xy_c), 1.0)
    teeth = None
    real = False
    if op > 0.06 * mw and inner.sum() >= 20:
        px = crop[inner]
        lum = px.mean(1)
        bright = px[lum >= np.percentile(lum, 75)].mean(0)
        if float(bright.mean()) > 1.1 * float(np.mean(lip_rgb)):
            teeth = bright
        real = teeth is not None or op > 0.15 * mw
    cav = dark_interior(crop, inner, lip_rgb) if real else None
    if cav is None:
        cav = safe_mouth_colours(lip_rgb, skin_rgb)[1]
    return MouthSource(delta=delta, xy=xy_c, real=real, cavity=np.asarray(cav, np.float32), teeth=teeth,
                       lips=lab_stats(crop, lips), blur=blur, lip_dark=dark_lip_colour(crop, lips)), xy_c


def dark_lip_colour(image: np.ndarray, mask: np.ndarray, frac: float = 0.2) -> np.ndarray | None:
    """Mean RGB of the darkest ``frac`` of the ``mask`` pixels (the lips): the colour of the lips in
    their own shade, which an opening mouth's shaded walls, gums and the shadowed part of the
    teeth continue (None: too few pixels)."""
    if mask.sum() < 20:
        return None
    px = image[mask].astype(np.float32)
    lum = px.mean(1)
    return px[lum <= np.percentile(lum, 100 * frac)].mean(0).astype(np.float32)


def driving_interior(frame: np.ndarray, xy: np.ndarray, det: np.ndarray | None, tgt_xy: np.ndarray,
                     box: tuple[int, int, int, int], src: MouthSource) -> np.ndarray | None:
    """The driving frame's mouth interior (``frame`` uint8 RGB, driving vertices ``xy`` and detections
    ``det`` in its pixels) moved onto the target contour ``tgt_xy`` over ``box`` (work pixels),
    colour-matched to the source's lips and blurred to its sharpness; None when the driving mouth is
    closed (nothing to take) or off topology."""
    if xy.shape[0] < 468 or tgt_xy.shape[0] < 468:
        return None
    delta = lip_residual(det, xy)
    xy_c = xy[:, :2] + delta if delta is not None else xy[:, :2]
    if mouth_opening(xy_c) < 0.06 * max(mouth_width(xy_c), 1.0):
        return None
    dbox = _box(xy_c, frame.shape[:2], 0.25)
    if dbox[2] - dbox[0] < 4 or dbox[3] - dbox[1] < 4:
        return None
    crop = frame[dbox[1]:dbox[3], dbox[0]:dbox[2]].astype(np.float32) / 255.0
    xy_l = xy_c - [dbox[0], dbox[1]]
    lbox = (0, 0, crop.shape[1], crop.shape[0])
    inner = poly_mask(xy_l, INNER_LOOP, lbox) > 0.5
    lips = (poly_mask(xy_l, OUTER_LOOP, lbox) > 0.5) & ~inner
    stats = lab_stats(crop, lips)
    if stats is not None and src.lips is not None:
        # (a mouth interior is never bluer than a* -1, b* 3)
        # three quarters of the lips' a*/b* difference (mostly the two people's lip colours, not the
        # light: in full it turned the driver's teeth grey-blue on pink-lipped sources)
        crop = match_colour(crop, stats, src.lips, floor=(-1.0, 3.0), chroma=0.75)
    iod_d = float(np.linalg.norm(xy_c[33] - xy_c[263]))
    iod_t = float(np.linalg.norm(tgt_xy[33, :2] - tgt_xy[263, :2]))
    scale = iod_d / max(iod_t, 1e-3)
    cav = dark_interior(crop, inner, crop[lips].mean(0) if lips.any() else np.full(3, 0.5, np.float32))
    out = transfer_interior(crop, xy_l, tgt_xy, box, scale, src.cavity if cav is None else cav)
    # (the driving frame's own grain comes with its pixels)
    # the driving frame's own blur (in target pixels) up to the source's
    extra = src.blur ** 2 - (estimate_blur(crop, ~inner) / scale) ** 2
    if extra > 0.09:
        out = cv2.GaussianBlur(out, (0, 0), float(np.sqrt(extra)))
    return out


def target_box(xy: np.ndarray, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1) around the inner-lip contour of ``xy`` (work pixels), 3 px padded."""
    pts = xy[list(INNER_LOOP), :2]
    lo, hi = pts.min(0), pts.max(0)
    return (int(max(0, np.floor(lo[0]) - 3)), int(max(0, np.floor(lo[1]) - 3)),
            int(min(hw[1], np.ceil(hi[0]) + 4)), int(min(hw[0], np.ceil(hi[1]) + 4)))


def interior_alpha(xy: np.ndarray, box: tuple[int, int, int, int], blur: float) -> np.ndarray:
    """Soft (H, W) mask of the target's inner-lip polygon over ``box``, its edge as soft as the photo."""
    m = poly_mask(xy, INNER_LOOP, box)
    return np.clip(cv2.GaussianBlur(m, (0, 0), max(0.6, 0.8 * float(blur))) * 1.4 - 0.2, 0, 1)


__all__ = ["MouthSource", "measure_mouth", "driving_interior", "transfer_interior", "synthesize_mouth",
           "safe_mouth_colours", "estimate_blur", "match_colour", "lab_stats", "lip_residual", "poly_mask",
           "target_box", "interior_alpha", "mouth_opening", "mouth_width"]
