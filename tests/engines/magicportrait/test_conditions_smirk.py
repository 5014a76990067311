"""SMIRK's encoder: strict loading of a file written here in the released ``SMIRK_em1.pt`` layout,
the expression/jaw head, SMIRK's crop, and (gated) equality with SMIRK's own module on timm."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.engines.magicportrait.smirk import SmirkEncoder, load_smirk, smirk_crop
from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

# timm's MobileNetV3 "minimal" parameter layout, spelled out from timm's instantiated models
# (per block: kind, in, mid, out); stride and skips carry no parameters
_LARGE = [[("ds", 16, 16, 16)], [("ir", 16, 64, 24), ("ir", 24, 72, 24)],
          [("ir", 24, 72, 40)] + [("ir", 40, 120, 40)] * 2,
          [("ir", 40, 240, 80), ("ir", 80, 200, 80)] + [("ir", 80, 184, 80)] * 2,
          [("ir", 80, 480, 112), ("ir", 112, 672, 112)],
          [("ir", 112, 672, 160)] + [("ir", 160, 960, 160)] * 2, [("cn", 160, 960, 960)]]
_SMALL = [[("ds", 16, 16, 16)], [("ir", 16, 72, 24), ("ir", 24, 88, 24)],
          [("ir", 24, 96, 40)] + [("ir", 40, 240, 40)] * 2, [("ir", 40, 120, 48), ("ir", 48, 144, 48)],
          [("ir", 48, 288, 96)] + [("ir", 96, 576, 96)] * 2, [("cn", 96, 576, 576)]]


def _bn(p: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,), f"{p}.running_mean": (c,), f"{p}.running_var": (c,),
            f"{p}.num_batches_tracked": ()}


def _mobilenet(prefix: str, table) -> dict[str, tuple[int, ...]]:  # noqa: ANN001
    out = {f"{prefix}.conv_stem.weight": (16, 3, 3, 3), **_bn(f"{prefix}.bn1", 16)}
    for i, stage in enumerate(table):
        for j, (kind, cin, mid, cout) in enumerate(stage):
            p = f"{prefix}.blocks.{i}.{j}"
            if kind == "ds":
                out.update({f"{p}.conv_dw.weight": (cin, 1, 3, 3), **_bn(f"{p}.bn1", cin),
                            f"{p}.conv_pw.weight": (cout, cin, 1, 1), **_bn(f"{p}.bn2", cout)})
            elif kind == "ir":
                out.update({f"{p}.conv_pw.weight": (mid, cin, 1, 1), **_bn(f"{p}.bn1", mid),
                            f"{p}.conv_dw.weight": (mid, 1, 3, 3), **_bn(f"{p}.bn2", mid),
                            f"{p}.conv_pwl.weight": (cout, mid, 1, 1), **_bn(f"{p}.bn3", cout)})
            else:
                out.update({f"{p}.conv.weight": (cout, cin, 1, 1), **_bn(f"{p}.bn1", cout)})
    return out


def smirk_layout() -> dict[str, tuple[int, ...]]:
    lay = {**_mobilenet("pose_encoder.encoder", _SMALL), "pose_encoder.pose_cam_layers.0.weight": (6, 576),
           "pose_encoder.pose_cam_layers.0.bias": (6,),
           **_mobilenet("shape_encoder.encoder", _LARGE), "shape_encoder.shape_layers.0.weight": (300, 960),
           "shape_encoder.shape_layers.0.bias": (300,),
           **_mobilenet("expression_encoder.encoder", _LARGE),
           "expression_encoder.expression_layers.0.weight": (55, 960),
           "expression_encoder.expression_layers.0.bias": (55,)}
    return lay


def write_smirk(path: Path, seed: int = 0, *, drop: str | None = None, extra: str | None = None,
                reshape: str | None = None) -> dict[str, torch.Tensor]:
    """A random SMIRK_em1.pt: ``smirk_encoder.*`` keys + a generator key, as released."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shp in smirk_layout().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shp, generator=g) + 0.5
        elif k.endswith(("bn1.weight", "bn2.weight", "bn3.weight")):
            sd[k] = torch.rand(shp, generator=g) + 0.5
        else:
            fan = int(np.prod(shp[1:])) if len(shp) > 1 else 1
            sd[k] = torch.randn(shp, generator=g) / max(1.0, fan) ** 0.5
    if drop:
        sd.pop(drop)
    if extra:
        sd[extra] = torch.zeros(1)
    if reshape:
        sd[reshape] = torch.zeros(3)
    full = {f"smirk_encoder.{k}": v for k, v in sd.items()}
    full["smirk_generator.unet.0.weight"] = torch.zeros(2, 2)
    torch.save(full, path)
    return sd


@pytest.fixture(scope="module")
def smirk_file(tmp_path_factory: pytest.TempPathFactory):
    p = tmp_path_factory.mktemp("smirk") / "SMIRK_em1.pt"
    return p, write_smirk(p)


def test_layout_equals_the_released_description() -> None:
    own = SmirkEncoder().state_dict()
    lay = smirk_layout()
    assert set(own) == set(lay)
    assert all(tuple(own[k].shape) == lay[k] for k in lay)


def test_loads_strictly_and_runs_the_expression_head(smirk_file) -> None:  # noqa: ANN001
    p, sd = smirk_file
    enc = load_smirk(p)
    assert not enc.training
    torch.testing.assert_close(enc.state_dict()["expression_encoder.expression_layers.0.bias"],
                               sd["expression_encoder.expression_layers.0.bias"])
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = enc.expression(x)
        full = enc(x)
    assert out["expression_params"].shape == (2, 50) and out["jaw_params"].shape == (2, 3)
    assert float(out["jaw_params"][:, 0].min()) >= 0 and float(out["jaw_params"][:, 1:].abs().max()) <= 0.2 + 1e-6
    assert float(out["eyelid_params"].min()) >= 0 and float(out["eyelid_params"].max()) <= 1
    torch.testing.assert_close(full["expression_params"], out["expression_params"])
    assert full["shape_params"].shape == (2, 300) and full["cam"].shape == (2, 3)
    # the head is the linear layer on the pooled last feature map (an independent evaluation)
    with torch.no_grad():
        f = enc.expression_encoder.encoder(x).mean((2, 3))
    assert f.shape == (2, 960)
    lin = f @ sd["expression_encoder.expression_layers.0.weight"].T + sd["expression_encoder.expression_layers.0.bias"]
    torch.testing.assert_close(out["expression_params"], lin[:, :50], rtol=1e-4, atol=1e-4)


def test_strict_loading_names_the_keys(tmp_path: Path) -> None:
    k = "expression_encoder.encoder.blocks.3.1.conv_dw.weight"
    write_smirk(tmp_path / "a.pt", drop=k)
    with pytest.raises(CheckpointMismatch, match="missing.*blocks.3.1.conv_dw"):
        load_smirk(tmp_path / "a.pt")
    write_smirk(tmp_path / "b.pt", extra="expression_encoder.foo")
    with pytest.raises(CheckpointMismatch, match="unexpected.*expression_encoder.foo"):
        load_smirk(tmp_path / "b.pt")
    write_smirk(tmp_path / "c.pt", reshape="pose_encoder.pose_cam_layers.0.bias")
    with pytest.raises(CheckpointMismatch, match="pose_cam_layers.0.bias"):
        load_smirk(tmp_path / "c.pt")
    with pytest.raises(AssetMissing):
        load_smirk(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInput):
        load_smirk(tmp_path / "bad.pt")
    with pytest.raises(InvalidInput, match="img"):
        SmirkEncoder().expression(torch.zeros(1, 1, 224, 224))


def test_smirk_crop_geometry() -> None:
    pts = np.array([[100.0, 200.0], [300.0, 200.0], [200.0, 100.0], [200.0, 400.0]])
    ct = smirk_crop(pts, (480, 640))
    side = int((200 + 300) / 2 * 1.4)
    centre = np.array([[200.0, 250.0]])
    np.testing.assert_allclose(ct.apply(centre), [[111.5, 111.5]], atol=1e-9)
    np.testing.assert_allclose(ct.scale, 223 / side)
    assert ct.size == 224 and ct.frame_size == (480, 640)
    with pytest.raises(InvalidInput):
        smirk_crop(np.zeros((5, 2)), (10, 10))


@pytest.mark.skipif(not os.environ.get("FACERIG_SMIRK_REF"),
                    reason="FACERIG_SMIRK_REF (the folder of SMIRK's smirk_encoder.py, extracted from the "
                           "MagicPortrait or SMIRK snapshot) not set")
def test_equals_smirks_own_encoder() -> None:
    pytest.importorskip("timm")
    import timm

    src = Path(os.environ["FACERIG_SMIRK_REF"]) / "smirk_encoder.py"
    spec = importlib.util.spec_from_file_location("their_smirk_encoder", src)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    orig = timm.create_model
    mod.timm.create_model = lambda *a, **k: orig(*a, **{**k, "pretrained": False})  # no hub download
    try:
        torch.manual_seed(0)
        theirs = mod.SmirkEncoder().eval()
    finally:
        mod.timm.create_model = orig
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.05, generator=g)
    ours = SmirkEncoder().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
