"""DiffusionRig speed on this machine: one training step and DDIM sampling per image.

    python benchmarks/bench_diffusionrig.py [--size 64] [--batch 4] [--configs paper,half,tiny]
                                            [--reps 3] [--ddim-steps 20] [--threads N]

Configs (all with the released block structure; only widths/depth change):
  paper  128 channels, mult (1,1,2,2,4,4), 2 res blocks, attention at 16 px (133M UNet + 11M ResNet-18)
  half    64 channels, same mult / blocks
  small   64 channels, mult (1,2,2,4), 1 res block
  tiny    32 channels, mult (1,2), 1 res block (the tests' config)
A training step = encoder + UNet forward, P2 loss, backward, Adam step (fp32, train mode).
Sampling = DDIM ``--ddim-steps`` denoiser calls at batch 1 (the per-image cost; the encoder runs
once). Prints the median of ``--reps`` timed runs after a warm-up. For reference, the authors'
UNet measured on this machine kind (STACK-NOTES.md): forward 2.6 s at 64 px batch 4, 6.4 s at
256 px batch 1; training step 9.8 s at 64 px batch 4.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from facerig.engines.diffusionrig import (
    PAPER_UNET_CONFIG,
    DiffusionRigPipeline,
    DiffusionRigTrainModule,
    DiffusionRigUNet,
    GlobalEncoder,
)

CONFIGS = {
    "paper": {},
    "half": dict(model_channels=64),
    "small": dict(model_channels=64, channel_mult=(1, 2, 2, 4), num_res_blocks=1),
    "tiny": dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=32),
}


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--configs", default="paper,half,small,tiny")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-sampling", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.size} px, train batch {a.batch}")
    b = a.batch
    print(
        f"{'config':8s} {'UNet params':>12s} {f'fwd b{b} (s)':>12s} {'train step (s)':>15s} "
        f"{'sample/img (s)':>15s} {'per DDIM step':>14s}"
    )
    for name in a.configs.split(","):
        bench_config(name, a)


def bench_config(name: str, a: argparse.Namespace) -> None:
    s, b = a.size, a.batch
    cfg = dict(PAPER_UNET_CONFIG, image_size=s, **CONFIGS[name])
    torch.manual_seed(0)
    unet, enc = DiffusionRigUNet(**cfg), GlobalEncoder()
    mod = DiffusionRigTrainModule(unet, enc)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-4)
    batch = {"image": torch.rand(b, 3, s, s) * 2 - 1, "cond": torch.rand(b, 9, s, s)}
    g = torch.Generator().manual_seed(0)

    def step():
        loss = mod.loss(batch, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fwd():
        with torch.no_grad():
            unet(batch["image"], torch.full((b,), 500), batch["cond"], torch.zeros(b, 64))

    mod.train()
    t_step = timed(step, a.reps)
    unet.eval()
    t_fwd = timed(fwd, a.reps)
    t_sample = float("nan")
    if not a.skip_sampling:
        pipe = DiffusionRigPipeline(unet, enc)
        cond1, img1 = batch["cond"][:1], (batch["image"][:1] + 1) / 2
        t_sample = timed(
            lambda: pipe(cond1, image=img1, generator=0, num_inference_steps=a.ddim_steps), max(1, a.reps - 2)
        )
    n = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"{name:8s} {n:11.1f}M {t_fwd:12.2f} {t_step:15.2f} {t_sample:15.2f} {t_sample / a.ddim_steps:14.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
