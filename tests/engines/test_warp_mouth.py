"""The warp engine's mouth interior: the photo's own teeth kept, the driving frame's interior in a
reenactment (colour-matched), hue-safe and blur-matched procedural fill as the last resort."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from facerig.engines import get_engine
from facerig.engines.warp import mouth as M
from facerig.errors import InvalidInput
from facerig.rig import EditSpec


@pytest.fixture(scope="module")
def model():
    from facerig.morphable import load_face_model

    return load_face_model("builtin")


def _fit(image, model, name):
    from facerig.edit import _fit_one

    torch.set_grad_enabled(False)
    return _fit_one(image, model, "largest", name)


@pytest.fixture(scope="module")
def astro(astronaut, model):
    params = _fit(astronaut, model, "astronaut")
    eng = get_engine("warp")
    return params, eng, eng.prepare(astronaut, params, model)


@pytest.fixture(scope="module")
def hopper(grace_hopper, model):
    params = _fit(grace_hopper, model, "grace_hopper")
    eng = get_engine("warp")
    return params, eng, eng.prepare(grace_hopper, params, model)


def _target_xy(eng, st, params):
    vt, _ = eng._geometry(st.model, params, st.roi, st.k)
    xy = vt[:, :2]
    return xy + st.mouth.delta if st.mouth.delta is not None else xy


def _interior(eng, st, params, out):
    """Frame-space bool mask of the target's inner-lip polygon, eroded by a pixel."""
    xy = _target_xy(eng, st, params) * st.k + np.array(st.roi[:2])
    m = M.poly_mask(xy, M.INNER_LOOP, (0, 0, out.shape[1], out.shape[0])) > 0.5
    return cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _upper_band(img, xy, frac, n=40):
    """Luminance sampled along the upper inner lip, ``frac`` of the way to the lower lip."""
    fr = M._frame(xy)
    (uu, hu), (ul, hl) = M._profiles(xy, fr)
    u = np.linspace(0.2, 0.8, n)
    h = np.interp(u, uu, hu) + frac * (np.interp(u, ul, hl) - np.interp(u, uu, hu))
    p = fr[0][None] + (u * fr[3])[:, None] * fr[1][None] + h[:, None] * fr[2][None]
    g = img.astype(np.float32).mean(2)
    return cv2.remap(g, (p[:, 0] - 0.5).astype(np.float32)[None], (p[:, 1] - 0.5).astype(np.float32)[None],
                     cv2.INTER_LINEAR)[0]


def test_opening_keeps_the_photos_own_teeth(astro, astronaut, model):
    """The astronaut smiles with her teeth: opening the jaw moves those teeth with the upper lip (their
    pattern along the lip correlates with the source's); the procedural band did not."""
    import dataclasses

    params, eng, st = astro
    assert st.mouth is not None and st.mouth.real and st.mouth.teeth is not None
    target = EditSpec(expression={"jawOpen": 0.5}).apply(params, model)
    out = eng.render_frame(st, target, return_layers=True)
    assert eng.last_layers["mouth_kind"] == "source"
    xy_s = st.mouth.xy * st.k + np.array(st.roi[:2])
    xy_t = _target_xy(eng, st, target) * st.k + np.array(st.roi[:2])
    src_band = _upper_band(astronaut, xy_s, 0.25)
    # the same physical depth below the upper lip (the source's gap is a fraction of the target's)
    frac_t = 0.25 * M.mouth_opening(st.mouth.xy) / M.mouth_opening(_target_xy(eng, st, target))
    kept = np.corrcoef(src_band, _upper_band(out, xy_t, frac_t))[0, 1]
    synth_state = dataclasses.replace(st, mouth=dataclasses.replace(st.mouth, real=False))
    out_s = eng.render_frame(synth_state, target, return_layers=True)
    assert eng.last_layers["mouth_kind"] == "synthetic"
    band = np.corrcoef(src_band, _upper_band(out_s, xy_t, frac_t))[0, 1]
    assert kept > 0.6 and kept > band + 0.2, (kept, band)
    # and the opening is a mouth, not the teeth stretched: dark in the middle
    inner = _interior(eng, st, target, out)
    lum = out.astype(np.float64).mean(2)
    assert np.percentile(lum[inner], 30) < 0.5 * np.percentile(lum[inner], 95)


def test_reenact_takes_the_interior_from_the_driving_frame(hopper, astro, astronaut, grace_hopper, model):
    """Grace Hopper's mouth is closed; a driving frame that shows teeth gives her its interior,
    colour-matched: a blue-tinted driving frame gives (nearly) the same interior colour as the
    untinted one, not a blue mouth."""
    params_h, eng, st = hopper
    params_a = astro[0]
    target = EditSpec(expression={"jawOpen": 0.5}).apply(params_h, model)
    plain = eng.render_frame(st, target)
    out = eng.render_frame(st, target, driving_image=astronaut, driving_params=params_a, return_layers=True)
    assert eng.last_layers["mouth_kind"] == "driving"
    tint = np.clip(astronaut.astype(np.float32) * [0.75, 1.0, 1.3], 0, 255).astype(np.uint8)
    out_t = eng.render_frame(st, target, driving_image=tint, driving_params=params_a)
    inner = _interior(eng, st, target, out)
    assert inner.sum() > 50
    m, m_t, m_p = (o[inner].astype(np.float64).mean(0) for o in (out, out_t, plain))
    # most of the tint is matched away (unmatched, it would move the interior by ~m * [0.25, 0, 0.3])
    assert np.abs(m - m_t).max() < 0.6 * np.abs(m * [0.25, 0, 0.3]).max(), (m, m_t)
    assert m_t[2] <= m_t[0]  # not blue
    assert np.abs(m - m_p).max() > 5 or np.abs(out[inner].astype(float) - plain[inner]).mean() > 10
    with pytest.raises(InvalidInput, match="driving"):
        eng.render_frame(st, target, driving_image=astronaut)
    # Engine.reenact hands each driving frame and its params to render_frame
    (frame,) = list(eng.reenact(grace_hopper, params_h, [target], model, driving_frames=[astronaut],
                                driving_params=[params_a]))
    assert np.array_equal(frame, out)


def test_dark_skin_interior_is_not_blue(grace_hopper, model):
    """A dark, cool-balanced photo (the package photo darkened and shifted towards blue): the
    procedural interior's teeth and cavity stay warm (b* >= 0, red >= blue), never grey-blue."""
    dark = np.clip((grace_hopper.astype(np.float32) / 255) ** 1.8 * 255 * [0.55, 0.5, 0.52], 0, 255).astype(np.uint8)
    params = _fit(dark, model, "dark")
    eng = get_engine("warp")
    st = eng.prepare(dark, params, model)
    target = EditSpec(expression={"jawOpen": 0.5}).apply(params, model)
    out = eng.render_frame(st, target, return_layers=True)
    assert eng.last_layers["mouth_kind"] == "synthetic"
    inner = _interior(eng, st, target, out)
    px = out[inner].astype(np.float32) / 255
    lab = cv2.cvtColor(px[None], cv2.COLOR_RGB2LAB)[0]
    bright = lab[lab[:, 0] >= np.percentile(lab[:, 0], 80)]  # the teeth
    assert bright[:, 2].mean() > 2.0 and lab[:, 2].mean() > 0.0, (bright.mean(0), lab.mean(0))
    assert px[:, 2].mean() <= px[:, 0].mean()


def test_safe_colours_and_blur_estimate(astronaut):
    for skin, lip in (((0.3, 0.3, 0.42), (0.3, 0.25, 0.4)), ((0.25, 0.15, 0.1), (0.3, 0.15, 0.15)),
                      ((0.85, 0.7, 0.6), (0.8, 0.5, 0.5))):
        teeth, cav = M.safe_mouth_colours(np.array(lip, np.float32), np.array(skin, np.float32))
        lab_t = cv2.cvtColor(teeth.reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0]
        assert lab_t[2] >= 7 and teeth[2] < teeth[0] and lab_t[0] > 45
        assert cav[0] > cav[2] and cav.mean() < 0.3
    img = astronaut.astype(np.float32) / 255
    mask = np.zeros(img.shape[:2], bool)
    mask[150:300, 150:330] = True
    b0 = M.estimate_blur(img, mask)
    b3 = M.estimate_blur(cv2.GaussianBlur(img, (0, 0), 3.0), mask)
    assert b3 > b0 + 1.5 and 2.0 < b3 < 5.0, (b0, b3)
    # Lab mean/std matching moves the statistics onto the target's
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.6, (20, 20, 3)).astype(np.float32)
    b = np.clip(a * [1.2, 0.9, 0.7] + 0.1, 0, 1).astype(np.float32)
    full = np.ones((20, 20), bool)
    sa, sb = M.lab_stats(a, full), M.lab_stats(b, full)
    got = M.lab_stats(M.match_colour(a, sa, sb), full)
    assert np.abs(got[0] - sb[0]).max() < 1.0


@pytest.mark.shared_data
def test_dark_skin_portrait_interior_is_warm(model):
    """A real dark-skinned portrait with a closed mouth (shared data): the opened mouth's teeth and
    cavity are warm, not grey-blue."""
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image

    path = shared_path("data", "portraits", "pexels-unsplash", "yRpe13BHdKw.jpg")
    img = load_image(path)
    s = 768 / max(img.shape[:2])
    if s < 1:
        img = np.ascontiguousarray(cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                              interpolation=cv2.INTER_AREA))
    params = _fit(img, model, "dark-skin")
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    target = EditSpec(preset="surprised").apply(params, model)
    out = eng.render_frame(st, target, return_layers=True)
    assert eng.last_layers["mouth_kind"] in ("synthetic", "source")
    inner = _interior(eng, st, target, out)
    px = out[inner].astype(np.float32) / 255
    lab = cv2.cvtColor(px[None], cv2.COLOR_RGB2LAB)[0]
    bright = lab[lab[:, 0] >= np.percentile(lab[:, 0], 80)]
    assert bright[:, 2].mean() > 4.0 and px[:, 2].mean() <= px[:, 0].mean(), (bright.mean(0), lab.mean(0))


def _lab1(rgb):
    return cv2.cvtColor(np.clip(np.asarray(rgb, np.float32), 0, 1).reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0]


def _synthetic_mouth_xy(width=60.0, opening=22.0):
    """MediaPipe-topology vertices (478, 2) with only the lip loops placed: an open mouth of the
    given width and opening centred at (50, 40)."""
    xy = np.zeros((478, 2), np.float32)
    t = np.linspace(0, 1, len(M.UPPER_INNER))
    x = 50 - width / 2 + t * width
    bulge = np.sin(np.pi * t)
    for idx, y in ((M.UPPER_INNER, 40 - 0.2 * opening * bulge), (M.LOWER_INNER, 40 + 0.8 * opening * bulge),
                   (M.UPPER_OUTER, 40 - 0.2 * opening * bulge - 6 * bulge - 1), (M.LOWER_OUTER, 40 + 0.8 * opening * bulge + 8 * bulge + 1)):
        xy[list(idx)] = np.stack([x, y], 1)
    return xy


def test_procedural_interior_takes_the_dark_lips_colour():
    """Next to dark skin with dark lips the procedural interior is in the face's own colours: its
    shaded walls within 22 deg of the darkest lip colour's hue with at least half its chroma (20 deg,
    0.57 here; the interior before: 25 deg, 0.46; the walls go half way from the lips' mean colour),
    and the teeth band not grey (chroma >= 0.52 x the skin's: 0.59; the flat band before: 0.45)."""
    skin = np.array([0.45, 0.27, 0.17], np.float32)     # dark brown skin (L* ~ 34)
    lip = np.array([0.42, 0.24, 0.19], np.float32)
    lip_dark = np.array([0.26, 0.12, 0.09], np.float32)  # the lips' shaded fifth
    xy = _synthetic_mouth_xy()
    box = (10, 20, 90, 70)
    inner = M.poly_mask(xy, M.INNER_LOOP, box) > 0.5
    rng = np.random.default_rng(0)
    out = M.synthesize_mouth(xy, box, lip, skin, 0.0, rng, lip_dark=lip_dark)
    flat = M.synthesize_mouth(xy, box, lip, skin, 0.0, np.random.default_rng(0))
    ld, sk = _lab1(lip_dark), _lab1(skin)

    def parts(img):
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)[inner]
        lo, hi = np.percentile(lab[:, 0], [40, 85])
        walls = lab[(lab[:, 0] > lo) & (lab[:, 0] < hi)].mean(0)   # between the throat and the teeth
        teeth = lab[lab[:, 0] >= np.percentile(lab[:, 0], 90)].mean(0)
        return walls, teeth

    walls, teeth = parts(out)
    dh = (np.degrees(np.arctan2(walls[2], walls[1]) - np.arctan2(ld[2], ld[1])) + 180) % 360 - 180
    assert abs(dh) < 22.0 and np.hypot(walls[1], walls[2]) > 0.5 * np.hypot(ld[1], ld[2]), (walls, ld)
    c_skin = np.hypot(sk[1], sk[2])
    assert np.hypot(teeth[1], teeth[2]) >= 0.52 * c_skin, (teeth, sk)
    assert teeth[2] > 0 and teeth[0] > walls[0] + 15
    _, teeth_flat = parts(flat)
    assert np.hypot(teeth_flat[1], teeth_flat[2]) < np.hypot(teeth[1], teeth[2])
    # the darkest lip colour is measured from the lips' darker pixels
    img = np.zeros((4, 10, 3), np.float32)
    img[:, :8] = lip
    img[:, 8:] = lip_dark
    got = M.dark_lip_colour(img, np.ones((4, 10), bool))
    assert got is not None and np.abs(got - lip_dark).max() < 1e-5


def test_lips_pressed_past_each_other_are_not_an_opening(model):
    """mouthShrugLower / mouthPress push the lower lip up onto (and in the mesh past) the upper one:
    the opening is measured below the upper lip across the mouth's axis, so they paint no mouth
    interior (the plain 13-14 distance counted the crossing as an opening and drew a grey teeth band
    between the closed lips of deepface img10 with mouthShrugLower 0.4-0.7)."""
    from facerig.edit import _fit_one
    from facerig.io.assets import shared_dir
    from facerig.io.image import load_image

    xy = np.zeros((478, 2))
    xy[78], xy[308], xy[152] = (0, 0), (10, 0), (5, 8)
    xy[13], xy[14] = (5, 1.0), (5, -0.5)  # the lower lip 0.5 above the upper one
    assert M.mouth_opening(xy) == 0.0
    xy[14] = (5, 3.0)
    assert M.mouth_opening(xy) == pytest.approx(2.0)
    path = shared_dir() / "data" / "portraits" / "deepface" / "img10.jpg"
    if not path.is_file():
        pytest.skip("needs ../shared/data (FACERIG_SHARED)")
    torch.set_grad_enabled(False)
    img = load_image(path)
    params = _fit_one(img, model, "largest", "img10")
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    for e in ({"mouthShrugLower": 0.7}, {"mouthShrugLower": 0.4, "mouthPress_L": 0.25, "mouthPress_R": 0.25}):
        eng.render_frame(st, EditSpec(expression=e).apply(params, model), return_layers=True)
        assert eng.last_layers["mouth_weight"] == 0.0, (e, eng.last_layers["mouth_kind"])
    eng.render_frame(st, EditSpec(preset="open_mouth").apply(params, model), return_layers=True)
    assert eng.last_layers["mouth_weight"] > 0.5  # a real opening still gets its interior
