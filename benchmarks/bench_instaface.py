"""InstaFace per-edit time, fine-tune included: stage-2 fine-tune on the photo + DDIM sampling + decode.

What one ``facerig edit --engine instaface`` of a new photo costs beyond detection and fitting:

1. ``finetune``: the stage-2 fine-tune (paper: 50 AdamW steps on 8 copies of the photo, projection +
   diffusion network; the guidance network runs in every step, without gradients to its weights);
2. ``sample``: DDIM (paper: 20 steps), the guidance UNet once per step (``guidance_timestep
   "denoise"``) or once per edit (``"zero"``, ``--guidance-zero``), one diffusion UNet pass per step;
3. ``decode``: the VAE decoder on the latent.

Sizes (random weights: speed does not depend on the values):

* ``--size tiny`` (default; CPU): the test configuration (SD 1.5's block layout at toy width, the
  tiny test VAE) at ``--px`` (default 256 px, latents 32x32 as the paper's stage 1);
* ``--size sd15``: SD 1.5's UNet config for both networks (860 M parameters each), SD 1.5's VAE
  architecture, cross-attention 768, ``--px 512`` -> 64x64 latents. Meant for a GPU session:

      python benchmarks/bench_instaface.py --size sd15 --px 512 --device cuda --dtype bf16

  (bf16 weights and activations; fine-tune in the same dtype; fp32 with ``--dtype fp32``).

Prints the parameter counts, each phase's wall time (fine-tune also per step), the per-edit total
and the peak CUDA memory. ``--finetune-steps`` / ``--steps`` / ``--copies`` override the paper's
50 / 20 / 8 (fewer for a quick look: per-step figures are printed so totals can be extrapolated).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _vae(size: str):
    from diffusers import AutoencoderKL

    if size == "sd15":
        from facerig.engines.sd.base import bundled_config

        cfg = {k: v for k, v in bundled_config("vae").items() if not k.startswith("_")}
        return AutoencoderKL.from_config(cfg)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16),
                         layers_per_block=1, norm_num_groups=4, sample_size=64, scaling_factor=0.18215)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--px", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--finetune-steps", type=int, default=50)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clip-dim", type=int, default=768)
    ap.add_argument("--guidance-zero", action="store_true", help="guidance UNet at t=0, once per edit")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from facerig.engines.instaface.model import SD15_UNET_CONFIG, TINY_UNET_CONFIG, InstaFaceModel
    from facerig.engines.instaface.pipeline import make_ddim, sample_latents
    from facerig.engines.instaface.training import finetune_single_image
    from facerig.engines.sd.latents import decode_latents

    dev = torch.device(args.device)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    cfg = SD15_UNET_CONFIG if args.size == "sd15" else TINY_UNET_CONFIG
    kw = {} if args.size == "sd15" else {"projection_width": 32, "projection_heads": 2}
    clip_dim = args.clip_dim if args.size == "sd15" else 16
    print(f"InstaFace {args.size} at {args.px} px on {dev} ({args.dtype}), threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    t = time.perf_counter()
    m = InstaFaceModel.from_config(cfg, clip_dim=clip_dim, seed=0,
                                   guidance_timestep="zero" if args.guidance_zero else "denoise", **kw)
    m = m.to(dev, dt).eval().requires_grad_(False)
    vae = _vae(args.size).to(dev, dt).eval().requires_grad_(False)
    print(f"built in {time.perf_counter() - t:.1f} s; guidance {sum(p.numel() for p in m.guidance_unet.parameters()) / 1e6:.1f} M, "
          f"diffusion {sum(p.numel() for p in m.diffusion_unet.parameters()) / 1e6:.1f} M, projection "
          f"{sum(p.numel() for p in m.projection.parameters()) / 1e6:.1f} M params", flush=True)
    h = args.px // 8
    g = torch.Generator().manual_seed(0)
    d = m.cross_attention_dim
    x0 = torch.randn(1, 4, h, h, generator=g).to(dev, dt)
    cond = torch.randn(1, 12, h, h, generator=g).to(dev, dt)
    face = torch.randn(1, 128, generator=g).to(dev, dt)
    clip = torch.randn(1, clip_dim, generator=g).to(dev, dt)
    text = torch.randn(1, 77, d, generator=g).to(dev, dt)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # the fine-tune (includes copying the model, as the engine does per photo)
    _sync(dev)
    t = time.perf_counter()
    tuned, losses = finetune_single_image(m, x0, cond, face, clip, text, steps=args.finetune_steps, copies=args.copies,
                                          generator=torch.Generator().manual_seed(1))
    _sync(dev)
    t_ft = time.perf_counter() - t
    print(f"finetune: {args.finetune_steps} steps x {args.copies} copies in {t_ft:.2f} s "
          f"({t_ft / args.finetune_steps:.3f} s/step incl. the model copy); loss {losses[0]:.3f} -> {losses[-1]:.3f}",
          flush=True)
    tok = tuned.identity_tokens(face, clip)
    per = []
    for _ in range(2):  # the first run warms the kernels; the second is the figure
        _sync(dev)
        t = time.perf_counter()
        z = sample_latents(tuned, cond, tok, text, steps=args.steps, scheduler=make_ddim(),
                           generator=torch.Generator().manual_seed(2))
        _sync(dev)
        t_s = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            decode_latents(vae, z)
        _sync(dev)
        per.append((t_s, time.perf_counter() - t))
    t_s, t_d = per[-1]
    print(f"sample: DDIM {args.steps} steps {t_s:.2f} s ({t_s / args.steps:.3f} s/step; first run {per[0][0]:.2f} s); "
          f"decode {t_d:.3f} s", flush=True)
    print(f"per edit of a new photo: {t_ft + t_s + t_d:.2f} s (fine-tune {t_ft:.2f} + sample {t_s:.2f} + decode "
          f"{t_d:.3f}); further edits of the same photo: {t_s + t_d:.2f} s", flush=True)
    if dev.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
              f"({torch.cuda.get_device_name(dev)})")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
