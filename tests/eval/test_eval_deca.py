"""DECA E_flame loader: released key layout, strict checks, codes on a real crop, re-inference RMSE."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.errors import InvalidInput
from facerig.eval import deca as D
from facerig.eval import edit_accuracy as ea

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from rigface_cond_fixture import resnet50_layout  # noqa: E402


def released_e_flame_layout() -> dict[str, tuple[int, ...]]:
    """The E_flame key -> shape list of DECA's released deca_model.tar, written out from DECA's module
    tree (ResnetEncoder: ``encoder`` = torchvision-named ResNet-50 without fc, Bottleneck [3, 4, 6, 3];
    ``layers`` = Linear(2048, 1024), ReLU, Linear(1024, 236)) independently of facerig's module."""
    out = resnet50_layout("encoder.")
    out["layers.0.weight"] = (1024, 2048)
    out["layers.0.bias"] = (1024,)
    out["layers.2.weight"] = (236, 1024)
    out["layers.2.bias"] = (236,)
    return out


def fake_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in released_e_flame_layout().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = 1.0 + torch.rand(shape, generator=g)
        elif k.endswith(("running_mean", "bias")):
            sd[k] = 0.01 * torch.randn(shape, generator=g)
        elif k.endswith("weight") and len(shape) == 1:  # BN gamma
            sd[k] = 1.0 + 0.01 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            sd[k] = torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)
    return sd


def test_module_has_exactly_the_released_layout() -> None:
    own = {k: tuple(v.shape) for k, v in D.DecaEncoder().state_dict().items()}
    assert own == released_e_flame_layout()
    n_params = sum(p.numel() for p in D.DecaEncoder().parameters())
    # torchvision resnet50 (25,557,032) - fc (2,049,000) + Linear(2048,1024) + Linear(1024,236)
    assert n_params == 25_557_032 - 2_049_000 + (2048 * 1024 + 1024) + (1024 * 236 + 236)
    assert D.DECA_N_PARAM == 236 and [k for k, _ in D.DECA_PARAM_SPLIT] == ["shape", "tex", "exp", "pose", "cam", "light"]


@pytest.fixture(scope="module")
def deca_tar(tmp_path_factory: pytest.TempPathFactory):
    sd = fake_state()
    p = tmp_path_factory.mktemp("deca") / "deca_model.tar"
    # the released file's top level: three state dicts (E_detail / D_detail stand-ins kept tiny)
    torch.save({"E_flame": sd, "E_detail": {"layers.2.bias": torch.zeros(128)},
                "D_detail": {"layers.0.bias": torch.zeros(8)}}, p)
    return p, sd


def test_load_strict_and_codes_on_astronaut(deca_tar, astronaut) -> None:  # noqa: ANN001
    path, sd = deca_tar
    enc = D.load_deca_encoder(path)
    assert not enc.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, sd[k]), k
    crop = D.deca_crop_image(astronaut)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.float32 and 0 <= crop.min() and crop.max() <= 1
    codes = D.deca_params(torch.from_numpy(crop).permute(2, 0, 1)[None], enc)
    shapes = {k: tuple(v.shape) for k, v in codes.items()}
    assert shapes == {"shape": (1, 100), "tex": (1, 50), "exp": (1, 50), "pose": (1, 6), "cam": (1, 3), "light": (1, 9, 3)}
    assert all(torch.isfinite(v).all() for v in codes.values())
    # the split is DECA's order over the flat code
    flat = enc(torch.from_numpy(crop).permute(2, 0, 1)[None])
    assert torch.equal(codes["exp"], flat[:, 150:200]) and torch.equal(codes["light"].reshape(1, -1), flat[:, 209:236])


def test_bare_state_dict_and_missing_batch_counters_load() -> None:
    sd = {k: v for k, v in fake_state(1).items() if not k.endswith("num_batches_tracked")}
    enc = D.load_deca_encoder(sd)  # old-torch checkpoints have no BN counters
    assert isinstance(enc, D.DecaEncoder)


def test_mismatched_keys_raise_naming_them(tmp_path) -> None:  # noqa: ANN001
    sd = fake_state(2)
    bad = dict(sd)
    del bad["encoder.layer3.5.conv2.weight"]
    bad["encoder.fc.weight"] = torch.zeros(1000, 2048)
    with pytest.raises(InvalidInput) as ei:
        D.load_deca_encoder({"E_flame": bad})
    msg = str(ei.value)
    assert "encoder.layer3.5.conv2.weight" in msg and "encoder.fc.weight" in msg
    wrong = dict(sd)
    wrong["layers.2.weight"] = torch.zeros(200, 1024)
    with pytest.raises(InvalidInput, match="layers.2.weight"):
        D.load_deca_encoder({"E_flame": wrong})
    with pytest.raises(InvalidInput, match="E_flame"):
        D.load_deca_encoder({"something": {"a": torch.zeros(1)}})
    # a non-weights pickle is refused under weights_only
    p = tmp_path / "evil.tar"
    torch.save({"E_flame": sd, "opt": object.__new__(_Opaque)}, p)
    with pytest.raises(InvalidInput, match="weights_only"):
        D.load_deca_encoder(p)


class _Opaque:
    pass


def test_reinference_rmse_with_path_matches_hand_computation(deca_tar, astronaut) -> None:  # noqa: ANN001
    path, _ = deca_tar
    enc = D.load_deca_encoder(path)
    est = D.DecaEstimator(enc)
    codes = est(astronaut)
    req = {"pose": np.zeros((2, 6)), "exp": np.zeros((2, 100)), "light": np.ones((2, 9, 3))}
    req["exp"][1, :50] = 0.5
    req["exp"][:, 50:] = 9.0  # beyond DECA's 50: ignored
    r = ea.deca_reinference_rmse(req, [astronaut, astronaut], str(path))
    pose_e, exp_e, light_e = codes["pose"], codes["exp"], codes["light"].reshape(-1)
    hand_pose = math.sqrt((np.concatenate([pose_e, pose_e]) ** 2).mean())
    hand_exp = math.sqrt(np.concatenate([exp_e ** 2, (exp_e - 0.5) ** 2]).mean())
    hand_light = math.sqrt(((light_e - 1.0) ** 2).mean())
    assert r["pose_rmse"] == pytest.approx(hand_pose, rel=1e-5)
    assert r["exp_rmse"] == pytest.approx(hand_exp, rel=1e-5)
    assert r["light_rmse"] == pytest.approx(hand_light, rel=1e-5)
    assert r["num_failed"] == 0 and "DECA E_flame (deca_model.tar)" in r["estimator"]


def test_reinference_rmse_counts_faceless_outputs(deca_tar) -> None:  # noqa: ANN001
    enc = D.load_deca_encoder(deca_tar[0])
    blank = np.full((256, 256, 3), 128, np.uint8)
    r = ea.deca_reinference_rmse({"pose": np.zeros((1, 6)), "exp": np.zeros((1, 50)), "light": np.zeros((1, 9, 3))},
                                 [blank], enc)
    assert r["num_failed"] == 1 and math.isnan(r["pose_rmse"])
