"""Frames per second of MagicPortrait sampling at 512 x 512 on a CUDA GPU: 20 DDIM steps, CFG 3.5
(batched [uncond, cond]), the released 12-frame windows, bf16.

One prepared script for a GPU session (the issue's goal: >= 4 fps on an H100/H200). Networks in the
RELEASED layout and SD 1.5 size with random weights (speed does not depend on the values), or the
real ones with ``--ckpts CKPTS --base SD15``. One clip of ``--frames`` frames (default 24 = 3
windows at 12/1 overlap) timed end to end: VAE encode of the reference, reference UNet once,
guidance features, N steps x windows of the denoiser at batch 2, VAE decode per frame. The fixed
prompt's embedding is computed once per call.

Budget: stops measuring at ``--budget`` seconds (default 420, under the 8-minute limit) and prints
what it has. Without CUDA it says so and exits 0. ``--smoke`` checks the script on the CPU (tiny).

    python benchmarks/gpu_magicportrait.py [--frames 24] [--steps 20] [--dtype bf16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

SD15_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                   "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
                   "layers_per_block": 2, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
                   "sample_size": 512, "scaling_factor": 0.18215}
TINY_VAE_CONFIG = {**SD15_VAE_CONFIG, "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
                   "norm_num_groups": 4, "sample_size": 64}


def random_pipeline(full: bool, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """A MagicPortraitPipeline with random weights: SD 1.5 size (``full``; released guidance
    encoders, 8-head / 32-group motion modules) or the tiny test config."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from facerig.engines.magicportrait.checkpoints import (
        build_denoiser,
        per_frame_motion_norm,
        strip_reference_tail,
    )
    from facerig.engines.magicportrait.guidance import RELEASED_GUIDANCE_CONFIG, GuidanceEncoder
    from facerig.engines.magicportrait.model import MagicPortraitModel
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline, release_scheduler
    from facerig.engines.rigface.model import SD15_UNET_CONFIG, TINY_UNET_CONFIG
    from facerig.engines.sd.base import bundled_config, write_tiny_sd_base

    torch.manual_seed(0)
    if full:
        ucfg = dict(SD15_UNET_CONFIG)
        gcfg = dict(RELEASED_GUIDANCE_CONFIG)
        heads, groups, vcfg = 8, 32, SD15_VAE_CONFIG
    else:
        ucfg = {**TINY_UNET_CONFIG, "block_out_channels": [32, 32, 64, 64]}
        gcfg = {"guidance_embedding_channels": 32, "guidance_input_channels": 3,
                "block_out_channels": (8, 32, 32, 32), "attention_num_heads": 8}
        heads, groups, vcfg = 8, 32, TINY_VAE_CONFIG

    def place(m: Any) -> Any:
        return m.to(device=device, dtype=dtype).eval().requires_grad_(False)

    ref = place(strip_reference_tail(UNet2DConditionModel.from_config(ucfg)))
    unet = UNet2DConditionModel.from_config(ucfg)
    adapter = MotionAdapter(block_out_channels=tuple(ucfg["block_out_channels"]),
                            motion_layers_per_block=int(ucfg["layers_per_block"]), motion_num_attention_heads=heads,
                            motion_norm_num_groups=groups, motion_max_seq_length=32, use_motion_mid_block=True)
    per_frame_motion_norm(adapter)
    den = place(build_denoiser(unet, adapter))
    del unet, adapter
    encs = {t: place(GuidanceEncoder(**gcfg)) for t in ("depth", "normal", "render")}
    model = MagicPortraitModel(ref, den, encs)
    vae = place(AutoencoderKL(**vcfg))
    tok_dir = write_tiny_sd_base(Path(tempfile.mkdtemp(prefix="mp_bench_")) / "sd") / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    te_cfg = {k: v for k, v in bundled_config("text_encoder").items() if k not in ("architectures", "model_type")}
    if not full:
        te_cfg.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      projection_dim=32)
    te_cfg.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    te = place(CLIPTextModel(CLIPTextConfig(**te_cfg)))
    return MagicPortraitPipeline(model, vae, te, tok, release_scheduler())


def random_clip(n: int, size: int, device: str, seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(reference=torch.rand(1, 3, size, size, generator=g).to(device),
                           **{k: torch.rand(n, 3, size, size, generator=g).to(device)
                              for k in ("depth", "normal", "render")})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 (fp32 with --smoke)")
    ap.add_argument("--repeats", type=int, default=2, help="timed clips (median printed)")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds after which measuring stops")
    ap.add_argument("--ckpts", default=None, help="the released ckpts/ folder (else random weights)")
    ap.add_argument("--base", default=None, help="SD 1.5 base (with --ckpts)")
    ap.add_argument("--smoke", action="store_true", help="check the script on CPU: tiny config, 64 x 64, 2 steps")
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.smoke:
        a.steps, a.repeats, a.frames = 2, 1, min(a.frames, 14)
        a.dtype = a.dtype or "fp32"
        device = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_magicportrait: no CUDA device here; nothing measured (run it in a GPU session)")
        return 0
    else:
        device = "cuda"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype or "bf16"]
    if a.ckpts:
        from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline

        pipe = MagicPortraitPipeline.from_released(a.ckpts, a.base, device=device, dtype=dtype)
    else:
        pipe = random_pipeline(not a.smoke, device, dtype)
    size = 64 if a.smoke else 512
    fr = random_clip(a.frames, size, device)
    print(f"gpu_magicportrait: built in {time.perf_counter() - t0:.1f} s on {device} "
          f"({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), {a.dtype or 'bf16'}, "
          f"{'released ckpts' if a.ckpts else 'random weights, released layout'}", flush=True)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    # warm-up: 1 step on one window
    pipe(random_clip(min(12, a.frames), size, device), 1,
         generator=torch.Generator(device).manual_seed(0), output_type="latent")
    sync()
    times = []
    for r in range(a.repeats):
        if time.perf_counter() - t0 > a.budget:
            print(f"budget of {a.budget:.0f} s reached after {r} clips")
            break
        sync()
        t = time.perf_counter()
        pipe(fr, a.steps, generator=torch.Generator(device).manual_seed(r))
        sync()
        times.append(time.perf_counter() - t)
        print(f"  clip {r}: {times[-1]:.2f} s for {a.frames} frames ({a.frames / times[-1]:.2f} fps)", flush=True)
    if times:
        med = statistics.median(times)
        from facerig.engines.magicportrait.pipeline import context_windows

        w = len(context_windows(a.frames))
        print(f"RESULT frames={a.frames} windows={w} steps={a.steps} size={size} dtype={a.dtype or 'bf16'}: "
              f"{med:.2f} s per clip, {a.frames / med:.2f} fps, {med / (a.steps * w) * 1000:.0f} ms per window-step"
              f" (goal >= 4 fps on H100/H200)")
        if device == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
