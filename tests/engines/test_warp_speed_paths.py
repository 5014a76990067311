"""The warp engine's fast per-frame paths equal their slow references (speed itself is measured in
benchmarks/bench_warp.py, never asserted here)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerig.engines import get_engine
from facerig.engines.warp.engine import WarpEngine, _interpolate
from facerig.engines.warp.field import apply_gain, apply_gain_reference
from facerig.rig import EditSpec


@pytest.fixture(scope="module")
def model():
    from facerig.morphable import load_face_model

    return load_face_model("builtin")


@pytest.fixture(scope="module")
def portrait(astronaut, model):
    """A 1024 px face-filling crop of the astronaut (a reduced work grid), fitted."""
    from facerig.edit import _fit_one

    img = cv2.resize(astronaut[20:276, 110:366], (1024, 1024), interpolation=cv2.INTER_CUBIC)
    return img, _fit_one(img, model, "largest", "astronaut 1024")


@pytest.mark.parametrize("white", [1.0, 255.0])
def test_gain_kernel_equals_reference(astronaut, white):
    """apply_gain's numba pass vs the numpy reference, on a photo with gains that darken, keep and
    lift it past white (the roll-off)."""
    rng = np.random.default_rng(0)
    img = astronaut[:200, :240].astype(np.float32) / 255.0 * np.float32(white)
    gain = np.exp(rng.normal(0.0, 0.6, (200, 240, 1))).astype(np.float32)
    gain[:40] = 1.0
    ref = apply_gain_reference(img, gain, white)
    fast = apply_gain(img, gain, white)
    assert fast.dtype == np.float32 and fast.shape == img.shape
    assert (gain > 1).mean() > 0.3 and (ref >= 0.999 * white).any()  # the roll-off is exercised
    np.testing.assert_allclose(fast, ref, rtol=2e-6, atol=2e-6 * white)
    assert np.array_equal(fast[:40], ref[:40])  # gain 1: exactly the photo
    # other dtypes / shapes take the reference
    g64 = gain.astype(np.float64)
    assert np.array_equal(apply_gain(img, g64, white), apply_gain_reference(img, g64, white))


def test_raster_kernels_equal_reference(portrait, model):
    """The numba barycentrics are bit-identical to the numpy formula; the one-pass attribute
    interpolation equals np.einsum over the gathered triangles."""
    img, params = portrait
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    vt, shade_t = eng._geometry(model, EditSpec(preset="smile", yaw=8).apply(params, model), st.roi, st.k)
    fi, iy, ix, b = eng._raster_covered(vt, model.faces.long(), st.work_hw)
    assert iy.size > 1000
    faces = model.faces.long().numpy()
    ref = WarpEngine._barycentrics_reference(vt, faces, fi[iy, ix], iy, ix)
    assert np.array_equal(b, ref)
    tri = faces[fi[iy, ix]]
    table = np.concatenate([st.verts, shade_t], 1)
    np.testing.assert_allclose(_interpolate(b, tri, table), np.einsum("nk,nkc->nc", b, table[tri]),
                               rtol=1e-12, atol=1e-9)
    # the dense form used by prepare and the tests
    fi2, bary = eng._raster(vt, model.faces.long(), st.work_hw)
    assert np.array_equal(fi2, fi) and np.array_equal(bary[iy, ix], b)
    assert not bary[fi < 0].any()


def test_reused_buffers_do_not_leak_between_frames(portrait, model):
    """Frames rendered one after another on one state (scratch buffers reused) equal the same
    frames rendered on fresh states, whatever was rendered before."""
    img, params = portrait
    eng = get_engine("warp")
    targets = [EditSpec(preset="open_mouth").apply(params, model), EditSpec(yaw=10).apply(params, model),
               EditSpec(light="left").apply(params, model)]
    st = eng.prepare(img, params, model)
    eng.render_frame(st, targets[2])  # (the engine's first frame runs without the numba kernels)
    seq = [eng.render_frame(st, t) for t in targets]
    assert st.buffers  # the full-resolution compose kept its scratch arrays
    again = eng.render_frame(st, targets[0])
    for t, out in zip(targets, seq, strict=True):
        fresh = eng.render_frame(eng.prepare(img, params, model), t)
        assert np.array_equal(out, fresh)
    assert np.array_equal(again, seq[0])
    assert not np.array_equal(seq[0], seq[1])


def test_gain_layers_kernel_equals_reference():
    """The compose's work-grid layers (numba) are bit-identical to the numpy reference, with and
    without a fill."""
    from facerig.engines.warp.engine import _gain_layers

    rng = np.random.default_rng(1)
    h, w = 60, 70
    base = (rng.random((h, w, 3)) * 255).astype(np.float32)
    base[:5] = 2.0  # dark: the plain gain
    gain = np.exp(rng.normal(0, 0.3, (h, w, 1))).astype(np.float32)
    res = base * gain
    alpha = np.clip(rng.normal(0, 0.5, (h, w)), 0, 1).astype(np.float32)
    fld = rng.normal(0, 2, (h, w, 3)).astype(np.float32)
    fld[20:30] = 0.0
    alpha[20:30] = 0.0
    for filled in (False, True):
        fast = _gain_layers(res, base, gain, alpha, filled, fld, np.float32(7.5))
        ref = _gain_layers(res, base, gain, alpha, filled, fld, np.float32(7.5), fast=False)
        for a, b in zip(fast, ref, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert not fast[2][20:30].any() and fast[2][:20].all()


def test_pose_only_geometry_equals_full_geometry(portrait, model):
    """The target pose with the source's expression from the cached source model vertices equals
    the full evaluation."""
    img, params = portrait
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    tp = EditSpec(preset="smile", yaw=12, pitch=-5).apply(params, model)
    tp = tp.replace(expression=params.expression, jaw_pose=params.jaw_pose)
    full = eng._geometry(model, tp, st.roi, st.k)[0]
    assert np.array_equal(eng._pose_only(st, tp), full)
    assert np.array_equal(eng._pose_only(st, tp), full)  # (cached)


def test_first_frame_runs_the_references_and_matches(portrait, model):
    """An engine's first frame uses the numpy references (a single edit does not pay for loading
    the numba kernels), later frames the kernels: the pictures agree to a level, and the
    process-wide switch is restored after each frame."""
    from facerig.engines.warp.field import kernels_enabled

    img, params = portrait
    eng = get_engine("warp")
    st = eng.prepare(img, params, model)
    targets = [EditSpec(preset="smile").apply(params, model), EditSpec(yaw=10, light="left").apply(params, model)]
    first = [eng.render_frame(st, t) for t in targets]  # (the first one: references)
    later = [eng.render_frame(st, t) for t in targets]
    assert kernels_enabled()
    for a, b in zip(first, later, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
        assert np.mean(a != b) < 1e-3
    assert np.array_equal(first[1], later[1])  # both with the kernels


def test_mesh_blend_kernel_equals_numpy():
    from facerig.engines.warp._kernels import mesh_blend

    rng = np.random.default_rng(2)
    fld = rng.normal(0, 3, (50, 60, 3)).astype(np.float32)
    D = rng.normal(0, 3, (50, 60, 5)).astype(np.float32)
    inner, cin = (rng.random((2, 50, 60)) * (rng.random((2, 50, 60)) > 0.3)).astype(np.float32)
    ref = fld.copy()
    mb = (slice(5, 40), slice(7, 55))
    fb, Db, ib, cb = ref[mb], D[mb], inner[mb][..., None], cin[mb][..., None]
    fb[..., :2] = ib * Db[..., :2] + (1 - ib) * fb[..., :2]
    fb[..., 2:] = cb * Db[..., 2:3] + (1 - cb) * fb[..., 2:]
    mesh_blend(fld, D, inner, cin, 5, 40, 7, 55)
    assert np.array_equal(fld, ref)
