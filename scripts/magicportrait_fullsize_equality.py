"""Equality case d (docs/magicportrait-equality.md): full SD 1.5-size MagicPortrait (random weights in the released layout), 2 frames of 8x8
latents, 2 DDIM steps, CFG 3.5: ours vs the authors' pipeline.
Usage, each step its own process (about 10-12 GB each in fp32):
  python scripts/magicportrait_fullsize_equality.py write|ours|theirs ROOT
  python scripts/magicportrait_fullsize_equality.py compare ROOT
"theirs" needs FACERIG_MAGICPORTRAIT_SRC (their models/ + pipelines/) and einops importable."""
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

torch.set_num_threads(2)
mode, root = sys.argv[1], Path(sys.argv[2])
T = Path(__file__).resolve().parents[1] / "tests" / "engines" / "magicportrait"



def load_mod(name, p):
    spec = importlib.util.spec_from_file_location(name, p)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


cf = load_mod("mp_conftest", T / "conftest.py")
pa = load_mod("mp_pa", T / "test_pipeline_authors.py")
from facerig.engines.rigface.model import SD15_UNET_CONFIG  # noqa: E402

CFG = dict(SD15_UNET_CONFIG)
GUID = {"guidance_embedding_channels": 320, "guidance_input_channels": 3, "block_out_channels": (16, 32, 96, 256),
        "attention_num_heads": 8}
N, STEPS = 2, 2
setup = SimpleNamespace(release=root / "ckpts", base=root / "sd")
t0 = time.time()
if mode == "write":
    from transformers import CLIPTextConfig, CLIPTextModel

    from facerig.engines.sd.base import write_tiny_sd_base
    write_tiny_sd_base(root / "sd", 0)
    old = CLIPTextModel.from_pretrained(str(root / "sd" / "text_encoder")).config
    c = CLIPTextConfig(**{**old.to_dict(), "hidden_size": 768, "intermediate_size": 1024, "projection_dim": 768,
                          "num_hidden_layers": 1, "num_attention_heads": 12})
    torch.manual_seed(0)
    CLIPTextModel(c).save_pretrained(str(root / "sd" / "text_encoder"))
    f = root / "ckpts"
    f.mkdir(parents=True, exist_ok=True)
    keys = cf.released_guidance_keys(GUID["block_out_channels"], 320)
    for i, t in enumerate(("depth", "normal", "render")):
        g = torch.Generator().manual_seed(10 + i)
        torch.save({k: torch.randn(*s, generator=g) * 0.2 for k, s in keys.items()}, f / f"guidance_encoder_{t}.pth")
    ref = {k: v for k, v in cf.stock_unet_state(CFG, 1).items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    torch.save(ref, f / "reference_unet.pth")
    del ref
    torch.save(cf.stock_unet_state(CFG, 2), f / "denoising_unet.pth")
    torch.save(cf.released_motion_state(CFG, 3, 32), f / "motion_module.pth")
elif mode == "ours":
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline
    with torch.no_grad():
        pipe = MagicPortraitPipeline.from_released(setup.release, setup.base, unet_config=CFG, guidance_config=GUID,
                                                   motion_heads=8, motion_norm_groups=32)
        print("loaded", time.time() - t0, flush=True)
        fr = pa.as_frames(pa.clip_arrays(N, 100 + N))
        lat = pipe(fr, STEPS, 3.5, context_frames=12, generator=torch.Generator().manual_seed(42), output_type="latent")
    torch.save(lat, root / "ours.pt")
elif mode == "theirs":
    sys.path[:0] = [os.environ["FACERIG_MAGICPORTRAIT_SRC"]]
    pa.CFG = {}
    pa.GUIDANCE = GUID
    pa.CASES = {"full": (N, STEPS, 12)}
    import models.guidance_encoder as ge
    Orig = ge.GuidanceEncoder
    ge.GuidanceEncoder = lambda emb, cin, boc: Orig(320, cin, boc)  # released embedding width
    with torch.no_grad():
        out = pa.run_theirs(setup, "full")
    torch.save(out["full.latents"], root / "theirs.pt")
else:  # compare
    a, b = torch.load(root / "ours.pt", weights_only=True), torch.load(root / "theirs.pt", weights_only=True)
    d = float((a - b).abs().max())
    print(f"final latents {tuple(a.shape)}: max abs diff {d:.3g}, max abs theirs {float(b.abs().max()):.3g}")
    sys.exit(0 if d <= 1e-4 * max(1.0, float(b.abs().max())) else 1)
print(mode, "done in", round(time.time() - t0, 1), "s", flush=True)
