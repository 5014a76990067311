"""MagicPortrait's released conditioning on files written here: synthetic FLAME-shaped model, a
DECA-layout file with a known code, a random SMIRK file in the released layout, a FLAME texture."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.engines.magicportrait.conditions import (
    MagicPortraitFrames,
    ReleasedMagicConditioner,
    transfer_codes,
)
from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rigface_cond_fixture import deca_code, write_deca_with_code, write_flame_texture  # noqa: E402
from test_conditions_smirk import write_smirk  # noqa: E402

S = 128


def _codes(f: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"shape": torch.randn(f, 100, generator=g), "tex": torch.randn(f, 50, generator=g),
            "exp": torch.randn(f, 50, generator=g), "pose": torch.randn(f, 6, generator=g),
            "cam": torch.randn(f, 3, generator=g), "light": torch.randn(f, 9, 3, generator=g)}


def test_transfer_codes_is_the_release_transfer() -> None:
    src, drv = _codes(1, 0), _codes(3, 1)
    exp, jaw = torch.randn(3, 50), torch.randn(3, 3)
    out = transfer_codes(src, drv, exp, jaw)
    for k in ("shape", "tex", "cam", "light"):  # from the source (DECA)
        torch.testing.assert_close(out[k], src[k].expand_as(out[k]))
    torch.testing.assert_close(out["pose"][:, :3], drv["pose"][:, :3])  # global pose: driver's DECA
    torch.testing.assert_close(out["pose"][:, 3:], jaw)                  # jaw: driver's SMIRK
    torch.testing.assert_close(out["exp"], exp)                           # expression: driver's SMIRK
    assert not torch.equal(out["exp"], drv["exp"])
    src_before = {k: v.clone() for k, v in src.items()}
    out["shape"][0, 0] = 99.0
    assert all(torch.equal(src[k], src_before[k]) for k in src)  # no aliasing
    with pytest.raises(InvalidInput, match="smirk"):
        transfer_codes(src, drv, exp[:2], jaw)


@pytest.fixture(scope="module")
def released_files(tmp_path_factory: pytest.TempPathFactory):
    from flame_fixture import write_synthetic_flame

    from facerig.io.assets import shared_path

    if shared_path("assets", "flame-aux") is None:
        pytest.skip("shared flame-aux folder absent")
    d = tmp_path_factory.mktemp("mp_released")
    write_synthetic_flame(d / "generic_model.pkl")
    write_deca_with_code(d / "deca_model.tar", deca_code())
    write_smirk(d / "SMIRK_em1.pt")
    write_flame_texture(d / "FLAME_texture.npz")
    return d


@pytest.fixture(scope="module")
def released(released_files: Path, astronaut: np.ndarray):
    d = released_files
    rc = ReleasedMagicConditioner(flame=d / "generic_model.pkl", deca=d / "deca_model.tar", smirk=d / "SMIRK_em1.pt",
                                  texture=d / "FLAME_texture.npz", size=S)
    return rc, rc.source_state(astronaut)


def test_released_frames(released, astronaut: np.ndarray, grace_hopper: np.ndarray) -> None:  # noqa: ANN001
    rc, st = released
    fr = rc.frames(st, [grace_hopper, astronaut])
    assert isinstance(fr, MagicPortraitFrames) and fr.num_frames == 2 and fr.size == S
    for name in ("depth", "normal", "render"):
        t = getattr(fr, name)
        assert t.shape == (2, 3, S, S) and float(t.min()) >= 0 and float(t.max()) <= 1
    # SMIRK's expression + jaw of each driver reach the maps: the two drivers differ, and the maps
    # equal a render of the transferred codes
    drv, exp, jaw = rc.driver_codes([grace_hopper, astronaut])
    assert not torch.allclose(exp[0], exp[1])
    codes = transfer_codes(st.codes, drv, exp, jaw)
    d, n, r, cov = rc.render_codes(st, codes)
    cover = cov[:, 0] > 0.5
    assert int(cover[0].sum()) > 200
    assert float(fr.depth[:, 0][~cover].abs().max()) == 0 and float(fr.normal.permute(1, 0, 2, 3)[:, ~cover].abs().max()) == 0
    assert float(fr.render.permute(1, 0, 2, 3)[:, ~cover].abs().max()) == 0
    assert bool((fr.mask[:, 0][cover] == 1).all())
    assert float(fr.depth[:, 0][cover].min()) > 0  # covered pixels lie in front of the farthest vertex
    torch.testing.assert_close(fr.depth, d, atol=1e-4, rtol=0)
    torch.testing.assert_close(fr.normal, n, atol=1e-4, rtol=0)
    assert float((fr.normal[0] - fr.normal[1]).abs().max()) > 0.01


def test_released_inputs(released, astronaut: np.ndarray, tmp_path: Path) -> None:  # noqa: ANN001
    rc, st = released
    with pytest.raises(InvalidInput, match="state"):
        rc.frames("x", [astronaut])
    with pytest.raises(InvalidInput, match="driving_images"):
        rc.frames(st, [])
    with pytest.raises(InvalidInput, match=r"driving_images\[0\]"):
        rc.frames(st, [astronaut[..., :2]])
    with pytest.raises(AssetMissing, match="SMIRK"):
        ReleasedMagicConditioner(flame=rc.flame, deca=rc.deca, smirk=None, size=S)
    with pytest.raises(AssetMissing, match="DECA"):
        ReleasedMagicConditioner(flame=rc.flame, deca=None, smirk=rc.smirk, size=S)
    write_smirk(tmp_path / "bad.pt", drop="shape_encoder.shape_layers.0.bias")
    with pytest.raises(CheckpointMismatch, match="shape_layers.0.bias"):
        ReleasedMagicConditioner(flame=rc.flame, deca=rc.deca, smirk=tmp_path / "bad.pt", size=S)
    with pytest.raises(InvalidInput, match="size"):
        ReleasedMagicConditioner(flame=rc.flame, deca=rc.deca, smirk=rc.smirk, size=100)
