"""InstaFaceEngine end to end on tiny random weights and the astronaut photo: registry, the edit
changes only the face region, personalize saves weights that skip the fine-tune on the same photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facerig.errors import AssetMissing, InvalidInput

from .conftest import tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from facerig.engines.sd.base import write_tiny_sd_base

    root = tmp_path_factory.mktemp("ife")
    base = write_tiny_sd_base(root / "sd")
    tiny_model(clip_dim=0).save_pretrained(root / "weights")
    return base, root / "weights"


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import as_face_model

    fm = as_face_model("builtin")
    return fm, _fit_one(astronaut, fm, "largest", "astronaut")


@pytest.fixture(scope="module")
def engine(tiny):
    from facerig.engines import get_engine
    from facerig.eval.dlib_port import DlibResNet

    torch.manual_seed(0)
    base, weights = tiny
    return get_engine("instaface", weights=str(weights), base=str(base), steps=2, size=64, finetune_steps=2,
                      finetune_lr=1e-3, face_net=DlibResNet())


def test_registered_and_options_checked(tiny):
    from facerig.engines import available_engines, get_engine

    info = available_engines()["instaface"]
    assert info["requires_weights"] is True and "InstaFace" in info["description"]
    base, weights = tiny
    with pytest.raises(InvalidInput, match="engine options"):
        get_engine("instaface", weights=str(weights), base=str(base), colour=1)
    with pytest.raises(AssetMissing, match="InstaFace weights"):
        get_engine("instaface", weights=str(weights) + "-nowhere", base=str(base))
    with pytest.raises(InvalidInput, match="--weights"):
        get_engine("instaface", base=str(base))


def test_edit_changes_only_the_face_region_and_personalize(engine, tiny, fitted, astronaut, tmp_path):
    from facerig.rig.expression import apply_preset

    fm, params = fitted
    target = apply_preset(params, "smile", model=fm)
    state = engine.prepare(astronaut, params, fm)
    assert len(state.finetune_losses) == 2 and state.net is not engine.parts.model
    out = engine.render_frame(state, target)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    changed = np.abs(out.astype(int) - astronaut).sum(2) > 0
    assert 0 < changed.mean() < 0.3  # only the face region of the 512 x 512 photo
    ys, xs = np.nonzero(changed)
    assert 100 < ys.mean() < 300 and 150 < xs.mean() < 350  # around the astronaut's face
    assert np.array_equal(out, engine.render_frame(state, target))  # same seed, same image
    # personalize: saved weights carry the photo's fingerprint; an edit with them skips the fine-tune
    from facerig.engines import get_engine

    d = engine.personalize(astronaut, params, fm, tmp_path / "me")
    eng2 = get_engine("instaface", weights=str(d), base=str(tiny[0]), steps=2, size=64, finetune_steps=2,
                      face_net=engine.identity.face_net)
    st2 = eng2.prepare(astronaut, params, fm)
    assert st2.finetune_losses == [] and st2.net is eng2.parts.model
    assert st2.fingerprint == state.fingerprint
    # the personalized weights give the fine-tuned model's edit
    assert np.array_equal(eng2.render_frame(st2, target), engine.render_frame(engine.prepare(astronaut, params, fm),
                                                                              target))
