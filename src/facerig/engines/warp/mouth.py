"""Synthesis of a plausible mouth interior (cavity, teeth, tongue) where an edit opens the mouth.

Everything is built in "mouth coordinates" of the target mesh: ``u`` in [0, 1] along the inner
mouth corners (subject's right 78 -> left 308), and, at each ``u``, the pixel's distance below the
upper inner-lip curve and above the lower inner-lip curve. Colours are derived from the photo
(lip colour, skin brightness, noise level), so the interior matches its exposure and grain.
"""

from __future__ import annotations

import cv2
import numpy as np

# MediaPipe inner-lip contours (corner to corner, subject's right -> left)
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)


def mouth_opening(xy: np.ndarray) -> float:
    """Inner-lip opening at the centre (vertices 13 / 14), in the units of ``xy``."""
    return float(np.linalg.norm(xy[14] - xy[13]))


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
) -> np.ndarray:
    """RGB float32 [0, 1] interior image over ``box`` = (x0, y0, x1, y1) (work pixels) for the target
    vertices ``xy`` (V, 2) in work pixels."""
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
    skin_l = float(np.mean(skin_rgb))
    # cavity: dark, reddish, darkest at the back (centre), lighter towards the lips/corners
    hue = lip / max(float(lip.max()), 1e-3)
    hue = np.array([1.0, min(hue[1], 0.7), min(hue[2], 0.7)], np.float32)  # keep it red, never blue
    scale = min(1.4, max(0.5, skin_l / 0.6))
    lip_chroma = lip / max(float(lip.mean()), 1e-3)
    # in the lips' own hue (saturated a little more), so the interior reads as a mouth, not a hole:
    # dark red at the back, the lips' colour in shadow on the inner walls
    sat = lip.mean() * lip_chroma ** 1.4
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
    chroma = np.asarray(skin_rgb, np.float32) / max(skin_l, 1e-3)
    illum = 1.0 + 0.5 * (chroma - 1.0)
    teeth_base = np.clip(max(skin_l * 1.25, 0.5) * illum, 0.15, 0.95)
    if teeth_rgb is not None:
        teeth_base = np.clip(np.asarray(teeth_rgb, np.float32) * 1.05, 0.2, 0.95)
    # upper teeth: band under the upper lip; incisal edge curves down in the middle
    tu = 0.17 * width * (1 - 0.45 * side ** 2)
    tu = np.minimum(tu, 0.55 * gap + 0.6)   # keep some cavity visible
    soft = max(0.8, 0.04 * width)
    m_up = np.clip((tu - d_up) / soft + 0.5, 0, 1) * np.clip((0.47 - np.abs(uc - 0.5)) / 0.08, 0, 1)
    shade_u = (1 - 0.45 * side ** 2) * (0.9 + 0.1 * np.clip(d_up / max(1.0, 0.35 * tu.max()), 0, 1))
    # faint gaps between incisors / laterals / canines
    gaps = np.zeros_like(u)
    for g in (0.5, 0.5 - 0.085, 0.5 + 0.085, 0.5 - 0.165, 0.5 + 0.165, 0.5 - 0.235, 0.5 + 0.235):
        gaps += np.exp(-0.5 * ((u - g) * width / max(0.6, 0.006 * width)) ** 2)
    shade_u = shade_u * (1 - 0.12 * np.clip(gaps, 0, 1))
    upper = teeth_base[None, None] * shade_u[..., None]
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
    out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), max(0.5, 0.008 * width))
    if noise_sigma > 0:
        lum = rng.normal(0, noise_sigma, out.shape[:2]).astype(np.float32)[..., None]
        chroma = rng.normal(0, 0.25 * noise_sigma, out.shape).astype(np.float32)
        out = out + (lum + chroma) * np.sqrt(np.clip(out.mean(2, keepdims=True) / 0.5, 0.2, 1.0))
    return np.clip(out, 0, 1).astype(np.float32)
