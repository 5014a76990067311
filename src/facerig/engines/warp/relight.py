"""Relighting of the whole visible head for the warp engine (docs/warp-engine.md, section 7).

The face mesh stops at the upper forehead, the cheeks and the chin, but a light change shows on the
hair, the ears and the neck too: relighting only the mesh looks painted on, with a step at the
hairline and the jaw. Outside the mesh the shading ratio comes from a smooth proxy of the head's
geometry instead:

* :func:`head_ellipse`: a 2D ellipse fitted (second moments) to the person mask above the chin
  around the face - the head with its hair - clamped to plausible sizes around the mesh;
* :func:`proxy_normals`: camera-frame normals of that ellipse read as the silhouette of an
  ellipsoid (``n = (u, -v, sqrt(1 - u^2 - v^2))`` in normalised ellipse coordinates, kept a little
  towards the camera at and beyond its outline), turning into a vertical cylinder (the neck) below
  the chin;
* :func:`proxy_log_ratio`: the SH luminance ratio target / source light at those normals;
* the mesh's own ratio on its visible rim minus the proxy's there (the residual) is carried
  outwards and faded over ``blend`` face sizes, so the field is continuous at the mesh boundary and
  turns into the proxy's smooth shading over the hair;
* :func:`head_weight`: where the ratio applies: the person mask (the background stays exactly as
  it was), fading out beyond the head ellipse and down the neck.

:func:`apply_gain_lab` applies a gain as a change of CIE L* with the hue angle kept and the chroma
scaled less than the lightness (``chroma_follow``): a plain product of the sRGB values keeps the
chromaticity but scales chroma with lightness, so brightened skin turned orange-pink and darkened
skin went grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass
class HeadEllipse:
    centre: np.ndarray  # (2,) work pixels (x, y)
    radii: np.ndarray   # (2,) work pixels (rx, ry)
    chin_y: float       # work-pixel y of the chin (lowest mesh point)
    neck_r: float       # half width of the neck cylinder (work pixels)


def head_ellipse(person: np.ndarray, verts_xy: np.ndarray, face_px: float) -> HeadEllipse:
    """Ellipse of the head (with its hair) from the person mask above the chin, near the face.

    ``person`` (H, W) soft mask, ``verts_xy`` (V, 2) the face mesh on the same grid, ``face_px``
    the face size. Radii are clamped to [0.5, 0.95] x / [0.6, 1.05] x the face size and the centre
    to 0.3 face sizes of the mesh's centre (hair that fills the frame cannot run away with it)."""
    lo, hi = verts_xy.min(0), verts_xy.max(0)
    mc = (lo + hi) / 2
    chin = float(hi[1])
    F = max(float(face_px), 1.0)
    h, w = person.shape
    ys, xs = np.mgrid[0:h, 0:w]
    sel = (person > 0.5) & (ys + 0.5 < chin) & (np.abs(xs + 0.5 - mc[0]) < 1.1 * F) & (ys + 0.5 > mc[1] - 1.4 * F)
    if sel.sum() > 50:
        px = np.stack([xs[sel] + 0.5, ys[sel] + 0.5], 1).astype(np.float64)
        # the region is cut at the chin: the moments of the upper part give the centre's x and
        # the width; the top of the head is the mask's top, the bottom the chin
        cx = float(px[:, 0].mean())
        rx = float(2.0 * px[:, 0].std())
        top = float(np.percentile(px[:, 1], 1.0))
        ry = (chin - top) / 2
        cy = (chin + top) / 2
    else:
        cx, cy, rx, ry = float(mc[0]), float(mc[1] - 0.1 * F), 0.7 * F, 0.85 * F
    rx = float(np.clip(rx, 0.5 * F, 0.95 * F))
    ry = float(np.clip(ry, 0.6 * F, 1.05 * F))
    c = np.array([cx, cy])
    c = mc + np.clip(c - mc, -0.3 * F, 0.3 * F)
    return HeadEllipse(c, np.array([rx, ry]), chin, 0.42 * F)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def proxy_normals(e: HeadEllipse, xy: np.ndarray, face_px: float, min_z: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame normals (N, 3) (x right, y up, z to the viewer) of the head proxy at work-pixel
    positions ``xy`` (N, 2), and the normalised radius rho (N,) (1 on the ellipse's outline)."""
    u = (xy[:, 0] - e.centre[0]) / e.radii[0]
    v = (xy[:, 1] - e.centre[1]) / e.radii[1]
    # below the chin the head turns into the neck: a vertical cylinder, facing slightly down
    t = _smoothstep((xy[:, 1] - (e.chin_y - 0.1 * face_px)) / (0.3 * face_px))
    un = (xy[:, 0] - e.centre[0]) / e.neck_r
    u = (1 - t) * u + t * un
    v = (1 - t) * v + t * 0.3
    rho = np.sqrt(u * u + v * v)
    s = np.maximum(rho, 1.0)
    u, v = u / s, v / s
    z = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, 1.0))
    z = np.maximum(z, min_z)
    n = np.stack([u, -v, z], 1)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    # the neck fades sideways beyond its cylinder and downwards from 0.3 to 0.8 face sizes below
    # the chin (rho 1 -> 1.5): the shoulders and chest have no proxy
    down = 1.0 + np.maximum(xy[:, 1] - e.chin_y - 0.3 * face_px, 0.0) / face_px
    rho_head = (1 - t) * rho + t * np.maximum(np.abs(un), down)
    return n, rho_head


def luminance_shading(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Mean over RGB of the SH shading (N,) of camera-frame normals (N, 3) under ``light`` (9, 3)."""
    import torch

    from facerig.render.shading import sh_basis

    with torch.no_grad():
        s = sh_basis(torch.from_numpy(normals.astype(np.float64))) @ torch.as_tensor(light, dtype=torch.float64)
    return s.mean(-1).numpy()


def proxy_log_ratio(e: HeadEllipse, hwq: tuple[int, int], q: int, face_px: float, light_s: np.ndarray,
                    light_t: np.ndarray, clamp: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(log luminance ratio target / source at the proxy's normals, rho) on a grid of ``hwq``
    cells of ``q`` work pixels."""
    hq, wq = hwq
    ys, xs = np.mgrid[0:hq, 0:wq]
    xy = np.stack([(xs.ravel() + 0.5) * q, (ys.ravel() + 0.5) * q], 1).astype(np.float64)
    n, rho = proxy_normals(e, xy, face_px)
    st = luminance_shading(n, light_t)
    ss = luminance_shading(n, light_s)
    r = np.where(ss > 1e-3, st / np.maximum(ss, 1e-3), 1.0)
    r = np.clip(r, clamp[0], clamp[1])
    return np.log(r).reshape(hq, wq).astype(np.float32), rho.reshape(hq, wq).astype(np.float32)


def head_weight(pers_q: np.ndarray, rho: np.ndarray, dist: np.ndarray, face_px: float, edge: float = 0.06) -> np.ndarray:
    """Where the head's relight applies (hq, wq): 1 over the person inside the head/neck proxy,
    fading beyond it (rho 1 -> 1.5), and on the background only within ``edge`` face sizes of the
    mesh (the soft edge of the segmentation). Exactly 0 on the background farther away."""
    from facerig.engines.warp.field import cos_falloff

    p = np.clip((pers_q - 0.3) / 0.6, 0.0, 1.0)
    reach = cos_falloff((rho - 1.0) / 0.5)
    near = cos_falloff(dist / max(edge * face_px, 1.0))
    return (reach * (p + (1 - p) * near)).astype(np.float32)


def skin_lightness(skin_rgb: Any) -> float:
    """CIE L* (0-100) of an RGB colour in [0, 1] (the face's mean skin colour): the reference
    :func:`apply_gain_lab` keeps darker tones against."""
    c = np.clip(np.asarray(skin_rgb, np.float32).reshape(1, 1, 3), 0.0, 1.0)
    return float(cv2.cvtColor(c, cv2.COLOR_RGB2Lab)[0, 0, 0])


def dark_weight(lightness: np.ndarray, ref: float, keep: tuple[float, float] = (0.3, 0.75),
                floor: float = 0.25) -> np.ndarray:
    """Share (N,) of a brightening gain that a pixel of CIE L* ``lightness`` takes, given the face's
    skin lightness ``ref``: 1 at and above ``keep[1]`` x ``ref`` (skin, its lit and half-shadowed
    parts), easing to ``floor`` at ``keep[0]`` x ``ref`` and below (a black beard, brows, lashes,
    nostrils, the photo's own deep shadows)."""
    rel = np.asarray(lightness, np.float32) / max(float(ref), 1.0)
    t = _smoothstep((rel - keep[0]) / max(keep[1] - keep[0], 1e-6))
    return (floor + (1.0 - floor) * t).astype(np.float32)


def apply_gain_lab(image: np.ndarray, gain: np.ndarray, white: float = 1.0, chroma_follow: float = 0.5,
                   onset: tuple[float, float] = (0.11, 0.2), dark_ref: float | None = None,
                   chroma_follow_up: float | None = None, dark_floor_down: float | None = None) -> np.ndarray:
    """``image`` (H, W, 3) relit by ``gain`` (H, W, 1): the lightness is that of the
    tone-preserving product (:func:`facerig.engines.warp.field.apply_gain`), the hue angle (Lab)
    is the source's, and the chroma C* follows the change of L* only to the power
    ``chroma_follow`` (0: chroma kept; 1: chroma scales with lightness, as a plain product of sRGB
    values roughly does). The Lab result is blended in as |log gain| grows over ``onset``: gains
    within 0.9-1.1 (the mild shading changes of pose and expression edits, ``same_light_clamp``)
    stay the plain product - the two differ by a few % of chroma there, and the Lab path costs
    about six times the product per pixel, too much for every frame of a reenactment. Pixels with
    gain 1 are returned unchanged (bit-identical).

    ``dark_ref`` (the face's skin L*, :func:`skin_lightness`): a brightening gain on pixels much
    darker than the skin is reduced (:func:`dark_weight`): the SH ratio knows the mesh's smooth
    normals, not a beard's or a brow's dark albedo nor the photo's cast shadows, and lifting those
    by the skin's ratio turned a black beard grey and a dark face washed out. ``chroma_follow_up``:
    the chroma exponent where the gain brightens (default ``chroma_follow``); below
    ``chroma_follow`` the lit side of saturated (dark brown) skin turns less orange.
    ``dark_floor_down`` (with ``dark_ref``): a darkening gain is reduced the same way on tones much
    darker than the skin, down to this share (None: darkening untouched). A beard's ratio is no
    more reliable when it darkens: the photometric fit explains part of a dark beard as shadow (its
    albedo model is skin), so the ratio there swings both ways, and a beard darkened by the full
    ratio went black and lost its texture."""
    from facerig.engines.warp.field import apply_gain

    out = apply_gain(image, gain, white)
    lg = np.abs(np.log(np.maximum(gain[..., 0], 1e-6)))
    sel = lg > onset[0]
    if not sel.any() or chroma_follow >= 1.0:
        return out
    src = np.clip(image[sel].astype(np.float32) / white, 0.0, 1.0)[:, None, :]
    lab_s = cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2Lab)[:, 0]
    g_sel = gain[sel]
    if dark_ref is not None:
        g_sel = g_sel.copy()
        up = g_sel[:, 0] > 1.0
        if up.any():
            wd = dark_weight(lab_s[up, 0], dark_ref)
            g_sel[up, 0] = np.exp(np.log(g_sel[up, 0]) * wd)
        down = ~up
        if dark_floor_down is not None and down.any():
            wd = dark_weight(lab_s[down, 0], dark_ref, floor=float(dark_floor_down))
            g_sel[down, 0] = np.exp(np.log(np.maximum(g_sel[down, 0], 1e-6)) * wd)
        mul_rgb = apply_gain(image[sel][:, None, :], g_sel[:, None, :], white)[:, 0]
    else:
        mul_rgb = out[sel]
    mul = np.clip(mul_rgb.astype(np.float32) / white, 0.0, 1.0)[:, None, :]
    lab_m = cv2.cvtColor(np.ascontiguousarray(mul), cv2.COLOR_RGB2Lab)[:, 0]
    ls, lm = lab_s[:, 0], lab_m[:, 0]
    k = np.where(ls > 0.5, lm / np.maximum(ls, 0.5), 1.0)
    k = np.clip(k, 0.0, 8.0)
    f_up = chroma_follow if chroma_follow_up is None else chroma_follow_up
    k = np.where(k > 1.0, k ** f_up, k ** chroma_follow)
    lab = np.empty_like(lab_s)
    lab[:, 0] = lm
    lab[:, 1:] = lab_s[:, 1:] * k[:, None]
    rgb = cv2.cvtColor(np.ascontiguousarray(lab[:, None, :]), cv2.COLOR_Lab2RGB)[:, 0]
    a = _smoothstep((lg[sel] - onset[0]) / max(onset[1] - onset[0], 1e-6))[:, None].astype(np.float32)
    res = out.copy()
    res[sel] = out[sel] * (1 - a) + np.clip(rgb, 0.0, 1.0) * white * a
    return res


#: a face counts as bearded from this share of dark skin-region vertices below the nose (fully from
#: + 0.15); measured 2026-12-03: 5 bearded shared portraits 0.41-0.61, 6 without (one with stubble)
#: 0.05-0.20
BEARD_FRACTION = 0.25


def beard_source_shading(basis: np.ndarray, light: np.ndarray, lum: np.ndarray, lightness: np.ndarray,
                         ref: float, skin: np.ndarray, lower: np.ndarray, reg: float = 0.02
                         ) -> tuple[np.ndarray | None, float]:
    """A source luminance shading (V,) for the relight ratio of a bearded face, and its weight.

    The photometric fit's albedo is skin, so it explains a dark beard partly as shadow on the lower
    face (its shading there 0.76-0.84 of the upper face's on the shared bearded portraits): the
    ratio under a new light then lifts the whole lower face and the beard turns grey while the rest
    pays for it. Here the SH luminance (9 coefficients, regularised by ``reg`` towards the fitted
    ``light`` (9, 3)) is re-fitted to the photo's luminance ``lum`` (V,) at the visible skin-region
    vertices ``skin`` that are not much darker than the skin (``lightness`` >= 0.7 x ``ref``, L*),
    with one skin albedo. ``basis`` (V, 9): the SH basis at the vertex normals. Weight 0 (and None)
    when less than :data:`BEARD_FRACTION` of the skin vertices below the nose (``lower``) are dark
    (< 0.6 x ``ref``), 1 from that + 0.15."""
    sk_low = skin & lower
    frac = float((sk_low & (lightness < 0.6 * ref)).sum() / max(int(sk_low.sum()), 1))
    wgt = float(_smoothstep(np.array((frac - BEARD_FRACTION) / 0.15)))
    use = skin & (lightness >= 0.7 * ref)
    if wgt <= 0.0 or use.sum() < 30:
        return None, 0.0
    l0 = np.asarray(light, np.float64).mean(1)
    s0 = basis @ l0
    a = float(lum[use].mean() / max(float(s0[use].mean()), 1e-6))
    A = basis[use]
    y = lum[use] / max(a, 1e-6)
    n = float(y.size)
    coef = np.linalg.solve(A.T @ A + reg * n * np.eye(A.shape[1]), A.T @ y + reg * n * l0)
    s1 = basis @ coef
    # the same mean over the visible skin as the fit's (the exposure is the fit's)
    s1 *= float(s0[skin].mean() / max(float(s1[skin].mean()), 1e-6))
    return np.maximum(s1, 1e-3), wgt


def predicted_lightness(colours: np.ndarray, log_gain: np.ndarray, dark_ref: float | None = None,
                        dark_floor_down: float | None = None, onset: tuple[float, float] = (0.11, 0.2)) -> np.ndarray:
    """CIE L* (N,) that :func:`apply_gain_lab` gives pixels of colour ``colours`` (N, 3, [0, 1]) under
    log gains ``log_gain`` (N,): the tone-preserving product with its highlight roll-off, the
    dark-tone weights (``dark_ref``, ``dark_floor_down``) blended in over ``onset`` as there (the
    Lab path keeps the product's lightness; the blend of the two colours is taken as it is)."""
    from facerig.engines.warp.field import apply_gain_reference

    c = np.clip(np.asarray(colours, np.float32), 0.0, 1.0)
    lg = np.asarray(log_gain, np.float32)
    plain = apply_gain_reference(c[:, None, :], np.exp(lg)[:, None, None])[:, 0]
    if dark_ref is not None:
        ls = cv2.cvtColor(np.ascontiguousarray(c[:, None, :]), cv2.COLOR_RGB2Lab)[:, 0, 0]
        wd = np.where(lg > 0, dark_weight(ls, dark_ref),
                      dark_weight(ls, dark_ref, floor=float(dark_floor_down)) if dark_floor_down is not None else 1.0)
        kept = apply_gain_reference(c[:, None, :], np.exp(lg * wd)[:, None, None])[:, 0]
        a = _smoothstep((np.abs(lg) - onset[0]) / max(onset[1] - onset[0], 1e-6))[:, None]
        plain = plain * (1 - a) + kept * a
    out = np.clip(plain, 0.0, 1.0).astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(out[:, None, :]), cv2.COLOR_RGB2Lab)[:, 0, 0]


def face_exposure(ratio: Any, visible: np.ndarray, light_s: Any, light_t: Any, clamp: tuple[float, float],
                  colours: np.ndarray | None = None, dark_ref: float | None = None,
                  dark_floor_down: float | None = None, samples: int = 800) -> float:
    """Factor for the per-pixel shading ratios ``ratio`` (N,) of the face so that their geometric
    mean over the ``visible`` pixels equals the lights' own exposure change (the ratio of their mean
    frontal shading, :func:`facerig.rig.light.mean_frontal_shading`: 1 for a preset relit with the
    photo's exposure, 0.5 ** (1 / 2.2) for ``dim``).

    The exposure calibration of the presets averages over a hemisphere of normals; a real face's
    normals and a fitted light are not that average, so a side or top light made most faces darker
    (about 3-5 L* on average, up to 10 on photos lit from above), which read as a grey face.

    ``colours`` (N, 3, [0, 1]): the photo's colour at each pixel's source point. Then the factor is
    the one under which the face's mean L* as :func:`apply_gain_lab` renders it
    (:func:`predicted_lightness`, with ``dark_ref`` / ``dark_floor_down``) equals the photo's mean
    L* under the lights' exposure change alone. A geometric mean of the ratios is not that: the
    lift of bright pixels is rolled off and that of dark ones (a beard, brows) kept small, while
    their darkening was applied in full; on a bearded face, whose fitted light reads the beard as
    shadow (a ratio of 1.3-1.7 there), the skin then went 8-14 L* darker to pay for a beard that
    hardly rose. Solved on at most ``samples`` evenly spaced visible pixels (17 factors from 0.5 to 2
    in one pass, the crossing interpolated)."""
    import torch

    from facerig.rig.light import mean_frontal_shading

    r = np.clip(np.asarray(ratio, np.float64)[visible], clamp[0], clamp[1])
    if r.size < 50:
        return 1.0
    with torch.no_grad():
        want = float(mean_frontal_shading(torch.as_tensor(light_t).double()).mean()
                     / max(float(mean_frontal_shading(torch.as_tensor(light_s).double()).mean()), 1e-6))
    got = float(np.exp(np.log(r).mean()))
    if colours is None:
        return float(np.clip(want / max(got, 1e-6), 0.5, 2.0))
    rr = np.asarray(ratio, np.float64)[visible]
    col = np.asarray(colours, np.float32)[visible]
    step = max(1, rr.size // max(int(samples), 50))
    rr, col = rr[::step], col[::step]
    target = float(predicted_lightness(col, np.full(rr.shape, np.log(max(want, 1e-6)), np.float32)).mean())
    # the face's rendered mean L* on a grid of factors 0.5-2 in one pass, the crossing interpolated
    ts = np.linspace(np.log(0.5), np.log(2.0), 17)
    lg = np.log(np.clip(rr[None, :] * np.exp(ts)[:, None], clamp[0], clamp[1])).astype(np.float32)
    ml = predicted_lightness(np.tile(col, (ts.size, 1)), lg.ravel(), dark_ref, dark_floor_down)
    ml = ml.reshape(ts.size, -1).mean(1)
    if ml[0] >= target:
        return 0.5
    if ml[-1] <= target:
        return 2.0
    i = int(np.argmax(ml >= target))
    f = (target - ml[i - 1]) / max(float(ml[i] - ml[i - 1]), 1e-9)
    return float(np.exp(ts[i - 1] + f * (ts[i] - ts[i - 1])))


def head_relight(st: Any, target_params: Any, vt: np.ndarray, hwq: tuple[int, int], q: int, rim_log: np.ndarray,
                 rim_w: np.ndarray, pers_q: np.ndarray, dist: np.ndarray, clamp: tuple[float, float],
                 blend: float, segmentation: bool = True, light_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The warp engine's log relight ratio outside the mesh and its weight on the ``hwq`` grid.

    ``rim_log`` (hq, wq, 1): the mesh's log ratio on its rim cells, weighted ``rim_w``; ``pers_q``
    the (blurred) person mask, ``dist`` the distance to the mesh (work pixels), ``clamp`` the ratio
    range. The proxy's ratio (:func:`proxy_log_ratio`) plus the rim residual faded over ``blend``
    face sizes; weight :func:`head_weight` (1 at the mesh boundary: continuous there) over
    :func:`relight_mask` (``segmentation``: use the segmenter); ``light_scale`` multiplies the target
    light (:func:`face_exposure`)."""
    from facerig.engines.warp.field import cos_falloff, nearest_extend

    F = st.face_px
    ell = head_ellipse(pers_q, vt[:, :2] / q, F / q)
    light_s = st.params.light[0].detach().double().cpu().numpy()
    light_t = target_params.light[0].detach().double().cpu().numpy() * light_scale
    lp, rho = proxy_log_ratio(ell, hwq, 1, F / q, light_s, light_t, clamp)
    res = nearest_extend(rim_log - lp[..., None], rim_w, max(0.5, 0.06 * F / q))
    c = cos_falloff(dist / max(blend * F, 1.0))
    ext = lp[..., None] + res * c[..., None]
    # the segmenter's own mask, unblurred: the engine's (blurred, with an elliptical face prior)
    # reaches onto the background round the head, where a brightening ratio drew a glowing halo
    from facerig.engines.warp.field import resize

    pers = resize(relight_mask(st, segmentation), hwq, cv2.INTER_AREA)
    return ext.astype(np.float32), head_weight(pers, rho, dist, F)


def relight_mask(st: Any, use_model: bool = True) -> np.ndarray:
    """The person mask the relight is confined to (work grid, cached on the source state): the
    segmenter's own mask (:func:`facerig.engines.warp.segment.segment_person`) united with the
    face mesh's coverage; the engine's person mask when segmentation is off or unavailable."""
    cached = getattr(st, "_relight_mask", None)
    if cached is not None:
        return np.asarray(cached)
    from facerig.engines.warp.segment import segment_person

    seg = None
    if use_model:
        seg = segment_person(np.clip(np.rint(st.image * 255.0), 0, 255).astype(np.uint8))
    if seg is None:
        m = st.person.astype(np.float32)
    else:
        n = max(1, int(0.02 * st.face_px))
        cov = cv2.dilate((st.face_index >= 0).astype(np.uint8), np.ones((2 * n + 1, 2 * n + 1), np.uint8))
        m = np.maximum(seg, cov.astype(np.float32))
    # pulled in a little: the field lives on a coarser grid and is smoothed, so the weight would
    # spill a few pixels onto the background, where a brightening ratio draws a white outline
    r = max(2, int(round(0.015 * st.face_px)))
    m = cv2.erode(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    setattr(st, "_relight_mask", m)  # noqa: B010 - a cache on the engine's per-source state
    return m
