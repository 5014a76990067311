"""The 3D core on a CUDA device gives the CPU's results (run with FACERIG_GPU=1 on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from facerig.fit.api import float64_copy
from facerig.fit.landmark_fit import fit_landmarks
from facerig.morphable import load_face_model
from facerig.render.buffers import render_buffers
from facerig.render.camera import pose_vertices, project
from facerig.rotations import ypr_to_axis_angle
from facerig.types import FaceParams

pytestmark = pytest.mark.gpu


def _params(model, b=2):
    g = torch.Generator().manual_seed(0)
    return FaceParams(
        model="builtin",
        identity=torch.randn(b, model.n_identity, generator=g) * 0.5,
        expression=torch.rand(b, model.n_expression, generator=g) * 0.3,
        expression_names=model.expression_names,
        rotation=ypr_to_axis_angle(torch.tensor([[15.0, 5.0, 0.0], [-10.0, 0.0, 3.0]])),
        camera=torch.tensor([[0.08, 0.0, 0.5], [0.08, 0.2, 0.4]]),
        light=torch.zeros(b, 9, 3).index_fill_(1, torch.tensor([0]), 3.5449),
    )


def test_render_buffers_cuda_matches_cpu():
    model = load_face_model("builtin")
    p = _params(model)
    cpu = render_buffers(model, p, size=256)
    gpu = render_buffers(model.to("cuda"), p.to("cuda"), size=256)
    agree = (cpu.face_index == gpu.face_index.cpu()).float().mean()
    assert agree > 0.999
    both = (cpu.mask > 0) & (gpu.mask.cpu() > 0)
    assert torch.allclose(cpu.normal[both.expand_as(cpu.normal)], gpu.normal.cpu()[both.expand_as(cpu.normal)], atol=1e-4)


def test_fit_landmarks_cuda_matches_cpu():
    model = float64_copy(load_face_model("builtin"))
    p = _params(model).to(dtype=torch.float64)
    world = pose_vertices(model(p.identity, p.expression), p.rotation)
    t = project(model.landmarks(world), p.camera)
    r_cpu = fit_landmarks(model, t[..., :2], t[..., 2])
    m_gpu = float64_copy(load_face_model("builtin").to("cuda"))
    r_gpu = fit_landmarks(m_gpu, t[..., :2].cuda(), t[..., 2].cuda())
    assert torch.allclose(r_cpu.rotation, r_gpu.rotation.cpu(), atol=1e-6)
    assert torch.allclose(r_cpu.expression, r_gpu.expression.cpu(), atol=1e-5)
