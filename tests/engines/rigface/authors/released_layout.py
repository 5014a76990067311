"""Writer of RigFace's released checkpoint layout with seeded random weights, and seeded reference inputs.

The released weights are two diffusers folders, ``unet_id/`` and ``unet_denoise/``, each holding a
``config.json`` (with the ``_class_name`` / ``_diffusers_version`` / ``_name_or_path`` keys a
diffusers 0.22 ``save_pretrained`` writes) and ``diffusion_pytorch_model.safetensors``. The denoiser
has ``in_channels: 12`` and two extra tensors ``au_aug_mlp.{weight,bias}`` (a ``Linear(64, 1280)``
whose output is added to the time embedding).

This module is used from two environments: facerig's tests (diffusers 0.42) and
``scripts/make_rigface_reference.py`` in a separate reference environment (diffusers 0.22, the
authors' pin), which loads this file by path. Everything here must therefore give bit-identical
tensors in both: each tensor is drawn from its own CPU ``torch.Generator`` seeded by a hash of
(seed, UNet name, key), so neither the module construction order nor the diffusers version matters;
diffusers is only used to learn the key names and shapes (on the meta device).

Weights are scaled like a sane initialisation (std ``1/sqrt(fan_in)`` for matrices and kernels,
``1 + 0.1 N(0, 1)`` for norm gains, ``0.1 N(0, 1)`` for biases), so activations stay O(1) and a
1e-5 agreement between two implementations means something.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

# The keys a diffusers 0.22 ``save_pretrained`` adds to config.json (loaders must ignore them).
RELEASE_DIFFUSERS_VERSION = "0.22.0"
RELEASE_CLASS_NAMES = {"unet_id": "UNetID2DConditionModel", "unet_denoise": "UNetDenoise2DConditionModel"}
RELEASE_NAME_OR_PATH = {
    "unet_id": "./pre_trained/unet_id/checkpoint-70000",
    "unet_denoise": "./pre_trained/unet_denoise/checkpoint-70000",
}
EXPRESSION_DIM = 64
TIME_EMBED_DIM = 1280  # the release's au_aug_mlp is Linear(64, 1280), hard-wired in the authors' code

# SD 1.5's UNet, with every __init__ argument a diffusers 0.22 UNet2DConditionModel records.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dropout": 0.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "cross_attention_dim": 768,
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "addition_embed_type_num_heads": 64,
}

# Same block types and depth as SD 1.5 (16 transformer blocks), tiny channels; the time embedding
# is kept at 1280 because the authors' denoiser hard-wires au_aug_mlp = Linear(64, 1280).
TINY_UNET_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "sample_size": 8,
    "block_out_channels": [32, 32, 64, 64],
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "time_embedding_dim": TIME_EMBED_DIM,
}

# SD 1.5's scheduler/scheduler_config.json (a PNDM config); the release builds its UniPC from it.
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

SIZES = {"tiny": TINY_UNET_CONFIG, "full": SD15_UNET_CONFIG}
# latent side of the reference inputs per size (tiny: 8 -> 64x64 images; full: 64 -> 512x512)
LATENT_SIDE = {"tiny": 8, "full": 64}
TEXT_TOKENS = 77
UNET_NAMES = ("unet_id", "unet_denoise")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def unet_config(size: str, name: str) -> dict[str, Any]:
    """The config a released folder holds (without the ``_``-prefixed keys)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if name not in UNET_NAMES:
        raise ValueError(f"name must be one of {UNET_NAMES}, got {name!r}")
    cfg = copy.deepcopy(SIZES[size])
    if name == "unet_denoise":
        cfg["in_channels"] = 12
    return cfg


def released_config_json(size: str, name: str) -> dict[str, Any]:
    """config.json as the release has it: the config plus the keys diffusers' save_pretrained adds."""
    return {
        "_class_name": RELEASE_CLASS_NAMES[name],
        "_diffusers_version": RELEASE_DIFFUSERS_VERSION,
        "_name_or_path": RELEASE_NAME_OR_PATH[name],
        **unet_config(size, name),
    }


def key_shapes(size: str, name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a released folder's safetensors file, sorted by key.

    Learned from a stock ``UNet2DConditionModel`` built on the meta device (no memory, no weights),
    plus ``au_aug_mlp`` for the denoiser.
    """
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(unet_config(size, name))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if name == "unet_denoise":
        shapes["au_aug_mlp.weight"] = (TIME_EMBED_DIM, EXPRESSION_DIM)
        shapes["au_aug_mlp.bias"] = (TIME_EMBED_DIM,)
    return dict(sorted(shapes.items()))


def _seed_of(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_tensor(seed: int, name: str, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One weight, reproducible from (seed, UNet name, key) alone, scaled so activations stay O(1)."""
    g = torch.Generator(device="cpu").manual_seed(_seed_of("rigface-released", seed, name, key))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return x.mul_(1.0 / math.sqrt(fan_in))
    module = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else ""
    if key.endswith(".weight") and "norm" in module:
        return x.mul_(0.1).add_(1.0)
    return x.mul_(0.1)


def seeded_state(size: str, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The full state dict of one released UNet, in sorted key order."""
    return {k: seeded_tensor(seed, name, k, s) for k, s in key_shapes(size, name).items()}


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted keys, shapes and the float32 bytes: equal hashes = identical weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def write_released_layout(root: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Write ``root/unet_id/`` and ``root/unet_denoise/`` in the released layout.

    Returns ``{"unet_id": Path, "unet_denoise": Path, "hashes": {name: state_hash}}``. One UNet is
    held in memory at a time (an SD 1.5 UNet is 3.4 GB in float32).
    """
    from safetensors.torch import save_file

    root = Path(root)
    out: dict[str, Any] = {"hashes": {}}
    for name in UNET_NAMES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(released_config_json(size, name), indent=2) + "\n")
        state = seeded_state(size, name, seed)
        out["hashes"][name] = state_hash(state)
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        del state
        out[name] = folder
    return out


def reference_inputs(size: str = "tiny", seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded inputs of the reference run, batch 1, in the release's latent conventions.

    ``source_latent`` / ``background_latent`` / ``render_latent``: unscaled VAE latents (1, 4, h, w);
    ``noisy_latent``: a scaled-space latent for the single denoiser forward at ``timestep``;
    ``init_noise``: the starting latent of the 5-step UniPC run; ``expression``: (1, 64);
    ``text_embeds``: (1, 77, cross_attention_dim).
    """
    side = LATENT_SIDE[size]
    dim = SIZES[size]["cross_attention_dim"]
    shapes = {
        "source_latent": (1, 4, side, side),
        "background_latent": (1, 4, side, side),
        "render_latent": (1, 4, side, side),
        "noisy_latent": (1, 4, side, side),
        "init_noise": (1, 4, side, side),
        "expression": (1, EXPRESSION_DIM),
        "text_embeds": (1, TEXT_TOKENS, dim),
    }
    out = {}
    for k, shape in shapes.items():
        g = torch.Generator(device="cpu").manual_seed(_seed_of("rigface-inputs", seed, size, k))
        out[k] = torch.randn(shape, generator=g, dtype=torch.float32)
    out["timestep"] = torch.tensor([REFERENCE_TIMESTEP], dtype=torch.int64)
    return out


REFERENCE_TIMESTEP = 601
REFERENCE_STEPS = 5
