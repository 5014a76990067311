"""Warp-engine field helpers against slow references / synthetic ground truth."""

from __future__ import annotations

import numpy as np

from facerig.engines.warp.field import nearest_extend
from facerig.engines.warp.segment import skin_likelihood


def test_nearest_extend_matches_brute_force():
    rng = np.random.default_rng(0)
    h, w = 23, 31
    weights = np.zeros((h, w), np.float32)
    pts = [(3, 4), (12, 20), (20, 7), (5, 28)]
    values = np.zeros((h, w, 2), np.float32)
    for y, x in pts:
        weights[y, x] = 1.0
        values[y, x] = rng.normal(size=2)
    out = nearest_extend(values, weights, sigma=0.0)
    ys, xs = np.mgrid[0:h, 0:w]
    d = np.stack([(ys - y) ** 2 + (xs - x) ** 2 for y, x in pts])  # slow reference
    nearest = np.argmin(d, axis=0)
    ref = np.stack([values[pts[i][0], pts[i][1]] for i in range(len(pts))])[nearest]
    ties = (np.sort(d, axis=0)[0] == np.sort(d, axis=0)[1])
    assert np.allclose(out[~ties], ref[~ties])
    # known pixels keep their value; 2-D input works; no known pixel -> zeros
    for y, x in pts:
        assert np.allclose(out[y, x], values[y, x])
    assert nearest_extend(values[..., 0], weights).shape == (h, w)
    assert not nearest_extend(values, np.zeros((h, w))).any()


def test_nearest_extend_carries_a_boundary_value_outwards_unlike_push_pull():
    from facerig.engines.warp.field import push_pull

    h, w = 64, 64
    weights = np.zeros((h, w), np.float32)
    values = np.zeros((h, w, 1), np.float32)
    weights[20, 10:54] = 1.0  # a rim whose middle moves a lot and whose ends do not
    values[20, 10:54, 0] = np.hanning(44)
    far = (45, 32)  # straight below the peak
    assert nearest_extend(values, weights)[far][0] > 0.95
    assert push_pull(values, weights)[far][0] < 0.8  # the membrane averages the whole rim


def test_skin_likelihood_separates_skin_hair_and_background():
    img = np.zeros((60, 90, 3), np.float32)
    img[:, :30] = (0.80, 0.60, 0.50)   # skin
    img[:, 30:60] = (0.12, 0.08, 0.06)  # dark hair
    img[:, 60:] = (0.25, 0.35, 0.75)   # blue background
    rng = np.random.default_rng(1)
    img = np.clip(img + rng.normal(0, 0.01, img.shape).astype(np.float32), 0, 1)
    mask = np.zeros((60, 90), bool)
    mask[10:50, 5:25] = True
    sk = skin_likelihood(img, mask)
    assert sk.shape == (60, 90) and sk.dtype == np.float32
    assert sk[:, 3:27].mean() > 0.8
    assert sk[:, 33:57].max() < 0.2 and sk[:, 63:].max() < 0.05
    assert not skin_likelihood(img, np.zeros_like(mask)).any()


def test_apply_gain_rolls_off_instead_of_clipping():
    """A brightening gain never pushes a channel past white and keeps each pixel's hue (all channels
    take one factor); a gain <= 1 (and any pixel the gain does not lift) is the plain product."""
    from facerig.engines.warp.field import apply_gain

    rng = np.random.default_rng(0)
    img = rng.uniform(0.0, 1.0, (32, 32, 3)).astype(np.float32)
    gain = rng.uniform(0.3, 3.0, (32, 32, 1)).astype(np.float32)
    out = apply_gain(img, gain)
    assert out.max() <= 1.0
    lifted = gain[..., 0] > 1
    # hue kept: the channel ratios of the plain product
    ratio = out / np.maximum(img * gain, 1e-6)
    assert np.allclose(ratio.max(2), ratio.min(2), atol=1e-5)
    np.testing.assert_allclose(out[~lifted], (img * gain)[~lifted], rtol=1e-6)
    # still a brightening, monotonic in the gain, and ~ the product for small lifts of dark pixels
    assert (out.max(2)[lifted] >= img.max(2)[lifted] - 1e-6).all()
    g = np.linspace(1.0, 4.0, 50, dtype=np.float32)[:, None, None] * np.ones((1, 1, 1), np.float32)
    px = np.full((50, 1, 3), [0.6, 0.45, 0.4], np.float32)
    m = apply_gain(px, g).max(2)[:, 0]
    assert (np.diff(m) > 0).all() and m[-1] <= 1.0
    dark = np.full((1, 1, 3), [0.1, 0.08, 0.05], np.float32)
    np.testing.assert_allclose(apply_gain(dark, np.full((1, 1, 1), 1.2, np.float32)), dark * 1.2, rtol=2e-2)
    # the white level of 8-bit images
    assert apply_gain(img * 255, gain, 255.0).max() <= 255.0


def test_warm_shadows_only_on_darkened_skin():
    """Relighting that darkens skin keeps it warm (red darkens less, blue more); grey pixels and
    pixels the light does not darken are left as they are."""
    from facerig.engines.warp.engine import _warm_shadows

    px = np.array([[[200.0, 150.0, 120.0], [120.0, 120.0, 120.0], [200.0, 150.0, 120.0]]], np.float32)
    gain = np.array([[[0.5], [0.5], [1.2]]], np.float32)
    out = _warm_shadows(px * np.minimum(gain, 1.0), gain, 0.25)
    skin, grey, lit = out[0]
    plain = px[0, 0] * 0.5
    assert skin[0] > plain[0] and skin[2] < plain[2] and abs(skin[1] - plain[1]) < 1e-4
    np.testing.assert_allclose(grey, px[0, 1] * 0.5, rtol=1e-6)
    np.testing.assert_allclose(lit, px[0, 2], rtol=1e-6)
    np.testing.assert_allclose(_warm_shadows(px, np.ones_like(gain), 0.25), px)


def test_lid_residual_moves_only_eye_contours_and_ignores_far_detections():
    """The warp's lid offsets: detected - fitted on the 32 eye-contour vertices, zero elsewhere and
    for a detection farther than 12 % of the eye distance (not a lid); None without detections or
    for a model that is not on MediaPipe's topology."""
    from types import SimpleNamespace

    from facerig.detect.landmark_sets import LEFT_EYE, RIGHT_EYE
    from facerig.engines.warp.engine import _lid_residual

    rng = np.random.default_rng(3)
    verts = np.zeros((478, 3))
    verts[:, :2] = rng.uniform(100, 300, (478, 2))
    verts[33, :2], verts[263, :2] = (150, 200), (250, 200)     # eye distance 100 (work px)
    off = np.zeros((478, 2))
    ids = list(RIGHT_EYE) + list(LEFT_EYE)
    off[ids] = 1.5                                               # 1.5 work px off on the contours
    off[159] = 30.0                                              # one detection 30 px off: not a lid
    det = (verts[:, :2] + off) * 0.5 - 5.0                       # frame px: origin (-5, -5), k = 0.5
    params = SimpleNamespace(meta={"landmarks_px": det.tolist()})
    d = _lid_residual(params, (-5, -5), 0.5, verts)
    assert d is not None and d.shape == (478, 2)
    mask = np.zeros(478, bool)
    mask[ids] = True
    assert np.allclose(d[~mask], 0.0)
    good = [i for i in ids if i != 159]
    np.testing.assert_allclose(d[good], 1.5, atol=1e-9)
    assert np.allclose(d[159], 0.0)
    assert _lid_residual(SimpleNamespace(meta={}), (0, 0), 1.0, verts) is None
    assert _lid_residual(params, (-5, -5), 0.5, verts[:100]) is None
