"""Synthetic ground truth for the photometric fit: render known light + albedo, fit them back."""

from __future__ import annotations

import numpy as np
import torch

from facerig.fit.photometric import diffuse_fill, fit_light, fit_photometric, split_albedo_light
from facerig.morphable import load_face_model
from facerig.render.buffers import render_buffers
from facerig.render.shading import directional_light_sh, sh_basis
from facerig.rotations import ypr_to_axis_angle
from facerig.types import CropTransform, FaceParams


def _params(model, light, albedo, yaw=10.0):
    b = 1
    crop = CropTransform(np.array([[1.0, 0, 0], [0, 1.0, 0]]), 256, (256, 256), "identity")
    return FaceParams(
        model="builtin",
        identity=torch.zeros(b, model.n_identity),
        expression=torch.zeros(b, model.n_expression),
        expression_names=model.expression_names,
        rotation=ypr_to_axis_angle(torch.tensor([[yaw, 5.0, 0.0]])),
        camera=torch.tensor([[0.085, 0.0, 0.5]]),
        light=light[None],
        albedo=albedo[None],
        crop=[crop],
    )


def test_light_round_trip_from_rendered_image():
    model = load_face_model("builtin")
    light = directional_light_sh(40.0, 25.0, intensity=1.0, ambient=0.6)
    light = light * torch.tensor([1.0, 0.95, 0.9])  # slightly warm
    albedo = torch.tensor([0.62, 0.47, 0.40]).expand(model.n_vertices, 3).clone()
    p = _params(model, light, albedo)
    with torch.no_grad():
        buf = render_buffers(model, p, size=256)
    img = buf.render[0] * buf.mask[0] + 0.3 * (1 - buf.mask[0])
    image = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    start = p.replace(light=torch.zeros(1, 9, 3), albedo=None)
    fitted, report = fit_photometric(model, start, [image])
    # the light is recovered up to the documented per-channel albedo/light scale
    for c in range(3):
        a, b = fitted.light[0, :, c], light[:, c]
        cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
        assert cos > 0.99, (c, cos)
    # and the re-render matches the image on the skin (8-bit quantisation aside)
    assert report["summary"]["mae_vertex_albedo_255"] < 3.0
    assert report["summary"]["shading_r2"] > 0.95


def test_fit_light_exact_on_noise_free_samples():
    g = torch.Generator().manual_seed(0)
    n = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    n[:, 2] = n[:, 2].abs()
    true = torch.randn(9, 3, generator=g, dtype=torch.float64) * 0.3
    true[0] = 3.0
    colors = sh_basis(n) @ true
    est = fit_light(n, colors)
    assert torch.allclose(est, true, atol=1e-3)
    albedo, light = split_albedo_light(est, n)
    assert torch.allclose((sh_basis(n) @ light).mean(0), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(albedo[None] * light, est)


def test_diffuse_fill_keeps_known_and_fills_unknown():
    model = load_face_model("builtin")
    v = torch.rand(model.n_vertices, 3)
    known = torch.rand(model.n_vertices) > 0.3
    out = diffuse_fill(v, known, model.faces)
    assert torch.allclose(out[known], v[known])
    assert out[~known].min() >= 0 and out[~known].max() <= 1
