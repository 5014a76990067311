"""DiffusionRig engine + `facerig train diffusionrig` / `facerig personalize diffusionrig` smoke runs
(tiny models; quality irrelevant)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facerig.cli import main
from facerig.engines import available_engines, get_engine
from facerig.errors import IncompatibleModel, InvalidInput


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.fit.api import fit_image
    from facerig.morphable import load_face_model

    m = load_face_model("builtin")
    return astronaut, fit_image(astronaut, m).params, m


def _tiny_pipeline(face_model: str):
    from facerig.engines.diffusionrig import (
        TINY_UNET_CONFIG,
        DiffusionRigPipeline,
        DiffusionRigUNet,
        GlobalEncoder,
    )

    torch.manual_seed(0)
    cfg = dict(TINY_UNET_CONFIG, face_model=face_model)
    return DiffusionRigPipeline(DiffusionRigUNet(**cfg), GlobalEncoder(latent_dim=cfg.get("latent_dim", 64)))


def test_registered():
    assert available_engines()["diffusionrig"]["requires_weights"] is True
    with pytest.raises(InvalidInput):
        get_engine("diffusionrig")


def test_engine_output_and_refusal(fitted, tmp_path):
    img, p, m = fitted
    pipe = _tiny_pipeline(m.fingerprint())
    pipe.save_pretrained(tmp_path / "pipe")
    eng = get_engine("diffusionrig", weights=str(tmp_path / "pipe"), steps=3)
    target = p.replace(rotation=p.rotation + torch.tensor([[0.0, 0.25, 0.0]]))
    out = eng.edit(img, p, target, m)
    assert out.shape == img.shape and out.dtype == np.uint8
    # outside the pasted FFHQ crop the frame is untouched; inside it changed
    assert np.array_equal(out[:5, :5], img[:5, :5]) and np.abs(out.astype(int) - img).mean() > 1
    # same source, same target, fixed noise: deterministic
    assert np.array_equal(eng.edit(img, p, target, m), out)
    # weights of another face model refuse these buffers
    other = get_engine("diffusionrig", pipeline=_tiny_pipeline("flame"), steps=2)
    with pytest.raises(IncompatibleModel, match="flame"):
        other.edit(img, p, target, m)


def test_train_and_personalize_cli(astronaut, grace_hopper, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i, a in enumerate((astronaut, astronaut[:, ::-1], grace_hopper)):
        Image.fromarray(np.ascontiguousarray(a)).save(inp / f"p{i}.png")
    shards = tmp_path / "shards"
    assert main(["prepare", str(inp), "-o", str(shards), "--size", "64", "--no-progress"]) == 0
    run = tmp_path / "run"
    args = ["train", "diffusionrig", "--config", "tiny_cpu", "--data", str(shards), "-o", str(run), "--max-steps", "2"]
    assert main(args) == 0
    assert (run / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    cfg = json.loads((run / "final" / "pipeline" / "unet" / "config.json").read_text())
    assert cfg["image_size"] == 32 and cfg["face_model"].startswith("builtin-")
    # stage 2 on an album of one person, from the stage-1 run
    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(astronaut).save(album / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(album / "b.png")
    run2 = tmp_path / "run2"
    assert main(["personalize", "diffusionrig", "--album", str(album), "--base", str(run), "-o", str(run2),
                 "--config", "tiny_cpu", "--max-steps", "1"]) == 0
    personal = json.loads((run2 / "final" / "pipeline" / "personal.json").read_text())
    assert personal["num_photos"] == 2 and len(personal["identity"]) > 0
    from facerig.engines.diffusionrig import DiffusionRigPipeline

    base = DiffusionRigPipeline.from_pretrained(run / "final" / "pipeline")
    tuned = DiffusionRigPipeline.from_pretrained(run2 / "final" / "pipeline")
    for (n, a), b in zip(base.encoder.state_dict().items(), tuned.encoder.state_dict().values(), strict=True):
        if "running" not in n and "num_batches" not in n:
            assert torch.equal(a, b), n  # encoder frozen in stage 2


# ---- personalised weights: the album's mean identity (personal.json) renders the buffers --------


class _SpyPipeline:
    """Delegates to a pipeline and records the conditioning buffers each sampling call gets."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.conds = []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, cond, **kw):
        self.conds.append(cond.clone())
        return self.pipe(cond, **kw)


def _personal_weights(path, face_model, personal):
    _tiny_pipeline(face_model).save_pretrained(path)
    if personal is not None:
        (path / "personal.json").write_text(json.dumps(personal))
    return str(path)


def test_personal_identity_renders_the_buffers(fitted, tmp_path, caplog):
    import logging

    img, p, m = fitted
    fp = m.fingerprint()
    album = (p.identity[0] + 1.5).tolist()  # an identity clearly unlike the fitted one
    w = _personal_weights(tmp_path / "w", fp, {"identity": album, "face_model": fp, "num_photos": 3})
    eng = get_engine("diffusionrig", weights=w, steps=1)
    off = get_engine("diffusionrig", weights=w, steps=1, personal_identity=False)
    with caplog.at_level(logging.INFO, logger="facerig.engines.diffusionrig.engine"):
        st = eng.prepare(img, p, m)
    assert "mean identity" in caplog.text and "personal.json" in caplog.text
    st_off = off.prepare(img, p, m)
    assert st_off.identity is None and torch.equal(st.identity, torch.tensor([album]))
    # the source buffers change with the identity; the crop (from the source's own fit) does not
    assert (st.source_cond - st_off.source_cond).abs().mean() > 1e-3
    assert np.allclose(st.crop.matrix, st_off.crop.matrix)
    # the album identity equal to the fitted one gives the fitted buffers: only the identity is swapped
    w_same = _personal_weights(tmp_path / "same", fp, {"identity": p.identity[0].tolist(), "face_model": fp})
    same = get_engine("diffusionrig", weights=w_same, steps=1).prepare(img, p, m)
    assert torch.allclose(same.source_cond, st_off.source_cond, atol=1e-6)
    # edits: the target's buffers are rendered with the album identity too
    target = p.replace(rotation=p.rotation + torch.tensor([[0.0, 0.2, 0.0]]))
    eng.pipe, off.pipe = _SpyPipeline(eng.pipe), _SpyPipeline(off.pipe)
    eng.render_frame(st, target)
    off.render_frame(st_off, target.replace(identity=torch.tensor([album])))
    off.render_frame(st_off, target)
    assert torch.allclose(eng.pipe.conds[0], off.pipe.conds[0], atol=1e-6)
    assert (eng.pipe.conds[0] - off.pipe.conds[1]).abs().mean() > 1e-3


def test_personal_identity_of_another_face_model_is_refused(fitted, tmp_path):
    img, p, m = fitted
    fp = m.fingerprint()
    k = p.identity.shape[1]
    w = _personal_weights(tmp_path / "w", fp, {"identity": [0.5] * k, "face_model": "flame-0123456789"})
    with pytest.raises(IncompatibleModel, match="flame-0123456789"):
        get_engine("diffusionrig", weights=w, steps=1).prepare(img, p, m)
    # turned off, the fitted identity is used and nothing is refused
    off = get_engine("diffusionrig", weights=w, steps=1, personal_identity=False)
    assert off.prepare(img, p, m).identity is None
    # same face model name but another number of coefficients
    w2 = _personal_weights(tmp_path / "w2", fp, {"identity": [0.5] * (k + 3), "face_model": fp})
    with pytest.raises(IncompatibleModel, match="coefficients"):
        get_engine("diffusionrig", weights=w2, steps=1).prepare(img, p, m)
    # a personal.json without an identity list
    w3 = _personal_weights(tmp_path / "w3", fp, {"identity": "tall", "face_model": fp})
    with pytest.raises(InvalidInput, match="identity"):
        get_engine("diffusionrig", weights=w3, steps=1)
