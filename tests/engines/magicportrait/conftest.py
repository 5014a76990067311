"""Writers of MagicPortrait checkpoint files in the RELEASED layout, for the loader tests.

The key names and shapes are spelled out here from reading the authors' public code (their
``GuidanceEncoder`` of ``Transformer3DModel`` s, AnimateDiff's ``VanillaTemporalModule``), NOT
taken from facerig's modules, so the tests compare two independent descriptions of the layout.
Weights are seeded random; tiny configs keep everything fast on the CPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from facerig.engines.rigface.model import TINY_UNET_CONFIG

#: tiny guidance config (3 widths = 2 down-sampling levels, output width = tiny UNet conv_in width)
TINY_GUIDANCE = {"guidance_embedding_channels": 16, "guidance_input_channels": 3,
                 "block_out_channels": (8, 32, 32), "attention_num_heads": 8}
#: the tiny motion modules: 2 heads, 8 norm groups (the tiny UNet widths are 16 and 32)
TINY_MOTION = {"num_attention_heads": 2, "norm_num_groups": 8, "max_len": 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids oversubscription slow-downs on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _transformer3d_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    """Keys of one of their Transformer3DModel (no cross-attention, conv projections, GEGLU, 1 layer)."""
    b = f"{prefix}.transformer_blocks.0"
    return {
        f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,),
        f"{prefix}.proj_in.weight": (c, c, 1, 1), f"{prefix}.proj_in.bias": (c,),
        f"{b}.attn1.to_q.weight": (c, c), f"{b}.attn1.to_k.weight": (c, c), f"{b}.attn1.to_v.weight": (c, c),
        f"{b}.attn1.to_out.0.weight": (c, c), f"{b}.attn1.to_out.0.bias": (c,),
        f"{b}.norm1.weight": (c,), f"{b}.norm1.bias": (c,),
        f"{b}.ff.net.0.proj.weight": (8 * c, c), f"{b}.ff.net.0.proj.bias": (8 * c,),
        f"{b}.ff.net.2.weight": (c, 4 * c), f"{b}.ff.net.2.bias": (c,),
        f"{b}.norm3.weight": (c,), f"{b}.norm3.bias": (c,),
        f"{prefix}.proj_out.weight": (c, c, 1, 1), f"{prefix}.proj_out.bias": (c,),
    }


def released_guidance_keys(block_out_channels=(16, 32, 96, 256), emb: int = 320, cin: int = 3) -> dict:
    ch = list(block_out_channels)
    keys: dict[str, tuple[int, ...]] = {"conv_in.weight": (ch[0], cin, 3, 3), "conv_in.bias": (ch[0],)}
    for i, (a, b) in enumerate(zip(ch[:-1], ch[1:], strict=False)):
        keys[f"blocks.{2 * i}.weight"] = (a, a, 3, 3)
        keys[f"blocks.{2 * i}.bias"] = (a,)
        keys[f"blocks.{2 * i + 1}.weight"] = (b, a, 3, 3)
        keys[f"blocks.{2 * i + 1}.bias"] = (b,)
        keys.update(_transformer3d_keys(f"attentions.{2 * i}", a))
        keys.update(_transformer3d_keys(f"attentions.{2 * i + 1}", b))
    keys.update(_transformer3d_keys("guidance_attention", ch[-1]))
    keys["conv_out.weight"] = (emb, ch[-1], 3, 3)
    keys["conv_out.bias"] = (emb,)
    return keys


def _random(keys: dict, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g) * 0.2 for k, s in keys.items()}


def _sinusoid(max_len: int, d: int) -> torch.Tensor:
    pos = torch.arange(max_len).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(1, max_len, d)
    pe[0, :, 0::2] = torch.sin(pos * div)
    pe[0, :, 1::2] = torch.cos(pos * div)
    return pe


def _motion_keys(prefix: str, c: int, max_len: int) -> dict[str, tuple[int, ...] | torch.Tensor]:
    """One AnimateDiff VanillaTemporalModule: Temporal_Self x2, 1 block, position encoding."""
    t = f"{prefix}.temporal_transformer"
    b = f"{t}.transformer_blocks.0"
    keys: dict[str, tuple[int, ...] | torch.Tensor] = {
        f"{t}.norm.weight": (c,), f"{t}.norm.bias": (c,),
        f"{t}.proj_in.weight": (c, c), f"{t}.proj_in.bias": (c,),
    }
    for a in (0, 1):
        keys.update({f"{b}.attention_blocks.{a}.to_q.weight": (c, c), f"{b}.attention_blocks.{a}.to_k.weight": (c, c),
                     f"{b}.attention_blocks.{a}.to_v.weight": (c, c),
                     f"{b}.attention_blocks.{a}.to_out.0.weight": (c, c), f"{b}.attention_blocks.{a}.to_out.0.bias": (c,),
                     f"{b}.attention_blocks.{a}.pos_encoder.pe": _sinusoid(max_len, c),
                     f"{b}.norms.{a}.weight": (c,), f"{b}.norms.{a}.bias": (c,)})
    keys.update({f"{b}.ff.net.0.proj.weight": (8 * c, c), f"{b}.ff.net.0.proj.bias": (8 * c,),
                 f"{b}.ff.net.2.weight": (c, 4 * c), f"{b}.ff.net.2.bias": (c,),
                 f"{b}.ff_norm.weight": (c,), f"{b}.ff_norm.bias": (c,),
                 f"{t}.proj_out.weight": (c, c), f"{t}.proj_out.bias": (c,)})
    return keys


def released_motion_state(unet_config: dict, seed: int = 0, max_len: int = 32) -> dict[str, torch.Tensor]:
    """motion_module.pth as AnimateDiff names it: down i x layers, mid 1, up i x (layers + 1)."""
    ch = list(unet_config["block_out_channels"])
    n = int(unet_config["layers_per_block"])
    spec: dict = {}
    for i, c in enumerate(ch):
        for j in range(n):
            spec.update(_motion_keys(f"down_blocks.{i}.motion_modules.{j}", c, max_len))
    spec.update(_motion_keys("mid_block.motion_modules.0", ch[-1], max_len))
    for i, c in enumerate(reversed(ch)):
        for j in range(n + 1):
            spec.update(_motion_keys(f"up_blocks.{i}.motion_modules.{j}", c, max_len))
    g = torch.Generator().manual_seed(seed)
    return {k: (v.clone() if isinstance(v, torch.Tensor) else torch.randn(*v, generator=g) * 0.2) for k, v in spec.items()}


def stock_unet_state(config: dict, seed: int) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).state_dict()


def write_release(folder: Path, seed: int = 0) -> Path:
    """The tiny release: the 6 .pth files of ckpts/ (guidance encoders tiny, UNets tiny)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(("depth", "normal", "render")):
        keys = released_guidance_keys(TINY_GUIDANCE["block_out_channels"], TINY_GUIDANCE["guidance_embedding_channels"])
        torch.save(_random(keys, seed + 10 + i), folder / f"guidance_encoder_{t}.pth")
    ref = {k: v for k, v in stock_unet_state(TINY_UNET_CONFIG, seed + 1).items()
           if not k.startswith(("conv_norm_out.", "conv_out."))}
    torch.save(ref, folder / "reference_unet.pth")
    torch.save(stock_unet_state(TINY_UNET_CONFIG, seed + 2), folder / "denoising_unet.pth")
    torch.save(released_motion_state(TINY_UNET_CONFIG, seed + 3, TINY_MOTION["max_len"]), folder / "motion_module.pth")
    return folder


#: 4 widths = 3 down-samplings: guidance features at the latent size of the 8x tiny VAE
GUIDANCE8 = {"guidance_embedding_channels": 16, "guidance_input_channels": 3,
             "block_out_channels": (8, 32, 32, 32), "attention_num_heads": 8}


def write_release8(folder: Path, seed: int = 0) -> Path:
    """The tiny release with guidance encoders whose features match the tiny 8x VAE's latent size."""
    write_release(folder, seed)
    for i, t in enumerate(("depth", "normal", "render")):
        keys = released_guidance_keys(GUIDANCE8["block_out_channels"], GUIDANCE8["guidance_embedding_channels"])
        g = torch.Generator().manual_seed(seed + 10 + i)
        torch.save({k: torch.randn(*s, generator=g) * 0.2 for k, s in keys.items()}, folder / f"guidance_encoder_{t}.pth")
    return folder


def tiny_pipeline(root: Path, seed: int = 0):
    """A whole tiny MagicPortraitPipeline (tiny release + tiny SD base written under ``root``), 64 px."""
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline
    from facerig.engines.sd.base import write_tiny_sd_base

    rel = write_release8(root / "ckpts", seed)
    base = write_tiny_sd_base(root / "sd", seed)
    return MagicPortraitPipeline.from_released(rel, base, unet_config=TINY_UNET_CONFIG, guidance_config=GUIDANCE8,
                                               motion_heads=TINY_MOTION["num_attention_heads"],
                                               motion_norm_groups=TINY_MOTION["norm_num_groups"])


@pytest.fixture(scope="session")
def layout() -> SimpleNamespace:
    return SimpleNamespace(released_guidance_keys=released_guidance_keys, released_motion_state=released_motion_state,
                           stock_unet_state=stock_unet_state, write_release=write_release,
                           TINY_GUIDANCE=TINY_GUIDANCE, TINY_MOTION=TINY_MOTION, TINY_UNET_CONFIG=TINY_UNET_CONFIG,
                           GUIDANCE8=GUIDANCE8, write_release8=write_release8, tiny_pipeline=tiny_pipeline)


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("magicportrait_release"))
