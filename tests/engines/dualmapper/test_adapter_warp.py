"""The differentiable warp RigGenerator on a real package photo (astronaut): exact reproduction at
(w0, psi0), gradients, the direction of a smile, custom pieces gradcheck'ed in float64."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.dualmapper.adapters.warp import (
    WarpRigGenerator,
    extend_field,
    gaussian_blur,
    texture_to_tokens,
    tokens_to_texture,
)
from facerig.engines.dualmapper.generator import RigGenerator, check_generator
from facerig.errors import InvalidInput

# MediaPipe mouth corners (image left / right for a frontal face) and the chin
CORNERS = (61, 291)


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    params = _fit_one(astronaut, model, "largest", "astronaut")
    return astronaut, params, model


@pytest.fixture(scope="module")
def gen(fitted):
    image, params, model = fitted
    return WarpRigGenerator(image, params, model, size=192)


def _psi(gen, base, **values):
    psi = base.clone()
    for k, v in values.items():
        psi[0, gen.psi_names.index(k)] = v
    return psi


def test_protocol_and_exact_reproduction(gen, fitted):
    _, params, model = fitted
    assert isinstance(gen, RigGenerator)
    check_generator(gen)
    assert gen.w_shape == (16, 192) and gen.image_size == (192, 192)
    assert gen.psi_names == tuple(model.expression_names)
    w0, psi0 = gen.initial()
    assert torch.equal(psi0, params.expression.float())
    with torch.no_grad():
        out = gen.render(w0, psi0)
        lm = gen.landmarks(psi0)
    src = gen.source_image()
    assert out.shape == src.shape == (1, 3, 192, 192)
    # the face box (from the model's landmarks) and the whole image: the warp is the identity map
    lo, hi = lm[0].min(0).values.long(), lm[0].max(0).values.long()
    face = (out - src).abs()[..., lo[1]:hi[1], lo[0]:hi[0]]
    assert float(face.mean()) < 1e-4  # measured 3e-8 (brief: < 0.01)
    assert float((out - src).abs().max()) < 1e-3
    # points5: dlib coordinates of the detections, inside the face box
    p5 = gen.points5()
    assert p5.shape == (1, 5, 2)
    assert bool(((p5[0] > lo.float() - 2) & (p5[0] < hi.float() + 2)).all())


def test_gradients_reach_w_and_psi(gen):
    w0, psi0 = gen.initial()
    g = torch.Generator().manual_seed(0)
    w = (w0 + 0.01 * torch.randn(w0.shape, generator=g)).requires_grad_()
    psi = _psi(gen, psi0, jawOpen=0.4, mouthSmile_L=1.0).requires_grad_()
    out = gen.render(w, psi)
    weights = torch.rand(out.shape, generator=g)
    (out * weights).sum().backward()
    for t in (w, psi):
        assert t.grad is not None and bool(torch.isfinite(t.grad).all())
        assert float(t.grad.abs().sum()) > 0
    # the mouth coefficients, not only some: jawOpen and the smile both matter
    for name in ("jawOpen", "mouthSmile_L", "browInnerUp", "eyeBlink_L"):
        assert float(psi.grad[0, gen.psi_names.index(name)].abs()) > 0, name
    # a batch of 2 sharing one w
    with torch.no_grad():
        two = gen.render(w.detach(), torch.cat([psi0, psi.detach()]))
    assert two.shape == (2, 3, 192, 192)
    assert torch.allclose(two[1], out.detach()[0], atol=1e-5)


def _match(ref: torch.Tensor, img: torch.Tensor, centre: torch.Tensor, half: int = 6, search: int = 10):
    """Where the (2*half) patch of ``ref`` around ``centre`` sits in ``img`` (integer SSD search):
    the displacement (dx, dy)."""
    cx, cy = int(centre[0]), int(centre[1])
    patch = ref[:, cy - half: cy + half, cx - half: cx + half]
    best, arg = None, (0, 0)
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            cand = img[:, cy + dy - half: cy + dy + half, cx + dx - half: cx + dx + half]
            e = float(((cand - patch) ** 2).sum())
            if best is None or e < best:
                best, arg = e, (dx, dy)
    return torch.tensor(arg, dtype=torch.float32)


def test_smile_moves_mouth_corners_up_and_out(gen):
    w0, psi0 = gen.initial()
    a = _psi(gen, psi0, mouthSmile_L=0.0, mouthSmile_R=0.0)
    b = _psi(gen, psi0, mouthSmile_L=1.0, mouthSmile_R=1.0)
    with torch.no_grad():
        ia, ib = gen.render(w0, a)[0], gen.render(w0, b)[0]
        la, lb = gen.landmarks(a)[0], gen.landmarks(b)[0]
    left, right = CORNERS
    if la[left, 0] > la[right, 0]:
        left, right = right, left
    centre = (la[left] + la[right]) / 2
    for idx, outward in ((left, -1.0), (right, 1.0)):
        moved = lb[idx] - la[idx]
        assert float(moved[1]) < -1.0  # up (y down)
        assert float(moved[0]) * outward > 0.5  # outwards
        # the rendered pixels at the corner (the patch centred just outside it, on the skin: the
        # mouth interior moves with the upper lip) moved as the landmark did
        at = la[idx] + 0.12 * (la[idx] - centre)
        found = _match(ia, ib, at)
        assert float((found - moved).abs().max()) <= 1.5, (idx, found.tolist(), moved.tolist())


def test_jaw_open_darkens_the_mouth_and_moves_the_chin(gen):
    w0, psi0 = gen.initial()
    a = _psi(gen, psi0, jawOpen=0.0)
    b = _psi(gen, psi0, jawOpen=0.7)
    with torch.no_grad():
        ia, ib = gen.render(w0, a)[0], gen.render(w0, b)[0]
        la, lb = gen.landmarks(a)[0], gen.landmarks(b)[0]
    chin = 152
    assert float(lb[chin, 1] - la[chin, 1]) > 4.0
    # between the inner lips (13 upper, 14 lower) the opened mouth darkens (the astronaut shows her
    # teeth at jawOpen 0: they fade into the interior colour as the mouth opens)
    def mid(img, lm):
        c = ((lm[13] + lm[14]) / 2).long()
        return float(img[:, c[1] - 2: c[1] + 3, c[0] - 2: c[0] + 3].mean())

    assert mid(ib, lb) < mid(ia, la) - 0.15, (mid(ib, lb), mid(ia, la))


def test_appearance_edit_stays_on_the_face(gen):
    w0, psi0 = gen.initial()
    with torch.no_grad():
        out = gen.render(w0 + 0.2, psi0)
        base = gen.render(w0, psi0)
    diff = (out - base).abs().amax(1)[0]
    assert float(diff.max()) > 0.15
    assert float(diff[:8].max()) == 0.0 and float(diff[:, :8].max()) == 0.0  # corners untouched


def test_bad_inputs(gen, fitted):
    image, params, model = fitted
    w0, psi0 = gen.initial()
    with pytest.raises(InvalidInput, match="psi"):
        gen.render(w0, psi0[:, :5])
    with pytest.raises(InvalidInput, match="w"):
        gen.render(w0[:, :3], psi0)
    with pytest.raises(InvalidInput, match="image"):
        WarpRigGenerator(image[..., 0], params, model)
    with pytest.raises(InvalidInput, match="texture_size"):
        WarpRigGenerator(image, params, model, texture_size=30, patch=8)


def test_custom_pieces_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    disp = torch.randn(1, 2, 10, 12, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
    mask[..., 3:8, 4:9] = 1
    assert torch.autograd.gradcheck(lambda d: extend_field(d, mask, 2.0, factor=2), (disp,))
    assert torch.autograd.gradcheck(lambda d: gaussian_blur(d, 1.3), (disp,))
    # off the mask the field continues the face's displacement and decays to 0 far away
    with torch.no_grad():
        big = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
        big[..., 24:40, 24:40] = 1
        f = extend_field(torch.ones(1, 2, 64, 64, dtype=torch.float64), big, 4.0)
    assert float(f[0, 0, 32, 40]) > 0.8 and float(f[0, 0, 32, 63]) < 0.05
    tex = torch.randn(2, 3, 16, 16, generator=g)
    assert torch.equal(tokens_to_texture(texture_to_tokens(tex, 4), 4), tex)


def test_render_gradcheck_float64_small(fitted):
    image, params, model = fitted
    gen = WarpRigGenerator(image, params, model, size=24, texture_size=8, patch=4, dtype=torch.float64)
    w0, psi0 = gen.initial()
    assert w0.dtype == torch.float64
    idx = [gen.psi_names.index(n) for n in ("jawOpen", "mouthSmile_L", "browInnerUp")]
    base = psi0.clone()
    base[0, idx] = torch.tensor([0.35, 0.55, 0.7], dtype=torch.float64)
    proj = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def f(sub, dw):
        psi = base.clone()
        psi[0, idx] = sub
        return (gen.render(w0 + dw, psi) * proj).sum()

    sub = base[0, idx].clone().requires_grad_()
    dw = torch.full_like(w0, 0.01).requires_grad_()
    assert torch.autograd.gradcheck(f, (sub, dw), eps=1e-6, atol=1e-5, rtol=1e-3)


CLOSE_EYES = {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0, "eyeWide_L": 0.0, "eyeWide_R": 0.0, "eyeSquint_L": 0.0,
              "eyeSquint_R": 0.0, "eyeLookUp_L": 0.0, "eyeLookUp_R": 0.0, "eyeLookDown_L": 0.0, "eyeLookDown_R": 0.0}


def test_closed_eyes_close_on_the_photo(gen):
    w0, psi0 = gen.initial()
    closed = _psi(gen, psi0, **CLOSE_EYES)
    with torch.no_grad():
        src, out = gen.source_image()[0], gen.render(w0, closed)[0]
        l0, l1 = gen.landmarks(psi0)[0], gen.landmarks(closed)[0]
    for up, lo in ((159, 145), (386, 374)):
        gap0, gap1 = float((l0[up] - l0[lo]).norm()), float((l1[up] - l1[lo]).norm())
        assert gap0 > 4.0  # open on the photo
        # the lid gains scale the model's closing to the photo's own gap (the source's other
        # coefficients, e.g. cheekPuff, keep the model's lids a little apart): measured 1.5 of 7.2 px
        assert gap1 < 0.3 * gap0, (gap0, gap1)
        c = ((l0[up] + l0[lo]) / 2).long()
        patch = (slice(None), slice(c[1] - 2, c[1] + 3), slice(c[0] - 3, c[0] + 4))
        assert float((out[patch] - src[patch]).abs().mean()) > 0.08  # the iris is covered


def test_raised_brows_move_up_with_their_pixels(gen):
    w0, psi0 = gen.initial()
    a = _psi(gen, psi0, browInnerUp=0.0, browOuterUp_L=0.0, browOuterUp_R=0.0)
    b = _psi(gen, psi0, browInnerUp=1.0, browOuterUp_L=1.0, browOuterUp_R=1.0)
    with torch.no_grad():
        ia, ib = gen.render(w0, a)[0], gen.render(w0, b)[0]
        la, lb = gen.landmarks(a)[0], gen.landmarks(b)[0]
    for idx in (105, 334):  # MediaPipe: the middle of each brow
        moved = lb[idx] - la[idx]
        assert float(moved[1]) < -2.0
        found = _match(ia, ib, la[idx])
        assert float((found - moved).abs().max()) <= 1.5, (idx, found.tolist(), moved.tolist())


def test_second_package_photo_grace_hopper(grace_hopper):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    params = _fit_one(grace_hopper, model, "largest", "grace_hopper")
    gen = WarpRigGenerator(grace_hopper, params, model, size=128)
    check_generator(gen)
    w0, psi0 = gen.initial()
    opened = _psi(gen, psi0, jawOpen=0.7)
    with torch.no_grad():
        assert float((gen.render(w0, psi0) - gen.source_image()).abs().mean()) < 1e-4
        l0, l1 = gen.landmarks(psi0)[0], gen.landmarks(opened)[0]
    assert float(l1[152, 1] - l0[152, 1]) > 2.0  # the chin drops (128 px crop)


def test_appearance_latent_is_laid_out_in_the_model_uv(gen, fitted):
    """A bright texel block at the UV of the nose tip shows up on the rendered nose tip."""
    _, _, model = fitted
    w0, psi0 = gen.initial()
    t = gen.texture_size
    u, v = (float(x) for x in model.uv[4])  # MediaPipe 4: the nose tip
    col, row = int(u * t), int((1 - v) * t)  # v up in the UV layout
    tex = tokens_to_texture(torch.zeros_like(w0), gen.patch)
    tex[:, :, row - 1: row + 2, col - 1: col + 2] = 0.5
    with torch.no_grad():
        out = gen.render(w0 + texture_to_tokens(tex, gen.patch), psi0)
        tip = gen.landmarks(psi0)[0, 4]
    diff = (out - gen.source_image()).abs().sum(1)[0]
    ys, xs = torch.nonzero(diff > 0.05, as_tuple=True)
    assert ys.numel() > 4
    centre = torch.stack([xs.float().mean(), ys.float().mean()]) + 0.5
    assert float((centre - tip).norm()) < 0.04 * gen.size, (centre.tolist(), tip.tolist())
