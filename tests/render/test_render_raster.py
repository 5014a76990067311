"""Rasteriser: backends agree with the slow reference, fill rule, barycentrics, gradients, normals."""

from __future__ import annotations

import pytest
import torch

from facerig.errors import InvalidInput
from facerig.render.primitives import cube, uv_sphere
from facerig.render.raster import (
    barycentrics,
    interpolate,
    numba_available,
    rasterize,
    rasterize_reference,
    vertex_normals,
    visibility,
)

FAST = ["torch"] + (["numba"] if numba_available() else [])


def _random_mesh(
    seed: int, b: int = 2, v: int = 30, f: int = 40, h: int = 24, w: int = 31, snap: bool = False
):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, v, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 2
    if snap:  # vertices on the half-pixel grid: many pixel centres exactly on edges and vertices
        xy = torch.round(xy * 2) / 2
    z = torch.randn(b, v, 1, generator=g)
    if snap:
        z = torch.round(z)  # many exact depth ties
    faces = torch.randint(0, v, (f, 3), generator=g)
    return torch.cat([xy, z], -1), faces, h, w


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("seed,snap", [(0, False), (1, True), (2, False), (3, True)])
def test_visibility_equals_reference(backend, seed, snap):
    screen, faces, h, w = _random_mesh(seed, snap=snap)
    ref = rasterize_reference(screen, faces, h, w)
    got = visibility(screen, faces, h, w, backend)
    assert (ref >= 0).float().mean() > 0.3
    assert torch.equal(got, ref)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cull", ["back", "front"])
def test_cull_equals_reference(backend, cull):
    screen, faces, h, w = _random_mesh(5)
    assert torch.equal(
        visibility(screen, faces, h, w, backend, cull), rasterize_reference(screen, faces, h, w, cull)
    )


def test_float64_and_chunked_torch_path():
    screen, faces, h, w = _random_mesh(7)
    ref = rasterize_reference(screen, faces, h, w)
    assert torch.equal(visibility(screen.double(), faces, h, w, "torch"), ref)
    from facerig.render.raster import _triangle_setup, _visibility_torch

    tab, box = _triangle_setup(screen, faces, h, w, None)
    assert torch.equal(_visibility_torch(tab, box, h, w, chunk=37), ref)


def _grid(n: int, cell: float, offset: float, flip: bool = False):
    ys, xs = torch.meshgrid(torch.arange(n + 1.0), torch.arange(n + 1.0), indexing="ij")
    verts = torch.stack(
        [xs.flatten() * cell + offset, ys.flatten() * cell + offset, torch.zeros(xs.numel())], -1
    )
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = (
                i * (n + 1) + j,
                i * (n + 1) + j + 1,
                (i + 1) * (n + 1) + j + 1,
                (i + 1) * (n + 1) + j,
            )
            faces += [(a, b, c), (a, c, d)] if not flip else [(a, c, b), (a, d, c)]
    return verts[None], torch.tensor(faces)


@pytest.mark.parametrize("backend", FAST + ["reference"])
@pytest.mark.parametrize("cell,offset", [(2.0, 0.5), (1.5, 1.0), (3.0, 2.0)])
def test_shared_edges_covered_exactly_once(backend, cell, offset):
    """Vertices on pixel centres/edges: every centre inside the grid's square is covered by exactly one
    triangle (summed over single-triangle renders), and the full render has no holes."""
    n, h = 6, 24
    screen, faces = _grid(n, cell, offset, flip=(cell == 1.5))
    count = torch.zeros(1, h, h, dtype=torch.long)
    for f in range(faces.shape[0]):
        count += (visibility(screen, faces[f : f + 1], h, h, backend) >= 0).long()
    centres = torch.arange(h) + 0.5
    lo, hi = offset, offset + n * cell
    strictly_inside = ((centres > lo) & (centres < hi))[:, None] & ((centres > lo) & (centres < hi))[None, :]
    assert count.max() <= 1
    assert bool((count[0][strictly_inside] == 1).all())
    full = visibility(screen, faces, h, h, backend)
    assert bool((full[0][strictly_inside] >= 0).all())


@pytest.mark.parametrize("backend", FAST)
def test_both_windings_rasterise(backend):
    screen = torch.tensor([[[2.0, 2.0, 0.0], [14.0, 3.0, 0.0], [5.0, 13.0, 0.0]]])
    a = visibility(screen, torch.tensor([[0, 1, 2]]), 16, 16, backend)
    b = visibility(screen, torch.tensor([[0, 2, 1]]), 16, 16, backend)
    assert (a >= 0).sum() > 30 and torch.equal(a >= 0, b >= 0)
    # (0, 2, 1) is counter-clockwise as seen on screen (y down), i.e. in the y-up world: front-facing
    assert (visibility(screen, torch.tensor([[0, 2, 1]]), 16, 16, backend, cull="back") >= 0).sum() > 30
    assert (visibility(screen, torch.tensor([[0, 1, 2]]), 16, 16, backend, cull="back") >= 0).sum() == 0
    assert (visibility(screen, torch.tensor([[0, 1, 2]]), 16, 16, backend, cull="front") >= 0).sum() > 30


def test_depth_test_nearer_wins_and_ties_go_to_lower_index():
    tri = torch.tensor([[2.0, 2.0], [14.0, 3.0], [5.0, 13.0]])
    screen = torch.cat(
        [torch.cat([tri, torch.full((3, 1), 0.0)], 1), torch.cat([tri, torch.full((3, 1), 1.0)], 1)]
    )[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    for backend in FAST + ["reference"]:
        fi = visibility(screen, faces, 16, 16, backend)
        assert set(fi.unique().tolist()) == {-1, 1}  # larger depth = nearer
        screen_tie = screen.clone()
        screen_tie[0, 3:, 2] = 0.0
        assert set(visibility(screen_tie, faces, 16, 16, backend).unique().tolist()) == {-1, 0}


def test_barycentrics_sum_to_one_and_reproduce_pixel_centres():
    screen, faces, h, w = _random_mesh(11)
    frags = rasterize(screen, faces, h, w)
    m = frags.face_index >= 0
    assert torch.allclose(frags.bary.sum(-1)[m], torch.ones(()), atol=1e-5)
    assert (frags.bary[m] >= -1e-5).all() and (frags.bary[~m] == 0).all()
    rec = interpolate(screen[..., :2], faces, frags)  # (B, 2, H, W)
    jj, ii = torch.meshgrid(torch.arange(w) + 0.5, torch.arange(h) + 0.5, indexing="xy")
    centres = torch.stack([jj, ii], 0)[None].expand(2, -1, -1, -1)
    mm = m[:, None].expand_as(rec)
    assert torch.allclose(rec[mm], centres[mm], atol=1e-3)
    assert (rec[~mm] == 0).all()
    # zbuf is the interpolated depth of the winner
    z = interpolate(screen[..., 2:], faces, frags)[:, 0]
    assert torch.allclose(z[m], frags.zbuf[m], atol=1e-5)


def test_interpolate_shapes_and_errors():
    screen, faces, h, w = _random_mesh(12)
    frags = rasterize(screen, faces, h, w)
    attr = torch.rand(30, 4)
    a = interpolate(attr, faces, frags)
    b = interpolate(attr[None].expand(2, -1, -1), faces, frags)
    assert a.shape == (2, 4, h, w) and torch.allclose(a, b)
    with pytest.raises(InvalidInput):
        interpolate(torch.rand(3, 30, 4), faces, frags)
    with pytest.raises(InvalidInput):
        rasterize(screen, faces, h, w, backend="opengl")
    with pytest.raises(InvalidInput):
        rasterize(screen[..., :2], faces, h, w)


def test_gradcheck_barycentric_interpolation():
    screen = torch.tensor(
        [[[1.3, 1.1, 0.2], [9.6, 2.2, 0.5], [3.1, 8.7, -0.1], [10.2, 9.4, 0.3]]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    fi = visibility(screen, faces, 6, 6)
    assert (fi >= 0).sum() > 10
    attr = torch.rand(1, 4, 3, dtype=torch.float64)

    def fn(s, a):
        frags = barycentrics(s, faces, fi)
        return interpolate(a, faces, frags), frags.zbuf

    assert torch.autograd.gradcheck(fn, (screen.clone().requires_grad_(), attr.requires_grad_()))


@pytest.mark.parametrize("backend", FAST)
def test_batch_items_are_independent(backend):
    screen, faces, h, w = _random_mesh(13)
    both = rasterize(screen, faces, h, w, backend)
    for i in range(2):
        one = rasterize(screen[i : i + 1], faces, h, w, backend)
        assert torch.equal(one.face_index[0], both.face_index[i])
        assert torch.allclose(one.bary[0], both.bary[i])


def test_vertex_normals_point_outwards():
    v, f = cube()
    n = vertex_normals(v[None] * 2.0, f)[0]
    assert torch.allclose(n.norm(dim=-1), torch.ones(8), atol=1e-6)
    assert ((n * v).sum(-1) > 0.5).all()
    v, f, _ = uv_sphere(12, 16)
    n = vertex_normals(v[None], f)[0]
    assert torch.allclose(n.norm(dim=-1), torch.ones(v.shape[0]), atol=1e-5)
    assert ((n * v).sum(-1) > 0.99).all()
    # differentiable
    vv = v[None].clone().requires_grad_()
    vertex_normals(vv, f)[..., 0].sum().backward()
    assert torch.isfinite(vv.grad).all() and vv.grad.abs().sum() > 0


def test_empty_inputs():
    screen = torch.zeros(1, 3, 3)
    fr = rasterize(screen, torch.zeros(0, 3, dtype=torch.long), 8, 8)
    assert (fr.face_index == -1).all() and fr.bary.shape == (1, 8, 8, 3)
    off = torch.tensor([[[-50.0, -50.0, 0.0], [-40.0, -50.0, 0.0], [-45.0, -40.0, 0.0]]])
    assert (rasterize(off, torch.tensor([[0, 1, 2]]), 8, 8).face_index == -1).all()


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_numba_parallel_and_serial_paths_agree(monkeypatch):
    import facerig.render.raster as raster

    screen, faces, h, w = _random_mesh(21, b=3)
    ref = rasterize_reference(screen, faces, h, w)
    monkeypatch.setattr(raster, "NUMBA_PARALLEL_MIN_PIXELS", 0)
    assert torch.equal(visibility(screen, faces, h, w, "numba"), ref)
    monkeypatch.setattr(raster, "NUMBA_PARALLEL_MIN_PIXELS", 1 << 40)
    assert torch.equal(visibility(screen, faces, h, w, "numba"), ref)
