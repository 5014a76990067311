"""ICT-FaceKit tier: loading, correspondence to the 478 MediaPipe points, release converter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerig.errors import AssetMissing
from facerig.io.assets import shared_path
from facerig.morphable.transfer import similarity_fit

ICT = shared_path("assets", "ict-facekit", "ict_facekit_light.npz")


@pytest.fixture(scope="module")
def ict_model(tmp_path_factory):
    if ICT is None:
        pytest.skip("ICT npz absent")
    import os

    old = os.environ.get("FACERIG_HOME")
    os.environ["FACERIG_HOME"] = str(tmp_path_factory.mktemp("home"))
    from facerig.morphable import load_face_model

    yield load_face_model("ict", str(ICT))
    if old is None:
        os.environ.pop("FACERIG_HOME", None)
    else:
        os.environ["FACERIG_HOME"] = old


@pytest.mark.shared_data
def test_ict_loads_and_corresponds(ict_model):
    from facerig.morphable.builtin import load_arrays

    with np.load(ICT) as d:
        assert d["neutral"].shape == (26719, 3)
    m = ict_model
    assert m.name == "ict" and m.n_identity == 100 and m.n_expression == 53
    assert m.n_vertices == 9409 + 1839  # face + head_and_neck by default
    assert m.landmark_index.shape == (478,) and m.landmark_bary.shape == (478, 3)
    assert m.resolve_expression_name("mouthSmile") == ("mouthSmile_L", "mouthSmile_R")
    assert "browInnerUp_L" in m.expression_names
    lm = m.landmarks(m.mean[None])[0].numpy().astype(np.float64)
    b = load_arrays()["mean"].astype(np.float64)
    t = similarity_fit(b, lm)
    d = np.linalg.norm(t.apply(b) - lm, axis=1)
    print(f"ICT correspondence vs builtin mean: median {np.median(d):.3f} cm, max {d.max():.3f} cm")
    assert np.median(d) < 0.3 and d.max() < 0.6
    assert float(m.uv.min()) >= 0 and float(m.uv.max()) <= 1
    names = m.region_names
    counts = np.bincount(m.face_region.numpy(), minlength=len(names))
    for r in ("skin", "lips", "nose", "brows"):
        assert counts[names.index(r)] > 0, r
    # semantics
    jaw = m(expression=m.expression_vector({"jawOpen": 1.0}))[0]
    chin = m.landmarks(jaw[None])[0, 152]
    assert float(chin[1] - m.landmarks(m.mean[None])[0, 152, 1]) < -1.5


@pytest.mark.shared_data
def test_ict_all_parts(ict_model):
    from facerig.morphable.ict import ICTFaceModel

    m = ICTFaceModel.load(str(ICT), parts="all")
    assert m.n_vertices == 26719
    assert (m.face_region == m.region_names.index("eyes")).sum() > 0


def test_missing_asset(tmp_path, monkeypatch):
    from facerig.morphable.ict import find_ict

    monkeypatch.setenv("FACERIG_HOME", str(tmp_path))
    monkeypatch.setenv("FACERIG_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.delenv("FACERIG_ICT", raising=False)
    monkeypatch.chdir(tmp_path)
    import facerig.morphable.ict as ictmod

    monkeypatch.setattr(ictmod, "shared_path", lambda *a: None)
    with pytest.raises(AssetMissing, match="convert_ict_release"):
        find_ict(tmp_path / "missing.npz")


def _write_obj(path, v, faces, vt=None):
    with open(path, "w") as f:
        for p in v:
            f.write(f"v {p[0]} {p[1]} {p[2]}\n")
        for t in vt if vt is not None else []:
            f.write(f"vt {t[0]} {t[1]}\n")
        for poly in faces:
            f.write("f " + " ".join(f"{i + 1}/{i + 1}" for i in poly) + "\n")


def test_convert_fake_release(tmp_path):
    from facerig.morphable.ict import convert_ict_release

    src = tmp_path / "ICT-FaceKit" / "FaceXModel"
    src.mkdir(parents=True)
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], float)
    polys = [[0, 1, 2, 3], [1, 4, 2]]
    _write_obj(src / "generic_neutral_mesh.obj", v, polys, vt=v[:, :2] / 2)
    for k in range(2):
        _write_obj(src / f"identity{k:03d}.obj", v + 0.1 * (k + 1), polys, vt=v[:, :2] / 2)
    for n, dz in (("jawOpen", 0.5), ("eyeBlink_L", 0.2)):
        _write_obj(src / f"{n}.obj", v + [0, 0, dz], polys, vt=v[:, :2] / 2)
    (src / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen", "eyeBlink_L"]}))
    out = convert_ict_release(tmp_path / "ICT-FaceKit", tmp_path / "out" / "ict.npz")
    with np.load(out) as d:
        assert d["faces"].tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 2]]
        assert d["faces_polygon"].tolist() == [0, 0, 1]
        assert d["identity_basis"].shape == (2, 5, 3)
        np.testing.assert_allclose(d["identity_basis"][1], 0.2, atol=1e-6)
        assert list(d["expression_names"]) == ["jawOpen", "eyeBlink_L"]
        np.testing.assert_allclose(d["expression_basis"][0, :, 2], 0.5, atol=1e-6)
        assert d["uv"].shape == (5, 2) and d["faces_uv"].shape == (3, 3)
