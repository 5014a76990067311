"""RigFaceEngine end to end on tiny random weights and the astronaut photo: the edited crop is pasted
back only inside the person region; options, registry, asset errors for the released weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))

from rigface_tiny import write_tiny_rigface  # noqa: E402

from facerig.errors import AssetMissing, IncompatibleModel, InvalidInput  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_rigface(tmp_path_factory.mktemp("rfe"))


@pytest.fixture(scope="module")
def engine(tiny):
    from facerig.engines import get_engine

    base, weights = tiny
    return get_engine("rigface", weights=str(weights), base=str(base), steps=2, seed=3)


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import as_face_model

    fm = as_face_model("builtin")
    return fm, _fit_one(astronaut, fm, "largest", "astronaut")


def _frame_region(frame, cond):
    """Frame pixels the paste-back may touch: the conditions' mask carried into the frame."""
    from facerig.detect.crops import paste_back

    m = cond.mask[0, 0].numpy().astype(np.float32)
    ones = np.full((cond.size, cond.size, 3), 255, np.uint8)
    return paste_back(np.zeros_like(frame), ones, cond.crop, m, feather_px=0.0)[..., 0] > 0


def test_edit_changes_only_the_person_region(engine, fitted, astronaut):
    from facerig.rig.expression import apply_preset

    fm, params = fitted
    target = apply_preset(params, "smile", model=fm)
    state = engine.prepare(astronaut, params, fm)
    out = engine.render_frame(state, target)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    cond = engine._conditions(state, target, {})
    region = _frame_region(astronaut, cond)
    changed = np.abs(out.astype(int) - astronaut).sum(2) > 0
    assert changed.any() and 0.01 < region.mean() < 0.6
    assert not (changed & ~region).any()  # nothing outside the person region moves
    # the same source again: identity states reused, same seed -> the same image
    again = engine.render_frame(state, target)
    assert np.array_equal(out, again)


def test_edit_api_with_engine_options(tiny, astronaut):
    from facerig.edit import edit_many

    base, weights = tiny
    res = edit_many(astronaut, [{"preset": "smile"}, {"yaw": 10}], "rigface", buffers=False,
                    engine_options={"weights": str(weights), "base": str(base), "steps": 1})
    assert [r.engine for r in res] == ["rigface", "rigface"]
    assert all(r.image.shape == astronaut.shape for r in res)
    assert not np.array_equal(res[0].image, astronaut)


def test_options_and_errors(tiny, tmp_path, monkeypatch):
    from facerig.engines import available_engines, get_engine
    from facerig.engines.rigface.engine import RigFaceEngine

    base, weights = tiny
    info = available_engines()["rigface"]
    assert info["requires_weights"] is True
    assert RigFaceEngine.pose_range.yaw == 30 and RigFaceEngine.wants_reference_image
    with pytest.raises(InvalidInput, match="--weights"):
        get_engine("rigface", base=str(base))
    with pytest.raises(AssetMissing, match="RigFace weights"):
        get_engine("rigface", weights=str(tmp_path / "none"), base=str(base))
    monkeypatch.delenv("FACERIG_SD15", raising=False)
    with pytest.raises(AssetMissing, match="FACERIG_SD15"):
        get_engine("rigface", weights=str(weights))
    with pytest.raises(InvalidInput, match="steps"):
        get_engine("rigface", weights=str(weights), base=str(base), steps=0)
    with pytest.raises(InvalidInput, match="fp16"):
        get_engine("rigface", weights=str(weights), base=str(base), dtype="fp16")
    with pytest.raises(InvalidInput, match="engine options"):
        get_engine("rigface", weights=str(weights), base=str(base), stepz=3)
    e = get_engine("rigface", weights=str(weights), base=str(base), dtype="bf16", steps=1)
    assert e.pipe.unets.dtype == torch.bfloat16 and e.pipe.vae.dtype == torch.bfloat16


def test_released_weights_need_flame_deca_deep3d(tmp_path, monkeypatch):
    from facerig.engines import get_engine

    base, weights = write_tiny_rigface(tmp_path, expression_kind="deep3d")
    for env in ("FACERIG_FLAME", "FACERIG_DECA", "FACERIG_DEEP3D"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(AssetMissing, match="flame=.*FACERIG_FLAME") as e:
        get_engine("rigface", weights=str(weights), base=str(base))
    assert "\n" not in str(e.value)
    fake = tmp_path / "generic_model.pkl"
    fake.write_bytes(b"x")
    monkeypatch.setenv("FACERIG_FLAME", str(fake))
    with pytest.raises(AssetMissing, match="deca=.*FACERIG_DECA"):
        get_engine("rigface", weights=str(weights), base=str(base))
    with pytest.raises(AssetMissing, match="deep3d=.*FACERIG_DEEP3D"):
        get_engine("rigface", weights=str(weights), base=str(base), deca=str(fake))


def test_expression_size_mismatch_is_named(tmp_path, fitted, astronaut):
    from facerig.engines import get_engine

    fm, params = fitted
    base, weights = write_tiny_rigface(tmp_path, expression_dim=5)
    e = get_engine("rigface", weights=str(weights), base=str(base), steps=1)
    with pytest.raises(IncompatibleModel, match="5 expression"):
        e.prepare(astronaut, params, fm)


@pytest.fixture(scope="module")
def released_setup(tmp_path_factory):
    """deep3d-kind tiny weights + synthetic FLAME / DECA / Deep3D files in the released layouts."""
    from flame_fixture import write_synthetic_flame
    from rigface_cond_fixture import deca_code, write_deca_with_code, write_deep3d

    from facerig.io.assets import shared_path

    if shared_path("assets", "flame-aux") is None:
        pytest.skip("shared flame-aux folder absent (DECA's 68-landmark embedding is needed)")
    d = tmp_path_factory.mktemp("released")
    write_synthetic_flame(d / "generic_model.pkl")
    write_deca_with_code(d / "deca_model.tar", deca_code())
    write_deep3d(d / "d3dfr_res50_nofc.pth", "rigface")
    base, weights = write_tiny_rigface(d, expression_kind="deep3d")
    return {"weights": str(weights), "base": str(base), "flame": str(d / "generic_model.pkl"),
            "deca": str(d / "deca_model.tar"), "deep3d": str(d / "d3dfr_res50_nofc.pth"), "steps": 1}


@pytest.mark.shared_data
def test_released_weights_take_the_expression_from_the_reference_photo(released_setup, astronaut, grace_hopper):
    from facerig.edit import edit_many

    res = edit_many(astronaut, [{"take": ("expression",)}], "rigface", reference=grace_hopper, buffers=False,
                    engine_options=released_setup)
    assert res[0].image.shape == astronaut.shape and not np.array_equal(res[0].image, astronaut)
    with pytest.raises(InvalidInput, match="--reference"):
        edit_many(astronaut, [{"preset": "smile"}], "rigface", buffers=False, engine_options=released_setup)
    turned = edit_many(astronaut, [{"yaw": 10}], "rigface", buffers=False, engine_options=released_setup)
    assert turned[0].image.shape == astronaut.shape


def test_a_saved_pipeline_folder_needs_no_base(tiny, tmp_path, monkeypatch):
    from facerig.engines import get_engine

    base, weights = tiny
    e = get_engine("rigface", weights=str(weights), base=str(base), steps=1, progress="0")
    e.pipe.save_pretrained(tmp_path / "pipe")
    monkeypatch.delenv("FACERIG_SD15", raising=False)
    e2 = get_engine("rigface", weights=str(tmp_path / "pipe"), steps=1)
    assert e2.pipe.image_size == 64 and e2.expression_kind == "facerig" and not e.progress
    with pytest.raises(InvalidInput, match="progress"):
        get_engine("rigface", weights=str(weights), base=str(base), progress="maybe")
