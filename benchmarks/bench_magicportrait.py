"""CPU cost of MagicPortrait sampling (random weights in the released layout).

* tiny config (the tests' sizes, 64 x 64 crops): seconds per frame for a 14-frame clip (2 windows
  of the released 12/1 scheme) at 20 steps with CFG 3.5;
* full SD 1.5 size at 512 (``--full``): 1 frame, ``--full-steps`` steps (default 1), extrapolated
  to 20 steps by the measured per-step time (said so in the output);
* the saving from computing the reference bank ONCE per clip: the reference UNet's time is
  measured in the same run; per-step recomputation would add (steps - 1) of them, so the ratio is
  (t_clip + (steps - 1) t_bank) / t_clip.

    OMP_NUM_THREADS=1 python benchmarks/bench_magicportrait.py [--full] [--full-dtype bf16|fp32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_magicportrait import random_clip, random_pipeline  # noqa: E402


def measure(pipe, n: int, size: int, steps: int) -> tuple[float, float]:
    fr = random_clip(n, size, "cpu")
    z, text = pipe.reference_latent(fr.reference), pipe.prompt_embeds()
    t = time.perf_counter()
    pipe.model.reference_bank(z, text)  # the reference UNet alone (the VAE encode is once either way)
    t_bank = time.perf_counter() - t
    t = time.perf_counter()
    pipe(fr, steps, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t, t_bank


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full", action="store_true", help="also the SD 1.5-size networks at 512 (several GB)")
    ap.add_argument("--full-steps", type=int, default=1)
    ap.add_argument("--full-dtype", choices=("bf16", "fp32"), default="bf16",
                    help="bf16 halves the memory (about 5 GB); fp32 needs about 10 GB while building")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = random_pipeline(False)
    measure(pipe, 2, 64, 1)  # warm-up (the first calls are slower)
    t_clip, t_bank = measure(pipe, a.frames, 64, a.steps)
    ratio = (t_clip + (a.steps - 1) * t_bank) / t_clip
    print(f"tiny 64x64, {a.frames} frames, {a.steps} steps, CFG 3.5, {torch.get_num_threads()} thread(s): "
          f"{t_clip:.2f} s per clip = {t_clip / a.frames:.3f} s per frame; reference bank {t_bank * 1000:.1f} ms; "
          f"bank per step would cost x{ratio:.3f} ({(ratio - 1) * 100:.1f}% more)")
    if a.full:
        del pipe
        dt = torch.bfloat16 if a.full_dtype == "bf16" else torch.float32
        old = torch.get_default_dtype()
        torch.set_default_dtype(dt)
        try:
            t = time.perf_counter()
            pipe = random_pipeline(True, "cpu", dt)
            print(f"full SD 1.5 size built in {time.perf_counter() - t:.0f} s ({a.full_dtype})", flush=True)
            t1, _ = measure(pipe, 1, 512, a.full_steps)  # (its bank time includes the first, cold call)
            t2, tb = measure(pipe, 1, 512, a.full_steps + 1)
        finally:
            torch.set_default_dtype(old)
        per_step = t2 - t1
        fixed = t1 - a.full_steps * per_step
        est = fixed + 20 * per_step
        ratio = (est + 19 * tb) / est
        print(f"full SD 1.5 size 512x512, 1 frame, CFG 3.5, {a.full_dtype}: {a.full_steps} step(s) {t1:.1f} s, "
              f"{a.full_steps + 1} steps {t2:.1f} s -> {per_step:.1f} s per step, {fixed:.1f} s fixed "
              f"(VAE, reference UNet, guidance); EXTRAPOLATED to 20 steps: {est:.0f} s per frame; "
              f"reference bank {tb:.1f} s, per step would cost x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
