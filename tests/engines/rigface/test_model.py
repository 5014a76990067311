"""RigFaceUNets on tiny SD-1.5-shaped configs (CPU, seeded): identity states, FaceFusion, the
expression embedding's placement, the released layout and strict loading, save/load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from facerig.engines.rigface.model import (
    TINY_UNET_CONFIG,
    RigFaceUNets,
    clone_unets,
    load_released_unets,
    load_rigface_weights,
)
from facerig.engines.sd.reference import install_reference_readers
from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _inputs(seed: int = 0, batch: int = 1, dim: int = 64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {
        "source": r(1, 4, 8, 8), "text": r(1, 77, 32), "noisy": r(batch, 4, 8, 8),
        "bg": r(1, 4, 8, 8), "render": r(1, 4, 8, 8), "expr": r(1, dim),
    }


def _predict(m: RigFaceUNets, d: dict, t=500, states=None) -> torch.Tensor:
    with torch.no_grad():
        states = m.identity_states(d["source"], d["text"]) if states is None else states
        return m.predict_noise(d["noisy"], t, d["bg"], d["render"], d["expr"], states, d["text"])


@pytest.fixture(scope="module")
def tiny() -> RigFaceUNets:
    return RigFaceUNets.from_config(TINY_UNET_CONFIG, seed=0).eval()


def write_released_layout(root: Path, seed: int = 0, expr_dim: int = 64) -> tuple[Path, Path]:
    """The authors' layout as their training saved it: stock UNet folders written by diffusers,
    the denoiser with 12 input channels and au_aug_mlp.* added to its weight file."""
    torch.manual_seed(seed)
    uid = UNet2DConditionModel(**TINY_UNET_CONFIG)
    den = UNet2DConditionModel(**{**TINY_UNET_CONFIG, "in_channels": 12})
    uid.save_pretrained(root / "unet_id")
    den.save_pretrained(root / "unet_denoise")
    sd = load_file(root / "unet_denoise" / WEIGHTS)
    lin = torch.nn.Linear(expr_dim, 64)
    sd["au_aug_mlp.weight"], sd["au_aug_mlp.bias"] = lin.weight.detach(), lin.bias.detach()
    save_file(sd, root / "unet_denoise" / WEIGHTS)
    for name in ("unet_id", "unet_denoise"):  # the release's configs carry extra private keys
        f = root / name / "config.json"
        cfg = json.loads(f.read_text())
        cfg.update({"_class_name": "UNetDenoise2DConditionModel", "_name_or_path": "runwayml/stable-diffusion-v1-5"})
        f.write_text(json.dumps(cfg))
    return root / "unet_id", root / "unet_denoise"


def test_sixteen_states_and_conv_in_over_twelve_channels(tiny):
    d = _inputs()
    with torch.no_grad():
        states = tiny.identity_states(d["source"], d["text"])
    assert tiny.num_states == 16 and len(states) == 16
    assert tiny.unet_denoise.conv_in.weight.shape[1] == 12
    assert tuple(tiny.au_aug_mlp.weight.shape) == (64, 64)
    assert _predict(tiny, d).shape == (1, 4, 8, 8)


def test_cached_and_recomputed_identity_states_give_identical_predictions(tiny):
    d = _inputs(1, batch=2)
    with torch.no_grad():
        cached = tiny.identity_states(d["source"], d["text"])
    for t in (999, 500, 20):
        assert torch.equal(_predict(tiny, d, t, states=cached), _predict(tiny, d, t))
    with torch.no_grad():
        full = tiny.identity_states(d["source"], d["text"], stop_early=False)
    assert all(torch.equal(a, b) for a, b in zip(cached, full, strict=True))


def test_identity_states_matter_and_expression_matters(tiny):
    d = _inputs(2)
    base = _predict(tiny, d)
    other = dict(d, source=d["source"] + 1.0)
    assert (base - _predict(tiny, other)).abs().max() > 1e-4
    other = dict(d, expr=d["expr"] * 0)
    assert (base - _predict(tiny, other)).abs().max() > 1e-4


def test_expression_goes_where_the_release_adds_it(tiny):
    """Release: emb = time_embedding(t_emb) + au_aug_mlp(au), then the blocks. Rebuild that with a
    stock UNet (no class embedding) and a hook on time_embedding, readers on the same bank."""
    d = _inputs(3)
    stock = UNet2DConditionModel(**{**TINY_UNET_CONFIG, "in_channels": 12}).eval()
    stock.load_state_dict(tiny.unet_denoise.state_dict())
    install_reference_readers(stock, "concat_keep_half", bank=tiny.bank)
    emb = tiny.au_aug_mlp(d["expr"]).detach()
    h = stock.time_embedding.register_forward_hook(lambda mod, args, out: out + emb)
    with torch.no_grad():
        states = tiny.identity_states(d["source"], d["text"])
        got = _predict(tiny, d, 321, states)
        tiny.bank.set(states)
        want = stock(torch.cat([d["noisy"], d["bg"], d["render"]], 1), 321, encoder_hidden_states=d["text"]).sample
    h.remove()
    assert torch.equal(got, want)


def test_released_layout_written_by_diffusers_loads_strictly(tmp_path):
    uid, den = write_released_layout(tmp_path)
    m = load_released_unets(uid, den).eval()
    assert m.expression_kind == "deep3d"
    assert torch.equal(m.au_aug_mlp.weight, load_file(den / WEIGHTS)["au_aug_mlp.weight"])
    assert len(load_file(uid / WEIGHTS)) == len(m.unet_id.state_dict())
    assert all(p.requires_grad and not p.is_meta for p in m.parameters())
    d = _inputs(4)
    out = _predict(m, d)
    assert torch.isfinite(out).all()
    # the release root layout and the direct pair give the same model
    rel = tmp_path / "release" / "pre_trained"
    for name, src in (("unet_id", uid), ("unet_denoise", den)):
        shutil.copytree(src, rel / name / "checkpoint-70000")
        (rel / name / "checkpoint-500").mkdir()  # an older, empty checkpoint is not chosen
    assert torch.equal(_predict(load_rigface_weights(tmp_path / "release").eval(), d), out)
    assert torch.equal(_predict(load_rigface_weights(tmp_path).eval(), d), out)


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "au_missing", "au_shape"])
def test_strict_loading_names_the_offending_key(tmp_path, case):
    uid, den = write_released_layout(tmp_path)
    if case == "missing":
        f, key = uid / WEIGHTS, "mid_block.attentions.0.proj_in.bias"
        sd = load_file(f)
        del sd[key]
    elif case == "unexpected":
        f, key = den / WEIGHTS, "au_mlp.weight"
        sd = load_file(f)
        sd[key] = torch.zeros(3)
    elif case == "shape":
        f, key = den / WEIGHTS, "conv_in.weight"
        sd = load_file(f)
        sd[key] = sd[key][:, :8].contiguous()
    elif case == "au_missing":
        f, key = den / WEIGHTS, "au_aug_mlp.bias"
        sd = load_file(f)
        del sd[key]
    else:
        f, key = den / WEIGHTS, "au_aug_mlp.weight"
        sd = load_file(f)
        sd[key] = torch.zeros(64, 50)
    save_file(sd, f)
    with pytest.raises(CheckpointMismatch) as ei:
        load_released_unets(uid, den)
    e = ei.value
    assert key in str(e)
    where = {"missing": e.missing, "au_missing": e.missing, "unexpected": e.unexpected}.get(case, e.mismatched)
    assert key in where
    assert "RigFace" in str(e)


def test_config_and_file_errors(tmp_path):
    uid, den = write_released_layout(tmp_path)
    cfg = json.loads((den / "config.json").read_text())
    (den / "config.json").write_text(json.dumps({**cfg, "in_channels": 4}))
    with pytest.raises(InvalidInput, match="in_channels"):
        load_released_unets(uid, den)
    (den / "config.json").write_text(json.dumps({**cfg, "rigface_magic": 1}))
    with pytest.raises(InvalidInput, match="rigface_magic"):
        load_released_unets(uid, den)
    (den / "config.json").write_text(json.dumps(cfg))
    (uid / WEIGHTS).rename(uid / "diffusion_pytorch_model.bin")
    with pytest.raises(InvalidInput, match="safetensors only"):
        load_released_unets(uid, den)
    with pytest.raises(AssetMissing, match="RigFace weights"):
        load_rigface_weights(tmp_path / "nowhere")


def test_save_load_round_trip_is_bit_identical(tmp_path):
    m = RigFaceUNets.from_config(TINY_UNET_CONFIG, expression_kind="facerig", expression_dim=7, seed=4).eval()
    d = _inputs(5, batch=2, dim=7)
    m.save_pretrained(tmp_path / "w")
    info = json.loads((tmp_path / "w" / "rigface.json").read_text())
    assert info["expression_kind"] == "facerig" and info["expression_dim"] == 7
    den_cfg = json.loads((tmp_path / "w" / "unet_denoise" / "config.json").read_text())
    assert den_cfg["class_embed_type"] is None and den_cfg["in_channels"] == 12  # the release's config
    assert set(load_file(tmp_path / "w" / "unet_denoise" / WEIGHTS)) >= {"au_aug_mlp.weight", "au_aug_mlp.bias"}
    m2 = RigFaceUNets.from_pretrained(tmp_path / "w").eval()
    assert m2.expression_kind == "facerig" and m2.expression_dim == 7
    assert torch.equal(_predict(m, d), _predict(m2, d))
    # a pipeline folder keeps the model under unets/
    shutil.copytree(tmp_path / "w", tmp_path / "pipe" / "unets")
    assert torch.equal(_predict(load_rigface_weights(tmp_path / "pipe").eval(), d), _predict(m, d))


def test_clone_has_its_own_recorder(tiny):
    d = _inputs(6)
    twin = clone_unets(tiny)
    with torch.no_grad():
        for p in twin.unet_id.parameters():
            p.add_(0.01)
        a = tiny.identity_states(d["source"], d["text"])
        b = twin.identity_states(d["source"], d["text"])
    assert not torch.equal(a[3], b[3])
    assert torch.equal(a[3], tiny.identity_states(d["source"], d["text"])[3])


def test_bad_arguments_raise_named_errors(tiny):
    d = _inputs(7)
    with torch.no_grad():
        states = tiny.identity_states(d["source"], d["text"])
        with pytest.raises(InvalidInput, match="expression"):
            tiny.predict_noise(d["noisy"], 1, d["bg"], d["render"], torch.zeros(1, 5), states, d["text"])
        with pytest.raises(InvalidInput, match="background_latent"):
            tiny.predict_noise(d["noisy"], 1, d["bg"][:, :, :4], d["render"], d["expr"], states, d["text"])
        with pytest.raises(InvalidInput, match="identity_states"):
            tiny.predict_noise(d["noisy"], 1, d["bg"], d["render"], d["expr"], states[:-1], d["text"])
        with pytest.raises(InvalidInput, match="text_embeds"):
            tiny.identity_states(d["source"], torch.zeros(1, 77, 8))
    with pytest.raises(InvalidInput, match="expression_dim"):
        RigFaceUNets.from_config(TINY_UNET_CONFIG, expression_kind="facerig")


def test_from_sd_unet_starts_from_the_sd_prediction():
    torch.manual_seed(0)
    sd = UNet2DConditionModel(**TINY_UNET_CONFIG).eval()
    m = RigFaceUNets.from_sd_unet(sd, expression_kind="facerig", expression_dim=5).eval()
    assert torch.equal(m.unet_denoise.conv_in.weight[:, :4], sd.conv_in.weight)
    assert m.unet_denoise.conv_in.weight[:, 4:].abs().sum() == 0 and m.au_aug_mlp.weight.abs().sum() == 0
    d = _inputs(8, dim=5)
    with torch.no_grad():
        # identity = the noisy latent's own block inputs at the same t: FaceFusion is then plain
        # self-attention (identity_states itself runs at t = 0)
        t = torch.full((1,), 400)
        own = m.recorder.capture(lambda: m.unet_id(d["noisy"], t, encoder_hidden_states=d["text"]))
        got = m.predict_noise(d["noisy"], 400, d["bg"], d["render"], d["expr"], own, d["text"])
        want = sd(d["noisy"], 400, encoder_hidden_states=d["text"]).sample
    assert (got - want).abs().max() < 1e-5
