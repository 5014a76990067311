"""render_buffers on a toy sphere face model: conventions, spaces, batching, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facerig.errors import InvalidInput
from facerig.render import camera as cam
from facerig.render.buffers import render_buffers
from facerig.render.primitives import SphereFaceModel
from facerig.render.raster import visibility
from facerig.render.shading import directional_light_sh
from facerig.types import BUFFER_NAMES, CropTransform, FaceParams

MODEL = SphereFaceModel(n_lat=12, n_lon=16)


def make_params(b: int = 1, kind: str = "weak_perspective", seed: int = 0, light=None, **kw) -> FaceParams:
    g = torch.Generator().manual_seed(seed)
    if kind == "weak_perspective":
        camera = torch.tensor([[0.7, 0.05, -0.02]]).repeat(b, 1)
    else:
        camera = torch.tensor([[0.1, -0.05, -20.0]]).repeat(b, 1)
    if light is None:
        light = directional_light_sh(30, 20, 1.0, 0.3)
    return FaceParams(
        model=MODEL.name,
        identity=0.5 * torch.randn(b, 2, generator=g),
        expression=torch.rand(b, 3, generator=g),
        expression_names=MODEL.expression_names,
        rotation=0.2 * torch.randn(b, 3, generator=g),
        camera=camera,
        light=light[None].repeat(b, 1, 1) if light.ndim == 2 else light,
        camera_kind=kind,
        **kw,
    )


def _crop(frame_hw=(90, 110), size=128, scale=1.4, angle_deg=12.0) -> CropTransform:
    a = math.radians(angle_deg)
    lin = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre_f = np.array([frame_hw[1] / 2 + 3.3, frame_hw[0] / 2 - 2.1])
    t = np.array([size / 2, size / 2]) - lin @ centre_f
    return CropTransform(np.concatenate([lin, t[:, None]], 1), size, frame_hw)


@pytest.mark.parametrize("kind", ["weak_perspective", "perspective"])
def test_buffers_conventions(kind):
    p = make_params(kind=kind)
    rb = render_buffers(MODEL, p, size=64)
    assert rb.space == "crop"
    for name in BUFFER_NAMES:
        t = getattr(rb, name)
        assert t.shape[0] == 1 and t.shape[-2:] == (64, 64) and t.dtype == torch.float32, name
        assert torch.isfinite(t).all(), name
    assert rb.normal.shape[1] == 3 and rb.uv.shape[1] == 2 and rb.regions.shape[1] == 3
    assert rb.region_names == MODEL.region_names
    m = rb.mask[:, 0] > 0
    assert 0.15 < m.float().mean() < 0.8
    assert torch.equal(m, rb.face_index >= 0)
    # background zero everywhere
    for name in (
        "normal",
        "normal_camera",
        "albedo",
        "shading",
        "render",
        "depth",
        "uv",
        "regions",
        "depth_raw",
    ):
        t = getattr(rb, name)
        assert (t.permute(1, 0, 2, 3)[:, ~m] == 0).all(), name
    n = rb.normal.permute(0, 2, 3, 1)[m]
    assert torch.allclose(n.norm(dim=-1), torch.ones(()), atol=1e-4)
    assert (n[:, 2] > -0.35).float().mean() > 0.97  # visible surface faces the viewer (+z) up to silhouettes
    assert torch.allclose(rb.normal_camera, rb.normal * torch.tensor([1.0, -1.0, -1.0])[:, None, None])
    assert torch.allclose(rb.render, rb.albedo * rb.shading)
    d = rb.depth[:, 0][m]
    assert d.min() == 0 and d.max() == 1
    # depth 1 = nearest: the depth and depth_raw orders agree
    dr = rb.depth_raw[:, 0][m]
    assert dr[d.argmax()] == dr.max()
    # regions: one-hot on covered pixels
    assert torch.equal(rb.regions.sum(1), rb.mask[:, 0])
    assert (rb.regions.flatten(2).sum(-1) > 0).all()
    assert 0 <= rb.uv.min() and rb.uv.max() <= 1
    # a closed mesh seen from outside: culling back faces changes nothing but silhouette ties
    world = cam.pose_vertices(MODEL(p.identity, p.expression, p.jaw_pose), p.rotation)
    ndc = cam.project(world, p.camera, p.camera_kind, p.focal)
    screen = torch.cat([cam.ndc_to_pixels(ndc[..., :2], 64), ndc[..., 2:] * 32], -1)
    culled = visibility(screen, MODEL.faces, 64, 64, cull="back")
    assert (culled != rb.face_index).float().mean() < 0.01


def test_dc_light_gives_constant_shading_and_directional_light_side():
    dc = torch.zeros(9, 3)
    dc[0] = torch.tensor([1.0, 0.8, 0.6])
    p = make_params(light=dc)
    p = p.replace(identity=torch.zeros(1, 2), expression=torch.zeros(1, 3))  # unit sphere
    rb = render_buffers(MODEL, p, size=64)
    m = rb.mask[0, 0] > 0
    s = rb.shading[0][:, m]
    assert torch.allclose(s, (dc[0] / math.sqrt(4 * math.pi))[:, None].expand_as(s), atol=1e-6)
    p = p.replace(light=directional_light_sh(90, 0)[None], rotation=torch.zeros(1, 3))
    rb = render_buffers(MODEL, p, size=64)
    s = rb.shading[0, 0][m]
    nx = rb.normal[0, 0][m]
    assert nx[s.argmax()] > 0.8
    assert s[nx > 0.5].mean() > s[nx < -0.5].mean() + 0.5


def test_albedo_sources():
    p = make_params()
    rb = render_buffers(MODEL, p, size=48)
    v = MODEL.n_vertices
    rb_v = render_buffers(MODEL, p.replace(albedo=torch.full((1, v, 3), 0.25)), size=48)
    m = rb_v.mask[0, 0] > 0
    assert torch.allclose(rb_v.albedo[0][:, m], torch.full((), 0.25))
    assert not torch.allclose(rb.albedo, rb_v.albedo)
    # a texture whose colour is its own (u, v): sampled albedo reproduces the uv buffer
    t = 64
    u = (torch.arange(t) + 0.5) / t
    tex = torch.stack([u[None].expand(t, t), (1 - u)[:, None].expand(t, t), torch.zeros(t, t)])[None]
    rb_t = render_buffers(MODEL, p.replace(texture=tex), size=48)
    interior = m & (rb_t.uv[0, 0] > 0.1) & (rb_t.uv[0, 0] < 0.9)
    assert torch.allclose(rb_t.albedo[0, :2][:, interior], rb_t.uv[0][:, interior], atol=2e-3)


def test_batch_of_two_equals_singles():
    pa, pb = make_params(seed=1), make_params(seed=2)
    both = render_buffers(MODEL, FaceParams.cat([pa, pb]), size=48)
    for i, p in enumerate((pa, pb)):
        one = render_buffers(MODEL, p, size=48)
        for name in (*BUFFER_NAMES, "depth_raw", "bary"):
            assert torch.allclose(getattr(one, name)[0], getattr(both, name)[i], atol=1e-5), name
        assert torch.equal(one.face_index[0], both.face_index[i])


@pytest.mark.parametrize("kind", ["weak_perspective", "perspective"])
def test_frame_render_equals_warped_crop_render(kind):
    crop = _crop()
    p = make_params(kind=kind, crop=[crop])
    rc = render_buffers(MODEL, p, size=crop.size, space="crop")
    rf = render_buffers(MODEL, p, space="frame")
    h, w = crop.frame_size
    assert rf.space == "frame" and rf.normal.shape == (1, 3, h, w)
    # sample the crop render at the crop position of every frame pixel centre
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    q = torch.from_numpy(crop.apply(torch.stack([xs, ys], -1).numpy())).float()
    grid = (q / crop.size * 2 - 1)[None]
    m_c = F.grid_sample(rc.mask, grid, mode="nearest", align_corners=False)[0, 0] > 0
    m_f = rf.mask[0, 0] > 0
    differ = (m_c != m_f).sum().item()
    perimeter = 2 * math.pi * math.sqrt(m_f.sum().item() / math.pi)
    assert m_f.sum() > 500 and differ < 0.5 * perimeter  # only silhouette pixels may differ
    full = F.grid_sample(rc.mask, grid, mode="bilinear", align_corners=False)[0, 0] > 0.999
    interior = full & m_f & (rf.normal[0, 2] > 0.4)  # away from the rim, where buffers vary fastest
    for name in ("normal", "albedo", "shading", "uv"):
        warped = F.grid_sample(getattr(rc, name), grid, mode="bilinear", align_corners=False)[0]
        err = (warped[:, interior] - getattr(rf, name)[0][:, interior]).abs()
        assert err.quantile(0.99) < 0.01 and err.max() < 0.03, name
    warped = F.grid_sample(rc.depth_raw, grid, mode="bilinear", align_corners=False)[0, 0]
    derr = (warped[interior] / crop.scale - rf.depth_raw[0, 0][interior]).abs()
    tol = 0.3 + 1e-3 * rf.depth_raw[0, 0][interior].abs()  # bilinear warp across facet kinks (< 1/4 px)
    assert (derr < tol).float().mean() > 0.99 and (derr < 2 * tol).all()


def test_frame_errors():
    p = make_params()
    with pytest.raises(InvalidInput, match="space"):
        render_buffers(MODEL, p, space="frame")
    with pytest.raises(InvalidInput, match="space"):
        render_buffers(MODEL, p, space="world")
    p2 = FaceParams.cat([make_params(crop=[_crop()]), make_params(crop=[_crop(frame_hw=(80, 80))])])
    with pytest.raises(InvalidInput, match="space"):
        render_buffers(MODEL, p2, space="frame")
    p3 = FaceParams.cat([make_params(crop=[_crop()]), make_params(crop=[_crop(scale=1.1, angle_deg=-5)])])
    rb = render_buffers(MODEL, p3, space="frame")
    assert rb.mask.shape == (2, 1, 90, 110)


def test_gradients_reach_vertices_albedo_light_camera():
    p = make_params(kind="perspective")
    v = MODEL(p.identity, p.expression, p.jaw_pose).detach().requires_grad_()
    albedo = MODEL.default_albedo[None].clone().requires_grad_()
    light = p.light.clone().requires_grad_()
    camera = p.camera.clone().requires_grad_()
    p = p.replace(albedo=albedo, light=light, camera=camera)
    rb = render_buffers(MODEL, p, size=48, vertices=v)
    g = torch.Generator().manual_seed(0)
    loss = sum(
        (getattr(rb, n) * torch.rand(getattr(rb, n).shape, generator=g)).sum()
        for n in ("render", "normal", "depth", "depth_raw", "uv")
    )
    loss.backward()
    for name, t in (("vertices", v), ("albedo", albedo), ("light", light), ("camera", camera)):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_float64_and_backends_agree():
    p = make_params(kind="perspective")
    a = render_buffers(MODEL, p, size=40, backend="torch")
    b = render_buffers(MODEL, p, size=40, backend="auto")
    assert torch.equal(a.face_index, b.face_index)
    c = render_buffers(MODEL.double(), p.to(dtype=torch.float64), size=40)
    MODEL.float()
    assert c.render.dtype == torch.float64
    assert torch.allclose(c.render.float(), a.render, atol=1e-4)
