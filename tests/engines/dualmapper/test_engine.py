"""``--engine dualmapper``: mappers applied to a real photo through the warp generator, rendered by the
warp engine at the photo's resolution (plus the adapter's appearance offset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import load_face_model

    model = load_face_model("builtin")
    return astronaut, _fit_one(astronaut, model, "largest", "astronaut"), model


def _mapper(model, out, *, w_bias=0.0, target="smile"):
    """A fresh mapper of the warp generator's layout; ``w_bias`` on the texture head's bias makes it
    add a known constant to every w entry (dw = bias, the head's weights are zero)."""
    from facerig.engines.dualmapper.mapper import DualMapper

    names = list(model.expression_names)
    m = DualMapper(w_tokens=16, w_dim=192, n_psi=len(names), psi_names=names, hidden=32, heads=2, layers=1,
                   target=target, text=target, generator="warp",
                   psi_lower=[0.0] * len(names), psi_upper=[1.0] * len(names))
    with torch.no_grad():
        m.dw_head.bias.fill_(w_bias)
    m.save_pretrained(out)
    return out


def test_a_fresh_mapper_reproduces_the_warp_engine(fitted, tmp_path):
    """A fresh (zero-initialised) mapper is the identity edit: with a smile preset given beside it
    the dualmapper engine's output equals the warp engine's for that preset (bit for bit: the
    appearance offset of w' = w0 is zero)."""
    import facerig

    img, params, model = fitted
    path = _mapper(model, tmp_path / "m")
    a = facerig.edit(img, preset="smile", engine="dualmapper", params=params, model=model,
                     engine_options={"mapper": str(path)}).image
    b = facerig.edit(img, preset="smile", engine="warp", params=params, model=model).image
    assert a.shape == img.shape
    assert np.array_equal(a, b)


def test_mapper_alone_is_an_edit_and_appearance_offset_is_pasted(fitted, tmp_path):
    """With only a mapper given, the edit is not "empty"; a mapper whose texture head adds a
    constant to w brightens the face (and only around the face) in the frame."""
    import facerig

    img, params, model = fitted
    path = _mapper(model, tmp_path / "m", w_bias=0.1)
    res = facerig.edit(img, engine="dualmapper", params=params, model=model, engine_options={"mapper": str(path)})
    out = res.image.astype(int)
    d = (out - img.astype(int)).mean(2)
    assert not any("changes nothing" in n for n in res.notes)
    box = params.crop[0]
    assert d.max() > 10, "the appearance offset did not reach the frame"
    # far from the face nothing changes
    assert np.abs(d[:, :40]).max() == 0 and np.abs(d[-40:, :]).max() == 0
    assert box is not None


def test_two_mappers_compose_and_bad_mapper_paths_are_named(fitted, tmp_path):
    from facerig.engines import get_engine
    from facerig.errors import InvalidInput

    img, params, model = fitted
    p1 = _mapper(model, tmp_path / "a", w_bias=0.05)
    p2 = _mapper(model, tmp_path / "b", w_bias=0.05)
    eng1 = get_engine("dualmapper", mapper=str(p1))
    eng2 = get_engine("dualmapper", mapper=[str(p1), str(p2)])
    st1, st2 = eng1.prepare(img, params, model), eng2.prepare(img, params, model)
    w1, _, _ = eng1.edited(st1, params)
    w2, _, _ = eng2.edited(st2, params)
    assert torch.allclose(w2 - st2.w0, 2 * (w1 - st1.w0), atol=1e-5)  # two +0.05 offsets in a row
    with pytest.raises(InvalidInput, match="--mapper"):
        get_engine("dualmapper", mapper=str(tmp_path / "missing"))
    with pytest.raises(InvalidInput, match="--mapper"):
        get_engine("dualmapper")


def test_edited_expression_stays_in_the_blendshape_range(fitted, tmp_path):
    """A mapper saved without bounds (or driving past them) never hands the warp engine a negative
    or > 1 blendshape (a sad mapper drove mouthLowerDown to -0.44 and painted grey patches); the
    warp generator declares [0, 1] so trained mappers clamp themselves."""
    from facerig.engines import get_engine
    from facerig.engines.dualmapper.adapters import build_generator
    from facerig.engines.dualmapper.mapper import DualMapper

    img, params, model = fitted
    names = list(model.expression_names)
    assert build_generator("warp", img, params, model).psi_bounds == ([0.0] * len(names), [1.0] * len(names))
    m = DualMapper(w_tokens=16, w_dim=192, n_psi=len(names), psi_names=names, hidden=32, heads=2, layers=1,
                   generator="warp")
    with torch.no_grad():
        m.dpsi_head.bias.copy_(torch.linspace(-2, 2, len(names)))
    m.save_pretrained(tmp_path / "m")
    eng = get_engine("dualmapper", mapper=str(tmp_path / "m"))
    _, psi1, _ = eng.edited(eng.prepare(img, params, model), params)
    assert float(psi1.min()) == 0.0 and float(psi1.max()) == 1.0
