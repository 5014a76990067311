"""RigFace at SD 1.5 size on this CPU: facerig's sampling structure vs the authors' pipeline structure.

Both UNets are SD 1.5-size (860 M parameters each, fp32, random weights; speed does not depend on
the values) run through facerig's ``RigFaceUNets``; 512x512 images -> 64x64 latents, UniPC. Measured
side by side in one process, on the same modules, the structures differ only in what is run:

- facerig:        identity UNet once per source (batch 1, t = 0, stopping after the last
                  transformer block whose input is needed), then one batch-1 denoiser pass per step;
- authors (once): the release's pipeline: identity UNet once on the doubled batch (full UNet),
                  then every step the doubled "guidance" batch (two identical copies) and the
                  guidance combination;
- authors (per step): as above, with the identity UNet re-run at every step (how their training
                  code runs it; an implementation that does not cache the states pays this).

The three are run interleaved (prepare of each, then step i of each in turn), so the load of a
shared machine falls on all alike, and both wall time and process CPU time are printed. Few steps
are timed (``--steps``, median per step); the per-edit figure is extrapolated as
prepare + N x per-step for N = 20 and 50 (the VAE and the text encoder, identical in all three, are
left out). The machine load (1-min load average) is printed before and after.

    nice python benchmarks/bench_rigface.py [--steps 2] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import statistics
import time

import torch


def _release_unipc():
    from diffusers import UniPCMultistepScheduler

    sd15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "steps_offset": 1, "set_alpha_to_one": False, "skip_prk_steps": True, "clip_sample": False}
    return UniPCMultistepScheduler.from_config(sd15, timestep_spacing="linspace", solver_order=2, solver_type="bh2",
                                               predict_x0=True, final_sigmas_type="sigma_min")


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="timed sampling steps per structure (median is used)")
    ap.add_argument("--latent", type=int, default=64, help="latent side (64 = 512x512 images)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_grad_enabled(False)

    from facerig.engines.rigface.model import SD15_UNET_CONFIG, RigFaceUNets

    load0 = os.getloadavg()[0]
    t_build, model = _timed(lambda: RigFaceUNets.from_config(SD15_UNET_CONFIG, expression_kind="deep3d",
                                                             expression_dim=64, seed=0).eval())
    n_id = sum(p.numel() for p in model.unet_id.parameters())
    n_dn = sum(p.numel() for p in model.unet_denoise.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; load average {load0:.2f}; "
          f"built UNets ({n_id / 1e6:.0f} M + {n_dn / 1e6:.0f} M params) in {t_build:.0f} s", flush=True)

    s = a.latent
    g = torch.Generator().manual_seed(0)
    src, bg, ren, noise = (torch.randn(1, 4, s, s, generator=g) for _ in range(4))
    exp = torch.randn(1, 64, generator=g)
    text = torch.randn(1, 77, 768, generator=g)
    full_id = {"stop_early": False} if "stop_early" in inspect.signature(model.identity_states).parameters else {}

    def two(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x])

    structures = ("facerig", "authors_id_once", "authors_id_per_step")

    def prepare(structure: str):
        if structure == "facerig":
            return model.identity_states(src, text)
        return model.identity_states(two(src), two(text), **full_id)

    def step(structure: str, states, lat: torch.Tensor, t: torch.Tensor, sched) -> torch.Tensor:
        if structure == "authors_id_per_step":
            states = model.identity_states(two(src), two(text), **full_id)
        if structure == "facerig":
            e = model.predict_noise(lat, t, bg, ren, exp, states, text)
        else:
            e = model.predict_noise(two(lat), t, two(bg), two(ren), two(exp), states, two(text))
            e_img, e_txt = e.chunk(2)
            e = e_txt + 1.5 * (e_img - e_txt)
        return sched.step(e, t, lat, return_dict=False)[0]

    def clocked(fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        return (time.perf_counter() - w, time.process_time() - c), out

    # warm-up (first-call allocations), not counted
    clocked(lambda: model.predict_noise(noise, 999, bg, ren, exp, model.identity_states(src, text), text))
    gc.collect()

    # interleaved, so that the load of a shared machine falls on all three alike
    prep: dict[str, tuple[float, float]] = {}
    states = {}
    for k in structures:
        if k == "authors_id_per_step":
            prep[k], states[k] = (0.0, 0.0), None
        else:
            prep[k], states[k] = clocked(lambda k=k: prepare(k))
        print(f"{k:20s} prepare {prep[k][0]:6.2f} s wall, {prep[k][1]:6.2f} s CPU", flush=True)
    scheds = {k: _release_unipc() for k in structures}
    for sc in scheds.values():
        sc.set_timesteps(50)
    lats = {k: noise.clone() for k in structures}
    per_step: dict[str, list[tuple[float, float]]] = {k: [] for k in structures}
    for i in range(a.steps):
        t = scheds["facerig"].timesteps[i]
        for k in structures:
            dt, lats[k] = clocked(lambda k=k, t=t: step(k, states[k], lats[k], t, scheds[k]))
            per_step[k].append(dt)
            print(f"step {i}  {k:20s} {dt[0]:6.2f} s wall, {dt[1]:6.2f} s CPU", flush=True)
    load1 = os.getloadavg()[0]

    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in per_step.items()}
    print("\nmedian per step (wall / CPU): " + "; ".join(f"{k} {w:.2f} / {c:.2f} s" for k, (w, c) in med.items()))
    for k in structures[1:]:
        print(f"per-step ratio {k} / facerig: wall x{med[k][0] / med['facerig'][0]:.2f}, "
              f"CPU x{med[k][1] / med['facerig'][1]:.2f}")
    print(f"prepare ratio authors (doubled batch, full identity UNet) / facerig: "
          f"wall x{prep['authors_id_once'][0] / prep['facerig'][0]:.2f}, "
          f"CPU x{prep['authors_id_once'][1] / prep['facerig'][1]:.2f}")
    print(f"per edit, extrapolated = prepare + N x per-step (UNets only; load average {load0:.2f} -> {load1:.2f}):")
    for n in (20, 50):
        parts = []
        base = None
        for k in structures:
            edit_w = prep[k][0] + n * med[k][0]
            edit_c = prep[k][1] + n * med[k][1]
            if base is None:
                base = (edit_w, edit_c)
                parts.append(f"{k} {edit_w:6.0f} s wall ({edit_c:6.0f} s CPU)")
            else:
                parts.append(f"{k} {edit_w:6.0f} s (x{edit_w / base[0]:.2f} wall, x{edit_c / base[1]:.2f} CPU)")
        print(f"  {n} steps: " + "; ".join(parts))


if __name__ == "__main__":
    main()
