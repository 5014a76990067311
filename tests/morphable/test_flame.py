"""The flame tier on a synthetic FLAME-shaped file (real format), plus real-FLAME checks (marker flame)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.errors import AssetMissing, InvalidInput
from facerig.io.assets import shared_path
from facerig.morphable import load_face_model
from facerig.morphable.flame import FLAME_REGION_NAMES, FLAMEFaceModel, read_flame_file
from facerig.morphable.lbs import pose_features
from facerig.rotations import axis_angle_to_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from flame_fixture import write_synthetic_flame  # noqa: E402

AUX = shared_path("assets", "flame-aux")
needs_aux = pytest.mark.skipif(AUX is None, reason="shared flame-aux folder absent")


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flame")
    fields = write_synthetic_flame(d / "generic_model.pkl")
    write_synthetic_flame(d / "generic_model.npz")
    return d, fields


@pytest.fixture(scope="module")
def model(flame_files):
    d, _ = flame_files
    if AUX is None:
        return FLAMEFaceModel.load(d / "generic_model.pkl", aux_dir=d, require_aux=False)
    return FLAMEFaceModel.load(d / "generic_model.pkl")


def test_buffers(model, flame_files):
    _, fields = flame_files
    assert model.name == "flame" and model.units == "m" and model.has_jaw_joint
    assert model.expression_range is None
    assert model.n_vertices == 5023 and model.n_identity == 100 and model.n_expression == 50
    assert model.expression_names[:2] == ("exp000", "exp001") and len(model.expression_names) == 50
    np.testing.assert_allclose(model.mean.numpy(), fields["v_template"], atol=1e-7)
    np.testing.assert_allclose(model.identity_basis[7].numpy(), fields["shapedirs"][:, :, 7], atol=1e-9)
    np.testing.assert_allclose(model.expression_basis[3].numpy(), fields["shapedirs"][:, :, 303], atol=1e-9)
    assert model.posedirs.shape == (36, 5023 * 3)
    np.testing.assert_allclose(model.posedirs.numpy(), fields["posedirs"].reshape(-1, 36).T, atol=1e-9)
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    assert model.default_albedo.shape == (5023, 3)
    torch.testing.assert_close(model.default_albedo[0], torch.tensor([0.7, 0.55, 0.45]))
    assert model.region_names == FLAME_REGION_NAMES
    assert model.face_region.shape == (model.faces.shape[0],)
    assert model.fingerprint().startswith("flame-")


def test_zero_pose_is_template_plus_blend_shapes(model):
    g = torch.Generator().manual_seed(1)
    ident, expr = torch.randn(2, 100, generator=g), torch.randn(2, 50, generator=g)
    v = model(ident, expr)
    expected = model.mean + torch.einsum("bk,kvc->bvc", ident, model.identity_basis) + torch.einsum(
        "bk,kvc->bvc", expr, model.expression_basis)
    torch.testing.assert_close(v, expected, atol=1e-7, rtol=0)
    # shorter coefficient vectors use the first modes
    torch.testing.assert_close(model(ident[:, :10]), model(torch.cat([ident[:, :10], torch.zeros(2, 90)], 1)))


def test_pose_correctives_vanish_at_zero_pose(model):
    feats = pose_features(torch.eye(3).expand(1, 5, 3, 3))
    assert feats.abs().max() == 0
    v, joints = model.pose(batch_size=1)
    torch.testing.assert_close(v[0], model.mean, atol=0, rtol=0)
    torch.testing.assert_close(joints[0], model.J_regressor @ model.mean)


def test_jaw_moves_only_jaw_weighted_vertices(model):
    jaw = torch.tensor([[0.3, 0.0, 0.0]])
    v0 = model(batch_size=1)
    vj = model(jaw_pose=jaw)
    rot = axis_angle_to_matrix(torch.cat([torch.zeros(1, 6), jaw, torch.zeros(1, 6)], 1).reshape(1, 5, 3))
    corr = (pose_features(rot) @ model.posedirs).reshape(1, -1, 3)
    w_jaw = model.lbs_weights[:, 2]
    still = w_jaw == 0
    assert still.sum() > 1000 and (w_jaw > 0.9).sum() > 50
    torch.testing.assert_close(vj[0, still], (v0 + corr)[0, still], atol=1e-6, rtol=0)
    moved = (vj - v0 - corr)[0, w_jaw > 0.9]
    assert moved.norm(dim=-1).min() > 1e-3
    assert moved[:, 1].mean() < 0  # opening the jaw (positive x rotation) lowers the chin


def test_neck_and_eyes(model):
    v0 = model(batch_size=1)
    eye = torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])  # left eye turns, right eye stays
    ve = model(eye_pose=eye)
    rot = axis_angle_to_matrix(torch.cat([torch.zeros(1, 9), eye], 1).reshape(1, 5, 3))
    corr = (pose_features(rot) @ model.posedirs).reshape(1, -1, 3)
    rigid = (ve - v0 - corr)[0].norm(dim=-1)
    w = model.lbs_weights
    assert rigid[w[:, 3] == 0].max() < 1e-6
    assert rigid[w[:, 3] > 0.9].mean() > 1e-3
    vn = model(neck_pose=torch.tensor([[0.0, 0.5, 0.0]]))
    moved = (vn - v0)[0].norm(dim=-1)
    assert moved[w[:, 1] > 0.9].max() > 1e-2 and moved[w[:, 0] == 1].max() < 1e-3


def test_translation_invariance(flame_files):
    d, fields = flame_files
    t = np.array([0.1, -0.3, 0.05])
    a = FLAMEFaceModel(fields, aux={})
    b = FLAMEFaceModel({**fields, "v_template": fields["v_template"] + t, "J": None}, aux={})
    kw = dict(expression=torch.randn(1, 50), jaw_pose=torch.tensor([[0.2, 0.05, 0.0]]),
              neck_pose=torch.tensor([[0.1, -0.3, 0.05]]))
    torch.testing.assert_close(b(**kw), a(**kw) + torch.tensor(t, dtype=torch.float32), atol=2e-6, rtol=0)


def test_npz_and_pkl_agree(flame_files):
    d, _ = flame_files
    kw = dict(aux_dir=d, require_aux=False)
    a = FLAMEFaceModel.load(d / "generic_model.pkl", **kw)
    b = FLAMEFaceModel.load(d / "generic_model.npz", **kw)
    args = (torch.randn(2, 100), torch.randn(2, 50), torch.tensor([[0.2, 0, 0], [0.1, 0.1, 0]]))
    assert torch.equal(a(*args), b(*args))


def test_gradients_flow(flame_files):
    d, fields = flame_files
    m = FLAMEFaceModel(fields, n_shape=5, n_exp=5, aux={})
    ident = torch.zeros(1, 5, requires_grad=True)
    jaw = torch.full((1, 3), 0.1, requires_grad=True)
    m(ident, None, jaw).square().sum().backward()
    assert ident.grad.abs().sum() > 0 and jaw.grad.abs().sum() > 0


def test_missing_model_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FACERIG_FLAME", raising=False)
    with pytest.raises(AssetMissing, match="flame.is.tue.mpg.de") as ei:
        FLAMEFaceModel.load()
    assert "FACERIG_FLAME" in str(ei.value)
    with pytest.raises(AssetMissing, match="nope.pkl"):
        load_face_model("flame", str(tmp_path / "nope.pkl"))


def test_env_var_and_registry(flame_files, monkeypatch):
    d, _ = flame_files
    monkeypatch.setenv("FACERIG_FLAME", str(d / "generic_model.npz"))
    m = load_face_model("flame", aux_dir=d, require_aux=False, n_shape=20, n_exp=10)
    assert isinstance(m, FLAMEFaceModel) and m.n_identity == 20 and m.n_expression == 10


def test_missing_aux_file_is_named(flame_files, tmp_path):
    d, _ = flame_files
    with pytest.raises(AssetMissing, match="head_template.obj") as ei:
        FLAMEFaceModel.load(d / "generic_model.pkl", aux_dir=tmp_path)
    assert "no registration" in str(ei.value)


def test_bad_arguments(flame_files, tmp_path):
    d, fields = flame_files
    with pytest.raises(InvalidInput, match="n_exp"):
        FLAMEFaceModel(fields, n_exp=101, aux={})
    bad = tmp_path / "bad.npz"
    np.savez(bad, v_template=fields["v_template"])
    with pytest.raises(InvalidInput, match="shapedirs"):
        read_flame_file(bad)


def test_small_synthetic_model_without_aux(tmp_path):
    write_synthetic_flame(tmp_path / "small.pkl", n_vertices=200)
    m = FLAMEFaceModel.load(tmp_path / "small.pkl", aux_dir=tmp_path, require_aux=False, n_shape=10, n_exp=5)
    assert m.n_vertices == 200 and m.landmark_index.numel() == 0
    assert (m.face_region == 0).all()
    v = m(torch.randn(3, 10), torch.randn(3, 5), torch.tensor([[0.3, 0.0, 0.0]]).expand(3, 3))
    assert v.shape == (3, 200, 3) and torch.isfinite(v).all()
    with pytest.raises(AssetMissing, match="landmark_embedding"):
        m.landmarks68(v)


@needs_aux
def test_aux_buffers(model):
    assert model.uv.shape == (5023, 2) and model.uv.min() >= 0 and model.uv.max() <= 1
    assert model.uv_coords.shape == (5118, 2) and model.uv_faces.shape == (9976, 3)
    counts = {n: int((model.face_region == i).sum()) for i, n in enumerate(model.region_names)}
    assert counts["eyes"] > 1000 and counts["lips"] > 100 and counts["brows"] > 20
    assert counts["mouth_interior"] == 0 and counts["skin"] > 1000
    assert model.landmark_index.shape == (105,) and model.landmark_index.max() < 478
    torch.testing.assert_close(model.landmark_bary.sum(1), torch.ones(105), atol=1e-5, rtol=0)
    assert model.landmark_weight.shape == (105,)


@needs_aux
def test_landmarks(model):
    v = model(jaw_pose=torch.tensor([[0.1, 0, 0]]))
    lm = model.landmarks(v)
    assert lm.shape == (1, 105, 3)
    # MediaPipe landmarks sit on the front of the face
    assert (lm[0, :, 2] > 0).all() and lm[0, :, 0].min() < -0.03 < 0.03 < lm[0, :, 0].max()
    l68 = model.landmarks68(v)
    assert l68.shape == (1, 68, 3)
    # iBUG order: 0-16 contour, 36/45 outer eye corners (36 on the subject's right = -x), 30 nose tip
    assert l68[0, 36, 0] < 0 < l68[0, 45, 0]
    assert l68[0, 30, 2] == l68[0, :, 2].max()
    yawed = model.landmarks68(v, head_pose=torch.tensor([[0.0, 0.5, 0.0]]))
    assert torch.equal(yawed[:, 17:], l68[:, 17:]) and not torch.equal(yawed[:, :17], l68[:, :17])
    frontal = model.landmarks68(v, head_pose=torch.zeros(1, 3))
    assert torch.isfinite(frontal).all()


# ---- real FLAME (FACERIG_FLAME=/path/generic_model.pkl) ------------------------------------------
@pytest.fixture(scope="module")
def real_flame():
    return FLAMEFaceModel.load(os.environ["FACERIG_FLAME"], require_aux=AUX is not None)


@pytest.mark.flame
def test_real_flame_sizes(real_flame):
    fields = read_flame_file(os.environ["FACERIG_FLAME"])
    assert fields["v_template"].shape == (5023, 3) and fields["f"].shape == (9976, 3)
    assert fields["shapedirs"].shape == (5023, 3, 400)
    assert fields["posedirs"].shape == (5023, 3, 36)
    assert real_flame.n_vertices == 5023 and real_flame.faces.shape == (9976, 3)


@pytest.mark.flame
@needs_aux
def test_real_flame_mediapipe_points_on_mesh(real_flame):
    v = real_flame(batch_size=1)
    lm = real_flame.landmarks(v)[0]
    assert (real_flame.landmark_bary >= -1e-6).all()
    tri = v[0, real_flame.faces[real_flame.landmark_faces]]  # (105, 3, 3)
    # each point lies in the plane of its triangle and inside its bounding box
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = n / n.norm(dim=-1, keepdim=True)
    assert ((lm - tri[:, 0]) * n).sum(-1).abs().max() < 1e-6
    assert (lm >= tri.min(1).values - 1e-6).all() and (lm <= tri.max(1).values + 1e-6).all()
    # and near the mesh: the nearest vertex is within 1 cm
    assert torch.cdist(lm, v[0]).min(1).values.max() < 0.01
