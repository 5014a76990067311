"""Fixtures for the rig tests: the builtin model and synthetic FaceParams."""

from __future__ import annotations

import math

import pytest
import torch

from facerig.morphable import load_face_model
from facerig.types import FaceParams

NEUTRAL_DC = math.sqrt(4 * math.pi)


@pytest.fixture(scope="session")
def model():
    return load_face_model("builtin")


def make_params(model, b: int = 1, camera_kind: str = "weak_perspective", seed: int | None = None,
                rotation=None) -> FaceParams:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    identity = torch.zeros(b, model.n_identity)
    if g is not None:
        identity = 0.5 * torch.randn(b, model.n_identity, generator=g)
    light = torch.zeros(b, 9, 3)
    light[:, 0] = NEUTRAL_DC
    if camera_kind == "weak_perspective":
        camera = torch.tensor([[0.08, 0.0, 0.0]]).repeat(b, 1)
    else:
        camera = torch.tensor([[0.0, 0.0, -150.0]]).repeat(b, 1)
    return FaceParams(
        model=model.name,
        identity=identity,
        expression=torch.zeros(b, model.n_expression),
        expression_names=model.expression_names,
        rotation=torch.zeros(b, 3) if rotation is None else torch.as_tensor(rotation, dtype=torch.float32),
        camera=camera,
        light=light,
        camera_kind=camera_kind,
    )


@pytest.fixture
def params(model):
    return make_params(model)


@pytest.fixture
def make(model):
    def _make(**kw):
        return make_params(model, **kw)

    return _make


def posed_landmarks(params, model):
    """World-frame (posed) landmarks (B, 478, 3) and their projection (B, 478, 3)."""
    from facerig.render.camera import pose_vertices, project

    v = model(identity=params.identity, expression=params.expression, jaw_pose=params.jaw_pose)
    world = pose_vertices(model.landmarks(v), params.rotation)
    return world, project(world, params.camera, params.camera_kind, params.focal)


def head_landmarks(params, model):
    v = model(identity=params.identity, expression=params.expression, jaw_pose=params.jaw_pose)
    return model.landmarks(v)


@pytest.fixture
def posed():
    return posed_landmarks


@pytest.fixture
def head():
    return head_landmarks
