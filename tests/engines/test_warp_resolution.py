"""Warp engine at a bounded face resolution (``face_res``): the work grid does not grow with the
photo beyond the face, the full-resolution paste-back keeps the photo's own pixels outside the
edit and its detail inside (speed itself is measured in benchmarks/bench_warp.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerig.engines import get_engine
from facerig.errors import InvalidInput
from facerig.rig import EditSpec


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d[mask].mean() if mask is not None else d.mean()
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def model():
    from facerig.morphable import load_face_model

    return load_face_model("builtin")


@pytest.fixture(scope="module")
def portraits(astronaut, model):
    """A face-filling crop of the astronaut at 1024 px and the same crop downscaled to 512 px, each
    fitted: (image, params) per side."""
    from facerig.edit import _fit_one

    crop = astronaut[20:276, 110:366]  # the face fills ~2/3 of the side
    out = {}
    for side in (1024, 512):
        img = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        out[side] = (img, _fit_one(img, model, "largest", f"astronaut {side}"))
    return out


@pytest.mark.parametrize("bad", [10, 63, 5000, -1, 2.5, "256", True, None])
def test_face_res_is_validated(bad):
    with pytest.raises(InvalidInput, match="face_res"):
        get_engine("warp", face_res=bad)


@pytest.mark.parametrize("bad", [0, 16, 1.5, "768"])
def test_work_size_is_validated(bad):
    with pytest.raises(InvalidInput, match="work_size"):
        get_engine("warp", work_size=bad)


def test_face_res_options_accepted():
    assert get_engine("warp").opts.face_res == 256
    assert get_engine("warp", face_res=0).opts.face_res == 0
    assert get_engine("warp", face_res=128).opts.face_res == 128


def test_work_grid_is_bounded_by_the_face(portraits, model):
    """The 1024 px portrait and its 512 px copy (faces of ~400 and ~200 px) are worked on the same
    grid (the cost does not follow the photo's resolution), with the face at face_res px; a face
    smaller than face_res stays at native resolution; without the bound the large one's grid is
    the 768 px cap."""
    eng = get_engine("warp", face_res=160)
    st = {s: eng.prepare(img, p, model) for s, (img, p) in portraits.items()}
    for s in (1024, 512):
        assert st[s].face_px == pytest.approx(160, abs=1.0)
    (h1, w1), (h2, w2) = st[1024].work_hw, st[512].work_hw
    assert abs(h1 - h2) <= 0.03 * h2 and abs(w1 - w2) <= 0.03 * w2
    assert max(h1, w1) < 512
    native = get_engine("warp").prepare(*portraits[512], model)  # face < 256 px: not reduced
    assert native.k == pytest.approx(1.0) and native.frame_up is None
    old = get_engine("warp", face_res=0).prepare(*portraits[1024], model)
    assert max(old.work_hw) == 768 and old.face_px > 2 * st[1024].face_px


def test_supersampled_source_keeps_the_photos_pixels(portraits, model):
    img, params = portraits[1024]
    st = get_engine("warp").prepare(img, params, model)
    assert st.frame_up is not None and st.up_scale == 3
    ox, oy = st.up_origin
    s = st.up_scale
    sub = st.frame_up[::s, ::s, :3]
    assert np.array_equal(sub, img[oy:oy + sub.shape[0], ox:ox + sub.shape[1]])


@pytest.mark.parametrize("spec", [EditSpec(preset="smile"), EditSpec(yaw=12), EditSpec(light="left")],
                         ids=["smile", "yaw12", "light_left"])
def test_large_photo_output_and_background(portraits, model, spec):
    """Output size and dtype are the photo's; where the edit does not reach (displacement, gain
    and fill exactly neutral on the work grid) the photo's pixels are kept bit for bit; the face
    changes."""
    img, params = portraits[1024]
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    out = eng.render_frame(st, spec.apply(params, model), return_layers=True)
    assert out.shape == img.shape and out.dtype == np.uint8
    fld, alpha = eng.last_layers["field"], eng.last_layers["alpha"]
    neutral = (np.abs(fld).max(2) == 0) & (alpha == 0)
    # neutral work pixels whose 5x5 neighbourhood is neutral too -> their frame pixels
    neutral = cv2.erode(neutral.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    x0, y0, x1, y1 = st.roi
    full = np.ones(img.shape[:2], bool)
    full[y0:y1, x0:x1] = cv2.resize(neutral.astype(np.uint8), (x1 - x0, y1 - y0),
                                    interpolation=cv2.INTER_NEAREST) > 0
    assert full.mean() > 0.02  # (some background is far enough from the face)
    assert np.array_equal(out[full], img[full])
    assert not np.array_equal(out, img)


def test_large_photo_matches_its_downscaled_copy(portraits, model):
    """The 1024 px render downscaled matches the 512 px render of the downscaled photo (same work
    grid, same fields): the resolution policy gives consistent results whatever the photo size."""
    eng = get_engine("warp")
    outs = {}
    for s, (img, p) in portraits.items():
        outs[s] = eng.render_frame(eng.prepare(img, p, model), EditSpec(preset="smile").apply(p, model))
    small = cv2.resize(outs[1024], (512, 512), interpolation=cv2.INTER_AREA)
    ref = cv2.resize(portraits[1024][0], (512, 512), interpolation=cv2.INTER_AREA)
    # the edit is there at both sizes, and agrees
    assert _psnr(outs[512], portraits[512][0]) < 40
    assert _psnr(small, outs[512]) > 30
    assert _psnr(small, outs[512]) > _psnr(ref, outs[512]) + 3


def test_reduced_grid_matches_native_grid(portraits, model):
    """The default face_res vs the old settings (no face bound: a 768 px grid) on the 1024 px
    portrait: the same edit, the same sharpness (Laplacian variance of the face; a native 1024 px
    grid scores higher still, from the rasterised mesh's stair-stepped outline, not detail)."""
    img, params = portraits[1024]
    target = EditSpec(preset="smile").apply(params, model)
    a = get_engine("warp", face_res=0)
    b = get_engine("warp")
    out_a = a.render_frame(a.prepare(img, params, model), target)
    out_b = b.render_frame(b.prepare(img, params, model), target)
    assert _psnr(out_a, out_b) > 35

    def sharp(x: np.ndarray) -> float:
        g = cv2.cvtColor(x[300:800, 250:780], cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.var(cv2.Laplacian(g, cv2.CV_32F)))

    assert sharp(out_b) > 0.93 * sharp(out_a)


def test_identity_edit_on_large_photo(portraits, model):
    img, params = portraits[1024]
    eng = get_engine("warp")
    out = eng.render_frame(eng.prepare(img, params, model), params)
    assert _psnr(out, img) > 35


@pytest.mark.parametrize("scale", [1, 2])
def test_supersampling_factors_agree(portraits, model, scale):
    """Regions too large for the 3x copy (2x above 2.5 Mpx, bicubic lookups above 6 Mpx) give the
    same picture."""
    img, params = portraits[1024]
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    target = EditSpec(preset="open_mouth", yaw=8).apply(params, model)
    ref = eng.render_frame(st, target)
    st.frame_up, st.up_scale, st.up_origin = eng._supersample(img, st.roi, scale)
    assert st.up_scale == scale
    out = eng.render_frame(st, target)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _psnr(out, ref) > 38
