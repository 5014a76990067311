"""Equality of MagicPortraitPipeline with the authors' sampling pipeline (their
``pipelines/pipeline_aggregation.py`` + ``models/``), random weights in the released layout.

The seeded release is written here from the layout writers of conftest.py (no authors' code), the
clip's maps and reference from a seed. ``tests/fixtures/magicportrait/pipeline_authors.safetensors``
holds THEIR outputs (final latents of every case, decoded frames of the CFG case), made by
``test_fixture_is_the_authors_output`` with FACERIG_MAGICPORTRAIT_SRC (a folder holding their
``models/`` and ``pipelines/``; einops importable) and FACERIG_WRITE_FIXTURES=1. The CI test runs
ours against the stored outputs without their code.

Cases (tiny widths multiple of 32: their temporal modules always use 32 norm groups; 64 x 64 crops,
8 x 8 latents):
* ``cfg4``: 2 frames (one window), 4 steps, guidance 3.5;
* ``win4x9``: 9 frames, context 4 (overlap 1): 3 windows incl. a wrap-around, 3 steps;
* ``win12x14``: 14 frames, the released 12-frame windows, 2 steps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "magicportrait" / "pipeline_authors.safetensors"
SRC = os.environ.get("FACERIG_MAGICPORTRAIT_SRC")

S = 64
CFG = {"block_out_channels": [32, 32, 64, 64], "attention_head_dim": 2, "cross_attention_dim": 32,
       "norm_num_groups": 8, "sample_size": 8}
GUIDANCE = {"guidance_embedding_channels": 32, "guidance_input_channels": 3, "block_out_channels": (8, 32, 32, 32),
            "attention_num_heads": 8}
CASES = {"cfg4": (2, 4, 12), "win4x9": (9, 3, 4), "win12x14": (14, 2, 12)}  # frames, steps, context


def unet_config() -> dict:
    from facerig.engines.rigface.model import SD15_UNET_CONFIG

    return {**SD15_UNET_CONFIG, **CFG}


def write_release(layout, folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = unet_config()
    keys = layout.released_guidance_keys(GUIDANCE["block_out_channels"], GUIDANCE["guidance_embedding_channels"])
    for i, t in enumerate(("depth", "normal", "render")):
        g = torch.Generator().manual_seed(seed + 10 + i)
        torch.save({k: torch.randn(*s, generator=g) * 0.2 for k, s in keys.items()}, folder / f"guidance_encoder_{t}.pth")
    ref = {k: v for k, v in layout.stock_unet_state(cfg, seed + 1).items()
           if not k.startswith(("conv_norm_out.", "conv_out."))}
    torch.save(ref, folder / "reference_unet.pth")
    torch.save(layout.stock_unet_state(cfg, seed + 2), folder / "denoising_unet.pth")
    torch.save(layout.released_motion_state(cfg, seed + 3, 32), folder / "motion_module.pth")
    return folder


def clip_arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"reference": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
            **{k: rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8) for k in ("depth", "normal", "render")}}


def as_frames(a: dict[str, np.ndarray]) -> SimpleNamespace:
    t = {k: torch.from_numpy(v).float().div(255.0) for k, v in a.items()}
    return SimpleNamespace(reference=t["reference"].permute(2, 0, 1)[None],
                           **{k: t[k].permute(0, 3, 1, 2) for k in ("depth", "normal", "render")})


@pytest.fixture(scope="module")
def setup(layout, tmp_path_factory):
    from facerig.engines.sd.base import write_tiny_sd_base

    root = tmp_path_factory.mktemp("mp_authors_eq")
    return SimpleNamespace(release=write_release(layout, root / "ckpts"), base=write_tiny_sd_base(root / "sd", 0),
                           root=root)


def run_ours(setup, name: str) -> dict[str, torch.Tensor]:
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline

    pipe = MagicPortraitPipeline.from_released(setup.release, setup.base, unet_config=unet_config(),
                                               guidance_config=GUIDANCE, motion_heads=8, motion_norm_groups=32)
    n, steps, ctx = CASES[name]
    fr = as_frames(clip_arrays(n, 100 + n))
    lat = pipe(fr, steps, 3.5, context_frames=ctx, generator=torch.Generator().manual_seed(42), output_type="latent")
    out = {f"{name}.latents": lat}
    if name == "cfg4":
        out[f"{name}.frames"] = pipe.decode(lat)
    return out


def run_theirs(setup, name: str) -> dict[str, torch.Tensor]:
    """Their pipeline, their models (strict loading of the same .pth files), their scheduler config."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from models.guidance_encoder import GuidanceEncoder  # type: ignore[import-not-found]
    from models.unet_2d_condition import UNet2DConditionModel  # type: ignore[import-not-found]
    from models.unet_3d import UNet3DConditionModel  # type: ignore[import-not-found]
    from PIL import Image
    from pipelines.pipeline_aggregation import MultiGuidance2LongVideoPipeline  # type: ignore[import-not-found]
    from transformers import CLIPTextModel, CLIPTokenizer

    def load(m, f):
        sd = torch.load(setup.release / f, map_location="cpu", weights_only=True)
        missing, unexpected = m.load_state_dict(sd, strict=False)
        return m.eval(), missing, unexpected

    cfg = unet_config()
    extra = {"use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False,
             "unet_use_temporal_attention": False, "use_motion_module": True,
             "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
             "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
             "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                      "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                      "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                                      "temporal_attention_dim_div": 1}}
    c3 = {**cfg, "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
          "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3, "mid_block_type": "UNetMidBlock3DCrossAttn"}
    den, miss, unexp = load(UNet3DConditionModel.from_config(c3, **extra), "denoising_unet.pth")
    assert not unexp and all(".motion_modules." in k for k in miss)
    mot = torch.load(setup.release / "motion_module.pth", map_location="cpu", weights_only=True)
    miss2, unexp2 = den.load_state_dict(mot, strict=False)
    assert not unexp2 and not [k for k in miss2 if ".motion_modules." in k]
    ref, miss, unexp = load(UNet2DConditionModel.from_config(cfg), "reference_unet.pth")
    assert not unexp and not miss, (miss, unexp)
    gens = {}
    for t in ("depth", "normal", "render"):
        gens[t], miss, unexp = load(GuidanceEncoder(32, 3, GUIDANCE["block_out_channels"]), f"guidance_encoder_{t}.pth")
        assert not miss and not unexp
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                          steps_offset=1, clip_sample=False, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                          prediction_type="v_prediction")
    vae = AutoencoderKL.from_pretrained(str(setup.base / "vae")).eval()
    te = CLIPTextModel.from_pretrained(str(setup.base / "text_encoder")).eval()
    tok = CLIPTokenizer.from_pretrained(str(setup.base / "tokenizer"))
    pipe = MultiGuidance2LongVideoPipeline(vae=vae, reference_unet=ref, denoising_unet=den,
                                           guidance_encoder_depth=gens["depth"], guidance_encoder_normal=gens["normal"],
                                           guidance_encoder_render=gens["render"], scheduler=sched)
    ids = tok(["A close up of a person."], max_length=tok.model_max_length, padding="max_length", truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        prompt = te(ids)[0]
    n, steps, ctx = CASES[name]
    a = clip_arrays(n, 100 + n)
    group = {k: [Image.fromarray(x) for x in a[k]] for k in ("depth", "normal", "render")}
    seen: list[torch.Tensor] = []
    video = pipe(Image.fromarray(a["reference"]), prompt, group, S, S, n, num_inference_steps=steps,
                 guidance_scale=3.5, generator=torch.Generator().manual_seed(42), context_frames=ctx,
                 callback=lambda i, t, lat: seen.append(lat.clone())).videos
    out = {f"{name}.latents": seen[-1]}
    if name == "cfg4":
        out[f"{name}.frames"] = video[0].permute(1, 0, 2, 3).contiguous()
    return out


def _check(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], report: list[str]) -> None:
    for k, v in ours.items():
        r = ref[k].float()
        d = (v.float() - r).abs().max().item()
        report.append(f"{k}: max |diff| {d:.3g}, max |ref| {r.abs().max().item():.3g}, rel {d / r.abs().max().item():.3g}")
        torch.testing.assert_close(v.float(), r, rtol=1e-4, atol=1e-4 * max(1.0, r.abs().max().item()))


@pytest.mark.skipif(not FIXTURE.is_file(), reason="no stored authors' outputs")
@pytest.mark.parametrize("name", list(CASES))
def test_ours_equals_the_authors_stored_output(setup, name):
    from safetensors.torch import load_file

    ref = load_file(str(FIXTURE))
    report: list[str] = []
    _check(run_ours(setup, name), ref, report)
    print("\n".join(report))


@pytest.mark.skipif(not SRC or not (Path(SRC) / "pipelines" / "pipeline_aggregation.py").is_file(),
                    reason="FACERIG_MAGICPORTRAIT_SRC (the authors' models/ + pipelines/) not set")
def test_fixture_is_the_authors_output(setup):
    pytest.importorskip("einops")
    saved_path = list(sys.path)
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("models", "pipelines")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(SRC))
    try:
        theirs: dict[str, torch.Tensor] = {}
        for name in CASES:
            theirs.update(run_theirs(setup, name))
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k.split(".")[0] in ("models", "pipelines")]:
            del sys.modules[k]
        sys.modules.update(saved)
    if os.environ.get("FACERIG_WRITE_FIXTURES") == "1":
        from safetensors.torch import save_file

        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.float().contiguous() for k, v in theirs.items()}, str(FIXTURE))
    from safetensors.torch import load_file

    stored = load_file(str(FIXTURE))
    for k, v in theirs.items():
        torch.testing.assert_close(v.float(), stored[k], rtol=1e-5, atol=1e-6)
    report: list[str] = []
    for name in CASES:
        _check(run_ours(setup, name), theirs, report)
    print("\n".join(report))
