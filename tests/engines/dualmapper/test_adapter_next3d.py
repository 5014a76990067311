"""The Next3D adapter: absent code/weights give AssetMissing with an install hint; the protocol shape
with a FAKE Next3D injected in sys.modules (no claim that the real Next3D runs here)."""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn

from facerig.engines.dualmapper.adapters import build_generator
from facerig.engines.dualmapper.adapters.next3d import Next3DGenerator, load_next3d
from facerig.engines.dualmapper.generator import check_generator
from facerig.errors import AssetMissing, InvalidInput


@pytest.fixture(scope="module")
def model():
    from facerig.morphable import load_face_model

    return load_face_model("builtin")


class FakeG(nn.Module):
    """The surface of Next3D's TriPlaneGenerator that the adapter uses, with a differentiable toy
    image of ws and the vertices."""

    z_dim, w_dim, num_ws, img_resolution = 16, 8, 4, 24
    rendering_kwargs = {"avg_camera_pivot": [0.0, 0.0, 0.0], "avg_camera_radius": 2.7}
    load_lms = True

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(self.z_dim + 25, self.num_ws * self.w_dim)
        self.seen_v: list[tuple[int, ...]] = []

    def mapping(self, z, c, truncation_psi=1.0, truncation_cutoff=None):
        return self.lin(torch.cat([z, c], 1)).reshape(-1, self.num_ws, self.w_dim) * truncation_psi

    def synthesis(self, ws, c, v, noise_mode="random"):
        self.seen_v.append(tuple(v.shape))
        b, r = ws.shape[0], self.img_resolution
        ramp = torch.linspace(-1, 1, r)
        base = ramp[None, None, :, None] * ramp[None, None, None, :]
        code = ws.mean(1)[:, :3, None, None] + v[:, :, :3].mean(1)[:, :, None, None]
        return {"image": torch.tanh(base + code).expand(b, 3, r, r)}


def _look_at_sample(h, v, pivot, radius=1.0, device="cpu"):
    """A camera on +z at ``radius`` looking at the pivot (OpenCV axes: x right, y down, z forward)."""
    assert math.isclose(h, math.pi / 2) and math.isclose(v, math.pi / 2)
    m = torch.eye(4)
    m[:3, :3] = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    m[:3, 3] = pivot + torch.tensor([0.0, 0.0, radius])
    return m[None]


@pytest.fixture
def fake_next3d(monkeypatch, tmp_path):
    repo = tmp_path / "Next3D"
    repo.mkdir()
    pkl = tmp_path / "next3d.pkl"
    pkl.write_bytes(b"not read by the fake")
    g = FakeG()
    legacy = types.ModuleType("legacy")
    legacy.load_network_pkl = lambda f: {"G_ema": g}  # type: ignore[attr-defined]
    cam = types.ModuleType("camera_utils")
    cam.LookAtPoseSampler = types.SimpleNamespace(sample=_look_at_sample)  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "legacy", legacy)
    monkeypatch.setitem(__import__("sys").modules, "camera_utils", cam)
    monkeypatch.setattr(__import__("sys"), "path", list(__import__("sys").path))
    return repo, pkl, g


def test_absent_next3d_is_asset_missing(monkeypatch, tmp_path, model):
    monkeypatch.delenv("FACERIG_NEXT3D_REPO", raising=False)
    monkeypatch.delenv("FACERIG_NEXT3D_PKL", raising=False)
    with pytest.raises(AssetMissing, match="Next3D code.*clone https://github.com/MrTornado24/Next3D"):
        build_generator("next3d", None, None, model)
    with pytest.raises(AssetMissing, match="Next3D code"):
        load_next3d(tmp_path / "absent", tmp_path / "g.pkl")
    (tmp_path / "repo").mkdir()
    with pytest.raises(AssetMissing, match="pickle"):
        load_next3d(tmp_path / "repo", tmp_path / "g.pkl")
    monkeypatch.setenv("FACERIG_NEXT3D_REPO", str(tmp_path / "repo"))
    with pytest.raises(AssetMissing, match="pickle"):
        build_generator("next3d", None, None, model)


def test_pickle_needs_explicit_trust(fake_next3d):
    repo, pkl, _ = fake_next3d
    with pytest.raises(InvalidInput, match="trust_pickle"):
        load_next3d(repo, pkl)


def test_protocol_with_a_fake_next3d(fake_next3d, model):
    repo, pkl, g = fake_next3d
    gen = build_generator("next3d", None, None, model, repo=str(repo), network=str(pkl), trust_pickle=True)
    assert isinstance(gen, Next3DGenerator)
    check_generator(gen)
    assert gen.w_shape == (4, 8) and gen.image_size == (24, 24)
    assert gen.psi_names == tuple(model.expression_names)  # builtin: no jaw joint
    # vertices + the model's landmarks appended (load_lms), as the released synthesis splits them
    assert g.seen_v[-1] == (1, model.n_vertices + model.landmark_index.numel(), 3)
    w0, psi0 = gen.initial()
    w = w0.clone().requires_grad_()
    psi = psi0.clone().requires_grad_()
    out = gen.render(w, psi)
    assert out.shape == (1, 3, 24, 24)
    assert torch.allclose(out.detach(), gen.source_image(), atol=1e-6)
    out.sum().backward()
    assert float(w.grad.abs().sum()) > 0 and float(psi.grad.abs().sum()) > 0
    # the camera projects the head-frame origin to the image centre, the landmarks differentiably
    centre = gen.project(torch.zeros(1, 1, 3))
    assert torch.allclose(centre, torch.tensor([[[12.0, 12.0]]]), atol=1e-4)
    lm = gen.landmarks(psi0)
    assert lm.shape == (1, model.landmark_index.numel(), 2) and bool(torch.isfinite(lm).all())
    assert gen.points5().shape == (1, 5, 2)
