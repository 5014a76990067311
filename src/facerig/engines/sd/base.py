"""The user's Stable Diffusion 1.5 base: VAE, CLIP text encoder, tokenizer and scheduler config.

:func:`load_sd_base` reads either

* a diffusers folder (``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` [, ``unet/``]), or
* a single-file checkpoint in the original SD layout (``.safetensors`` or ``.ckpt``; keys
  ``first_stage_model.*`` and ``cond_stage_model.transformer.*``). The architectures then come from
  the SD 1.5 configs bundled in ``configs/sd15/`` (never a hub lookup) and the weights are
  converted with diffusers' own key converters. A single file holds no tokenizer vocabulary: the
  tokenizer folder comes from ``tokenizer=`` or a ``tokenizer/`` folder beside the file.

``path=None`` reads ``$FACERIG_SD15``. Every failure is one line (:class:`AssetMissing` /
:class:`InvalidInput`) saying what is expected and where it was looked for.

:func:`write_tiny_sd_base` writes a tiny random base in the diffusers layout for tests.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facerig.errors import AssetMissing, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["ENV_VAR", "SD15_CONFIG_DIR", "SDBase", "bundled_config", "load_sd_base", "write_tiny_sd_base"]

ENV_VAR = "FACERIG_SD15"
SD15_CONFIG_DIR = Path(__file__).with_name("configs") / "sd15"
_FOLDER_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")
_HOW = (f"pass --base PATH or set ${ENV_VAR} to a Stable Diffusion 1.5 diffusers folder (vae/, text_encoder/, "
        "tokenizer/, scheduler/) or an original-layout .safetensors/.ckpt file")


@dataclass
class SDBase:
    """The loaded pieces of a Stable Diffusion 1.5 base (the UNet itself is engine-specific)."""

    vae: Any                # diffusers AutoencoderKL
    text_encoder: Any       # transformers CLIPTextModel
    tokenizer: Any          # transformers CLIPTokenizer
    scheduler_config: dict[str, Any]
    unet_config: dict[str, Any] | None
    source: Path

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def bundled_config(name: str) -> dict[str, Any]:
    """One of the bundled SD 1.5 configs: ``vae``, ``text_encoder``, ``scheduler`` or ``unet``."""
    f = SD15_CONFIG_DIR / f"{name}.json"
    if not f.is_file():
        raise InvalidInput("name", "one of vae, text_encoder, scheduler, unet", name)
    return dict(json.loads(f.read_text()))


def _resolve_path(path: str | os.PathLike[str] | None) -> Path:
    if path is None or str(path) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise AssetMissing("Stable Diffusion 1.5 base", f"--base (not given) and ${ENV_VAR} (unset)", _HOW)
        path = env
    p = Path(path).expanduser()
    if not p.exists():
        raise AssetMissing("Stable Diffusion 1.5 base", str(p), _HOW)
    return p


def load_sd_base(path: str | os.PathLike[str] | None = None, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32,
                 tokenizer: str | os.PathLike[str] | None = None) -> SDBase:
    """Load the SD 1.5 base at ``path`` (``None``: ``$FACERIG_SD15``); see the module docstring."""
    if not isinstance(dtype, torch.dtype):
        raise InvalidInput("dtype", "a torch.dtype", dtype)
    p = _resolve_path(path)
    if p.is_dir():
        base = _load_folder(p, tokenizer)
    elif p.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth"):
        base = _load_single_file(p, tokenizer)
    else:
        raise InvalidInput("--base", "a diffusers folder or a .safetensors/.ckpt Stable Diffusion 1.5 checkpoint",
                           str(p))
    for m in (base.vae, base.text_encoder):
        m.to(device)
        if next(m.parameters()).dtype != dtype:
            m.to(dtype=dtype)
        m.eval().requires_grad_(False)
    log.info("SD base loaded from %s (%s, %s)", p, device, dtype)
    return base


def _read_json(f: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(f.read_text()))
    except (OSError, ValueError) as e:
        raise InvalidInput(str(f), "a readable JSON config", type(e).__name__) from e


def _load_tokenizer(folder: Path, looked: str) -> Any:
    from transformers import CLIPTokenizer

    names = ("vocab.json", "tokenizer.json")
    if not folder.is_dir() or not any((folder / n).is_file() for n in names):
        raise AssetMissing("CLIP tokenizer folder (vocab.json + merges.txt or tokenizer.json)", looked,
                           "a single-file base holds no tokenizer: pass tokenizer= (engine option) or put the "
                           "SD 1.5 tokenizer/ folder beside the checkpoint" if "beside" in looked else _HOW)
    try:
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise InvalidInput(str(folder), "a CLIP tokenizer folder", f"{type(e).__name__}: {e}".splitlines()[0]) from e


def _load_folder(p: Path, tokenizer: str | os.PathLike[str] | None) -> SDBase:
    missing = [d for d in _FOLDER_PARTS if not (p / d).is_dir()]
    if tokenizer is not None and "tokenizer" in missing:
        missing.remove("tokenizer")
    if missing:
        raise AssetMissing(f"Stable Diffusion 1.5 base folder parts {', '.join(d + '/' for d in missing)}", str(p),
                           _HOW)
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    sched_file = p / "scheduler" / "scheduler_config.json"
    if not sched_file.is_file():
        raise AssetMissing("scheduler config", str(sched_file), _HOW)
    try:
        vae = AutoencoderKL.from_pretrained(str(p / "vae"), local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(p / "text_encoder"), local_files_only=True)
    except (OSError, ValueError) as e:
        first = f"{type(e).__name__}: {e}".splitlines()[0]
        raise InvalidInput(str(p), "a Stable Diffusion 1.5 diffusers folder with loadable vae/ and text_encoder/",
                           first) from e
    tok_dir = Path(tokenizer) if tokenizer is not None else p / "tokenizer"
    tok = _load_tokenizer(tok_dir, str(tok_dir))
    unet_cfg = _read_json(p / "unet" / "config.json") if (p / "unet" / "config.json").is_file() else None
    return SDBase(vae=vae, text_encoder=text_encoder, tokenizer=tok, scheduler_config=_read_json(sched_file),
                  unet_config=unet_cfg, source=p)


def _read_state_dict(f: Path) -> dict[str, torch.Tensor]:
    try:
        if f.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(f)))
        obj = torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding failure is one typed line
        raise InvalidInput("--base", "a readable Stable Diffusion checkpoint", f"{f} ({type(e).__name__})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InvalidInput("--base", "a checkpoint holding a state dict", f"{f} ({type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str, f: Path) -> None:
    own = module.state_dict()
    # position_ids is a non-persistent buffer in recent transformers; old checkpoints carry it
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or extra or bad:
        first = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
                 f"shape of {bad[0]} {tuple(sd[bad[0]].shape)} != {tuple(own[bad[0]].shape)}")
        raise InvalidInput("--base", f"an SD 1.5 {what} in the original layout",
                           f"{f}: {len(missing)} missing, {len(extra)} unexpected, {len(bad)} mis-shaped keys; {first}")
    module.load_state_dict(sd, strict=True)


def _load_single_file(f: Path, tokenizer: str | os.PathLike[str] | None) -> SDBase:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    ckpt = _read_state_dict(f)
    if not any(k.startswith("first_stage_model.") for k in ckpt) or not any(
            k.startswith("cond_stage_model.transformer.") for k in ckpt):
        raise InvalidInput("--base", "an original-layout SD 1.5 checkpoint (first_stage_model.*, "
                           "cond_stage_model.transformer.* keys)", str(f))
    vae_cfg = {k: v for k, v in bundled_config("vae").items() if not k.startswith("_")}
    vae = AutoencoderKL.from_config(vae_cfg)
    _load_strict(vae, convert_ldm_vae_checkpoint(ckpt, vae_cfg), "VAE", f)
    te_cfg = CLIPTextConfig(**{k: v for k, v in bundled_config("text_encoder").items()
                               if k not in ("architectures", "model_type")})
    text_encoder = CLIPTextModel(te_cfg)
    _load_strict(text_encoder, convert_ldm_clip_checkpoint(ckpt), "CLIP text encoder", f)
    if tokenizer is not None:
        tok = _load_tokenizer(Path(tokenizer), str(tokenizer))
    else:
        tok_dir = f.parent / "tokenizer"
        tok = _load_tokenizer(tok_dir, f"{tok_dir} (tokenizer= not given; looked beside the checkpoint)")
    return SDBase(vae=vae, text_encoder=text_encoder, tokenizer=tok,
                  scheduler_config={k: v for k, v in bundled_config("scheduler").items()},
                  unet_config=bundled_config("unet"), source=f)


# ---- tiny random base for tests --------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte as one printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


TINY_TEXT_HIDDEN = 32


def _byte_vocab() -> dict[str, int]:
    """A CLIP tokenizer vocabulary over the 256 byte-level symbols (and their word-final forms), no merges."""
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for tokn in alphabet + [a + "</w>" for a in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[tokn] = len(vocab)
    return vocab


def _write_byte_tokenizer(tok_dir: Path, vocab: dict[str, int]) -> None:
    from transformers import CLIPTokenizer

    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(tok_dir))


def write_tiny_clip(dir: str | os.PathLike[str], seed: int = 0, *, image_size: int = 32,
                    projection_dim: int = 16) -> Path:
    """Write a tiny random transformers ``CLIPModel`` folder (text and vision towers of hidden size 32,
    2 layers; ``image_size`` px images in patches of 8) with the byte-level tokenizer and a CLIP image
    processor, loadable offline like a real CLIP folder (``--clip`` options, tests). Deterministic."""
    import transformers

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    _write_byte_tokenizer(out, vocab)
    transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size}).save_pretrained(str(out))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=8)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.CLIPModel(cfg)
    model.save_pretrained(str(out))
    return out


def write_tiny_sd_base(dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random SD-1.5-layout diffusers folder at ``dir`` and return its path.

    VAE: 4 latent channels, 8x down-sampling (as SD), a few channels; CLIP text encoder of hidden size
    32 (= ``TINY_TEXT_HIDDEN``, the tiny UNets' ``cross_attention_dim``), 77 positions; a CLIP
    tokenizer over the 256 byte-level symbols with no merges (built offline); SD 1.5's PNDM
    scheduler config (as the real base ships). Deterministic for a given ``seed``.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
                            sample_size=64, scaling_factor=0.18215)
        vocab = _byte_vocab()
        te_cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=TINY_TEXT_HIDDEN, intermediate_size=64,
                                projection_dim=TINY_TEXT_HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                                max_position_embeddings=77, hidden_act="quick_gelu",
                                bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                pad_token_id=vocab["<|endoftext|>"])
        text_encoder = CLIPTextModel(te_cfg)
    vae.save_pretrained(str(out / "vae"))  # type: ignore[attr-defined]
    text_encoder.save_pretrained(str(out / "text_encoder"))
    _write_byte_tokenizer(out / "tokenizer", vocab)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(bundled_config("scheduler"), indent=2))
    (out / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "_facerig": "tiny"}))
    return out
