"""Deep3DFaceRecon regressor: released layouts (epoch_20.pth, RigFace's d3dfr_res50_nofc.pth), strict
loading with named keys, the 257 split, the 5-point crop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.engines.rigface import deep3d as D
from facerig.errors import AssetMissing, InvalidInput

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from rigface_cond_fixture import deep3d_layout, random_state, write_deep3d  # noqa: E402


@pytest.mark.parametrize("layout", ["deep3d", "rigface"])
def test_module_has_exactly_the_released_layout(layout: str) -> None:
    own = {k: tuple(v.shape) for k, v in D.Deep3DRecon(layout).state_dict().items()}
    assert own == deep3d_layout(layout)


@pytest.fixture(scope="module")
def epoch20(tmp_path_factory: pytest.TempPathFactory):
    p = tmp_path_factory.mktemp("d3d") / "epoch_20.pth"
    return p, write_deep3d(p, "deep3d")


def test_epoch20_loads_strictly_and_splits_257(epoch20) -> None:  # noqa: ANN001
    path, sd = epoch20
    m = D.load_deep3d(path)
    assert m.layout == "deep3d" and m.input_size == 224 and not m.training
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        out = m(x)
        feat = m.backbone(x)
    assert out.shape == (2, 257)
    # the expression is the second head (64 channels) applied to the pooled features
    exp = feat @ sd["final_layers.1.weight"][:, :, 0, 0].T + sd["final_layers.1.bias"]
    torch.testing.assert_close(D.split_coeffs(out)["exp"], exp, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.expression(x), exp, rtol=1e-4, atol=1e-5)
    parts = D.split_coeffs(out)
    assert [parts[k].shape[1] for k, _ in D.COEFF_SPLIT] == [80, 64, 80, 3, 27, 3]
    # trans = [tx, ty] head then tz head
    tz = feat @ sd["final_layers.6.weight"][:, :, 0, 0].T + sd["final_layers.6.bias"]
    torch.testing.assert_close(parts["trans"][:, 2:], tz, rtol=1e-4, atol=1e-5)


def test_rigface_layout_module_prefix_and_pupils_dropped(tmp_path: Path) -> None:
    p = tmp_path / "d3dfr_res50_nofc.pth"
    sd = write_deep3d(p, "rigface", seed=1)
    m = D.load_deep3d(p)
    assert m.layout == "rigface" and m.input_size == 256
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        out = m(x)
        feat = m.backbone(x)
    assert out.shape == (1, 257)
    gamma = feat @ sd["fianl_layers.4.weight"][:, :, 0, 0].T + sd["fianl_layers.4.bias"]
    torch.testing.assert_close(D.split_coeffs(out)["gamma"], gamma, rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidInput, match="256"):
        m(torch.zeros(1, 3, 224, 224))


def _save(tmp_path: Path, sd: dict) -> Path:
    p = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": sd}, p)
    return p


def test_missing_extra_and_misshaped_keys_are_named(tmp_path: Path) -> None:
    sd = random_state(deep3d_layout("deep3d"))
    bad = dict(sd)
    del bad["final_layers.1.bias"]
    with pytest.raises(InvalidInput, match=r"missing 1: \['final_layers.1.bias'\]"):
        D.load_deep3d(_save(tmp_path, bad))
    bad = dict(sd)
    bad["final_layers.1.weight"] = torch.zeros(50, 2048, 1, 1)
    with pytest.raises(InvalidInput, match="final_layers.1.weight"):
        D.load_deep3d(_save(tmp_path, bad))
    bad = dict(sd)
    bad["backbone.fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(InvalidInput, match=r"unexpected 1: \['backbone.fc.weight'\]"):
        D.load_deep3d(_save(tmp_path, bad))
    # BN counters are optional (old torch files lack them)
    ok = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert D.load_deep3d(_save(tmp_path, ok)).layout == "deep3d"


def test_unrecognised_or_unsafe_files(tmp_path: Path) -> None:
    with pytest.raises(AssetMissing, match="Deep3DFaceRecon"):
        D.load_deep3d(tmp_path / "nope.pth")
    p = tmp_path / "other.pth"
    torch.save({"net_recon": {"conv.weight": torch.zeros(1)}}, p)
    with pytest.raises(InvalidInput, match="final_layers"):
        D.load_deep3d(p)
    p2 = tmp_path / "pickled.pth"
    torch.save({"net_recon": {"x": object()}}, p2)  # needs a full unpickle: refused
    with pytest.raises(InvalidInput, match="weights_only"):
        D.load_deep3d(p2)


def test_five_point_crop_lands_on_the_template(astronaut: np.ndarray) -> None:
    # the template (OpenCV pixel centres -> +0.5) seen through a known similarity (scale 0.6, 10 deg)
    a = np.deg2rad(10.0)
    sim = 0.6 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    tpl = D.MEAN_FACE_LM5P_256 + 0.5
    five = (tpl - np.array([40.0, 30.0])) @ np.linalg.inv(sim).T
    ct = D.deep3d_crop(five, "rigface", frame_size=astronaut.shape[:2])
    assert ct.size == 256
    np.testing.assert_allclose(ct.apply(five), tpl, atol=1e-6)
    x = D.deep3d_input(astronaut, five, "rigface")
    assert x.shape == (1, 3, 256, 256) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    ct224 = D.deep3d_crop(five, "deep3d", frame_size=astronaut.shape[:2])
    assert ct224.size == 224
    np.testing.assert_allclose(ct224.scale / ct.scale, 224 / 256, rtol=1e-9)
    with pytest.raises(InvalidInput):
        D.deep3d_crop(five, "bfm")
