"""SD base loading: diffusers folder, original-layout single file, and the one-line errors."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from facerig.engines.sd.base import load_sd_base, write_tiny_sd_base  # noqa: E402
from facerig.errors import AssetMissing, InvalidInput  # noqa: E402


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return write_tiny_sd_base(tmp_path_factory.mktemp("sdbase") / "sd15", seed=0)


def _vae_to_ldm(sd: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> original SD keys (the inverse of diffusers' converter)."""
    out = {}
    for k, v in sd.items():
        o = k.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", o):
            o = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", o):
            o = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", o):
            o = f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", o):
            o = f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", o):
            o = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", o):
            part = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
            name, kind = m[2].rsplit(".", 1)
            o = f"{m[1]}.mid.attn_1.{part[name]}.{kind}"
            if kind == "weight" and v.ndim == 2:
                v = v[:, :, None, None]  # 1x1 convs in the original layout
        o = o.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + o] = v
    return out


def _write_single_file(base_dir, target):
    from safetensors.torch import save_file

    b = load_sd_base(base_dir)
    sd = _vae_to_ldm(b.vae.state_dict(), len(b.vae.config.down_block_types))
    sd.update({"cond_stage_model.transformer." + k: v for k, v in b.text_encoder.state_dict().items()})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(target))
    return b


def test_folder_loads_all_parts(tiny_base):
    b = load_sd_base(tiny_base)
    assert b.vae.config.latent_channels == 4 and b.scaling_factor == pytest.approx(0.18215)
    assert b.text_encoder.config.hidden_size == 32
    assert b.scheduler_config["beta_schedule"] == "scaled_linear"
    assert b.unet_config is None and b.source == tiny_base
    ids = b.tokenizer("A close up of a person.", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == b.tokenizer.bos_token_id
    assert not any(p.requires_grad for p in b.vae.parameters())


def test_env_var_is_the_default(tiny_base, monkeypatch):
    monkeypatch.setenv("FACERIG_SD15", str(tiny_base))
    assert load_sd_base().source == tiny_base


def test_single_file_matches_folder(tiny_base, tmp_path, monkeypatch):
    """An original-layout single file with the SD 1.5 architecture loads through the bundled configs;
    here the tiny weights do not fit that architecture, so patch the bundled configs to the tiny ones."""
    import facerig.engines.sd.base as base_mod

    ref = _write_single_file(tiny_base, tmp_path / "model.safetensors")
    tiny = {"vae": dict(ref.vae.config), "text_encoder": ref.text_encoder.config.to_dict(),
            "scheduler": base_mod.bundled_config("scheduler"), "unet": base_mod.bundled_config("unet")}
    monkeypatch.setattr(base_mod, "bundled_config", lambda name: dict(tiny[name]))
    with pytest.raises(AssetMissing, match="tokenizer"):
        load_sd_base(tmp_path / "model.safetensors")
    b = load_sd_base(tmp_path / "model.safetensors", tokenizer=tiny_base / "tokenizer")
    shutil.copytree(tiny_base / "tokenizer", tmp_path / "tokenizer")
    b2 = load_sd_base(tmp_path / "model.safetensors")  # the sibling tokenizer/ folder
    assert b2.tokenizer.vocab_size == b.tokenizer.vocab_size
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(b.vae.encode(x).latent_dist.mean, ref.vae.encode(x).latent_dist.mean)
        ids = torch.tensor([[1, 2, 3, 4]])
        assert torch.equal(b.text_encoder(ids).last_hidden_state, ref.text_encoder(ids).last_hidden_state)
    assert b.unet_config is not None and b.unet_config["cross_attention_dim"] == 768


def test_single_file_with_wrong_architecture_names_a_key(tiny_base, tmp_path):
    _write_single_file(tiny_base, tmp_path / "tiny.safetensors")
    shutil.copytree(tiny_base / "tokenizer", tmp_path / "tokenizer")
    with pytest.raises(InvalidInput, match=r"mis-shaped|missing|unexpected") as e:
        load_sd_base(tmp_path / "tiny.safetensors")  # bundled configs are SD 1.5 size
    assert "\n" not in str(e.value)


def test_errors_are_one_line(tiny_base, tmp_path, monkeypatch):
    monkeypatch.delenv("FACERIG_SD15", raising=False)
    with pytest.raises(AssetMissing, match="FACERIG_SD15"):
        load_sd_base()
    with pytest.raises(AssetMissing, match="nowhere"):
        load_sd_base(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_base, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(AssetMissing, match="text_encoder/") as e:
        load_sd_base(broken)
    assert "\n" not in str(e.value)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidInput, match="--base"):
        load_sd_base(tmp_path / "notes.txt")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInput, match="readable"):
        load_sd_base(tmp_path / "garbage.safetensors")


def test_bundled_sd15_configs_build_the_sd15_architectures():
    """The bundled configs a single-file base is built from give SD 1.5's parameter counts (VAE
    83,653,863; CLIP ViT-L/14 text encoder 123,060,480; UNet 859,520,964), built on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from facerig.engines.sd.base import bundled_config

    def clean(d):
        return {k: v for k, v in d.items() if not k.startswith("_") and k not in ("architectures", "model_type")}

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(clean(bundled_config("vae")))
        te = CLIPTextModel(CLIPTextConfig(**clean(bundled_config("text_encoder"))))
        unet = UNet2DConditionModel.from_config(clean(bundled_config("unet")))
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in te.parameters()) == 123_060_480
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert bundled_config("scheduler")["beta_schedule"] == "scaled_linear"
