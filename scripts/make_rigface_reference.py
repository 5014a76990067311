"""Reference outputs of the authors' RigFace code on seeded random weights in the released layout.

Run in a SEPARATE reference environment with the authors' pinned stack (diffusers 0.22.0,
huggingface_hub < 0.26, transformers 4.42.4, torch 2.13 CPU) and an extracted snapshot of
https://github.com/weimengting/RigFace; nothing of the authors' code is in this repository, this
script imports it from ``--authors``. See docs/rigface-equality.md for the exact setup.

It writes the released layout (``unet_id/``, ``unet_denoise/``) with the seeded weights of
``tests/engines/rigface/authors/released_layout.py`` (loaded by path), loads it with the authors'
classes exactly as their ``inference_rigface.py`` does, and records on seeded inputs:

- the identity UNet's recorded states (batch 1, t = 0),
- one denoiser forward (batch 1, t = REFERENCE_TIMESTEP),
- a 5-step run of the authors' ``RigFacePipeline`` (their UniPC setup from the SD 1.5 scheduler
  config, their doubled "guidance" batch, latents given directly in their conventions), the latent
  after every step, and, for comparison, the same loop run at batch 1 with their UNets.

Tiny size (default) -> ``tests/fixtures/rigface/authors_tiny.safetensors`` + ``.json`` sidecar;
``--size full`` (SD 1.5 size, about 10 GB RAM peak) -> ``--out`` outside the repository.

    HF_HOME=/tmp/rfref/hf nice /tmp/rfref/venv/bin/python scripts/make_rigface_reference.py \
        --authors /tmp/rfref/src --authors-commit dd3277108164830b19a8f15339b681c4b230079a
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYOUT_FILE = REPO / "tests" / "engines" / "rigface" / "authors" / "released_layout.py"
DEFAULT_TINY_OUT = REPO / "tests" / "fixtures" / "rigface" / "authors_tiny.safetensors"


def _load_layout_module():
    spec = importlib.util.spec_from_file_location("rigface_released_layout", LAYOUT_FILE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stats(t) -> dict[str, float]:
    t = t.detach().double()
    return {"std": float(t.std()), "max_abs": float(t.abs().max()), "mean": float(t.mean())}


def _tiny_vae_and_text_encoder(cross_dim: int):
    """Stand-ins the authors' pipeline needs to exist (it reads the VAE's scale factor, latent channel
    count and scaling factor, and the text encoder's dtype); with latents given and output_type
    "latent" neither is run."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        norm_num_groups=8,
    )
    te = CLIPTextModel(CLIPTextConfig(hidden_size=cross_dim, intermediate_size=2 * cross_dim, num_attention_heads=2,
                                      num_hidden_layers=1, vocab_size=100, max_position_embeddings=77))
    return vae.eval(), te.eval()


def _tiny_tokenizer(folder: Path):
    """A CLIPTokenizer over a handful of tokens: the authors' pipeline tokenizes (and then discards) an
    empty negative prompt even when prompt embeddings are given."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors", required=True, type=Path, help="extracted snapshot of weimengting/RigFace")
    ap.add_argument("--authors-commit", default="unknown", help="commit of that snapshot (recorded)")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="output .safetensors (a .json sidecar is written beside it); tiny default: "
                         "tests/fixtures/rigface/authors_tiny.safetensors; required for --size full")
    ap.add_argument("--workdir", type=Path, default=None, help="where the layout is written (default: a temp dir)")
    args = ap.parse_args(argv)

    if args.out is None:
        if args.size == "full":
            ap.error("--size full needs --out outside the repository (the outputs are tens of MB)")
        args.out = DEFAULT_TINY_OUT
    authors = args.authors.resolve()
    if not (authors / "rigface" / "models" / "unet_denoising_2d_condition.py").is_file():
        ap.error(f"--authors {authors} does not hold rigface/models/unet_denoising_2d_condition.py")

    import diffusers
    import huggingface_hub
    import torch
    import transformers
    from diffusers import PNDMScheduler, UniPCMultistepScheduler
    from safetensors.torch import save_file

    sys.path.insert(0, str(authors))
    from rigface.models.pipelineRigFace import RigFacePipeline
    from rigface.models.unet_denoising_2d_condition import UNetDenoise2DConditionModel
    from rigface.models.unet_ID_2d_condition import UNetID2DConditionModel

    layout = _load_layout_module()
    torch.set_grad_enabled(False)
    tmp = tempfile.TemporaryDirectory(prefix="rfref-layout-")
    workdir = args.workdir or Path(tmp.name)
    t0 = time.perf_counter()
    written = layout.write_released_layout(workdir, size=args.size, seed=args.seed)
    t_write = time.perf_counter() - t0
    print(f"layout written to {workdir} in {t_write:.1f} s", flush=True)

    # --- load exactly as inference_rigface.py does, then check nothing was skipped or re-initialised
    load_kw = dict(use_safetensors=True, low_cpu_mem_usage=False, ignore_mismatched_sizes=True,
                   output_loading_info=True)
    unet_id, info_id = UNetID2DConditionModel.from_pretrained(str(written["unet_id"]), **load_kw)
    unet_dn, info_dn = UNetDenoise2DConditionModel.from_pretrained(str(written["unet_denoise"]), **load_kw)
    for name, model, info in (("unet_id", unet_id, info_id), ("unet_denoise", unet_dn, info_dn)):
        bad = {k: v for k, v in info.items() if v}
        if bad:
            raise SystemExit(f"{name}: the authors' loader reported {bad}")
        got = layout.state_hash(model.state_dict())
        if got != written["hashes"][name]:
            raise SystemExit(f"{name}: loaded weights differ from the written ones")
        cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
        want = json.loads(json.dumps(layout.unet_config(args.size, name)))
        if json.loads(json.dumps(cfg)) != want:
            diff = {k for k in set(cfg) | set(want) if cfg.get(k) != want.get(k)}
            raise SystemExit(f"{name}: the authors' class records a different config: {sorted(diff)}")
    unet_id.eval()
    unet_dn.eval()

    inp = layout.reference_inputs(args.size, args.seed)
    src, bg, ren = inp["source_latent"], inp["background_latent"], inp["render_latent"]
    exp, text, t = inp["expression"], inp["text_embeds"], inp["timestep"]
    out: dict[str, torch.Tensor] = {f"input.{k}": v.contiguous() for k, v in inp.items()}

    # --- forward passes at batch 1
    t0 = time.perf_counter()
    _, states = unet_id(src, 0, encoder_hidden_states=text, return_dict=False)
    for i, s in enumerate(states):
        out[f"identity_state.{i:02d}"] = s.contiguous()
    cond = torch.cat([bg, ren], dim=1)
    eps = unet_dn(inp["noisy_latent"], cond, exp, list(states), t[0], encoder_hidden_states=text,
                  return_dict=False)[0]
    out["denoiser.eps"] = eps.contiguous()
    t_fwd = time.perf_counter() - t0
    print(f"identity + denoiser forward: {t_fwd:.1f} s, {len(states)} identity states", flush=True)

    # --- their pipeline, 5 UniPC steps, as inference_rigface.py sets it up
    vae, te = _tiny_vae_and_text_encoder(text.shape[-1])
    pipe = RigFacePipeline(vae=vae, text_encoder=te, tokenizer=_tiny_tokenizer(Path(tmp.name) / "tokenizer"), unet_id=unet_id, unet_denoising=unet_dn,
                           scheduler=PNDMScheduler.from_config(layout.SD15_SCHEDULER_CONFIG),
                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    # their callback_on_step_end path breaks (it reads an unset local), so the latent after every step
    # is taken from the scheduler's step output instead
    per_step: list[torch.Tensor] = []
    _step = pipe.scheduler.step

    def _recording_step(*a, **kw):
        res = _step(*a, **kw)
        per_step.append((res[0] if isinstance(res, tuple) else res.prev_sample).detach().clone())
        return res

    pipe.scheduler.step = _recording_step  # type: ignore[method-assign]

    t0 = time.perf_counter()
    final = pipe(prompt_embeds=text, source=src, bg=bg, render=ren, exp=exp,
                 num_inference_steps=layout.REFERENCE_STEPS, generator=torch.Generator().manual_seed(424),
                 latents=inp["init_noise"].clone(), output_type="latent").images
    t_pipe = time.perf_counter() - t0
    print(f"authors' pipeline, {layout.REFERENCE_STEPS} steps (doubled batch): {t_pipe:.1f} s", flush=True)
    for i, lat in enumerate(per_step):
        out[f"unipc.latents.{i}"] = lat.contiguous()
    out["unipc.final"] = final.contiguous()
    out["unipc.timesteps"] = pipe.scheduler.timesteps.clone().to(torch.int64)
    out["unipc.sigmas"] = pipe.scheduler.sigmas.clone().float()
    sched_cfg = {k: v for k, v in dict(pipe.scheduler.config).items()}

    # --- the same loop at batch 1 with their UNets and scheduler: what dropping the doubled batch costs
    sched = UniPCMultistepScheduler.from_config(PNDMScheduler.from_config(layout.SD15_SCHEDULER_CONFIG).config)
    sched.set_timesteps(layout.REFERENCE_STEPS)
    lat = inp["init_noise"].clone() * sched.init_noise_sigma
    for step_t in sched.timesteps:
        x = sched.scale_model_input(lat, step_t)
        e = unet_dn(x, cond, exp, list(states), step_t, encoder_hidden_states=text, return_dict=False)[0]
        lat = sched.step(e, step_t, lat, return_dict=False)[0]
    single_vs_doubled = float((lat - final).abs().max())
    print(f"their own code, batch 1 vs doubled batch, max abs diff of the final latent: {single_vs_doubled:.3g}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"size": args.size, "seed": str(args.seed), "authors_commit": args.authors_commit,
            "diffusers": diffusers.__version__}
    save_file({k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
               for k, v in out.items()}, str(args.out), metadata=meta)
    sidecar = {
        "what": "outputs of the authors' RigFace code on seeded random weights in the released layout "
                "(scripts/make_rigface_reference.py)",
        "authors_repo": "https://github.com/weimengting/RigFace",
        "authors_commit": args.authors_commit,
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "huggingface_hub": huggingface_hub.__version__, "torch": torch.__version__},
        "size": args.size,
        "seed": args.seed,
        "timestep": int(t[0]),
        "steps": layout.REFERENCE_STEPS,
        "unet_configs": {n: layout.released_config_json(args.size, n) for n in layout.UNET_NAMES},
        "weights_state_sha256": written["hashes"],
        "scheduler_config": json.loads(json.dumps(sched_cfg, default=str)),
        "timesteps": [int(x) for x in out["unipc.timesteps"]],
        "n_identity_states": len(states),
        "authors_batch1_vs_doubled_final_max_abs": single_vs_doubled,
        "stats": {k: _stats(v) for k, v in out.items() if v.is_floating_point() and not k.startswith("input.")},
        "seconds": {"write_layout": round(t_write, 2), "forward_id_plus_denoiser": round(t_fwd, 2),
                    "pipeline_5_steps_doubled": round(t_pipe, 2)},
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    args.out.with_suffix(".json").write_text(json.dumps(sidecar, indent=1, sort_keys=False) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) and its .json sidecar")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
