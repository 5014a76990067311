"""Equality with the authors' own modules (their GuidanceEncoder and AnimateDiff VanillaTemporalModule),
random weights in the released layout, released sizes. Needs their public code: set
FACERIG_MAGICPORTRAIT_SRC to a folder holding their ``models/`` package (e.g. from
``git -C <snapshot> archive HEAD models | tar -x``) and have ``einops`` importable; skipped otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

SRC = os.environ.get("FACERIG_MAGICPORTRAIT_SRC")
pytestmark = pytest.mark.skipif(not SRC or not (Path(SRC) / "models" / "motion_module.py").is_file(),
                                reason="FACERIG_MAGICPORTRAIT_SRC (the authors' models/ folder) not set")


@pytest.fixture(scope="module")
def authors():
    pytest.importorskip("einops")
    saved_path, saved_mods = list(sys.path), {k: v for k, v in sys.modules.items() if k == "models" or k.startswith("models.")}
    for k in saved_mods:
        del sys.modules[k]
    sys.path.insert(0, str(SRC))
    try:
        import models.guidance_encoder as guidance  # type: ignore[import-not-found]
        import models.motion_module as motion  # type: ignore[import-not-found]

        yield guidance, motion
    finally:
        sys.path[:] = saved_path
        for k in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            del sys.modules[k]
        sys.modules.update(saved_mods)


def _randomise(m: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_guidance_encoder_equals_the_authors(authors):
    from facerig.engines.magicportrait.guidance import RELEASED_GUIDANCE_CONFIG, GuidanceEncoder

    theirs = authors[0].GuidanceEncoder(320, 3, (16, 32, 96, 256)).eval()
    _randomise(theirs, 0)
    ours = GuidanceEncoder(**RELEASED_GUIDANCE_CONFIG).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(1, 3, 2, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_motion_module_equals_the_authors(authors):
    from diffusers import MotionAdapter

    from facerig.engines.magicportrait.checkpoints import animatediff_to_diffusers, per_frame_motion_norm

    kw = {"num_attention_heads": 8, "num_transformer_block": 1, "attention_block_types": ["Temporal_Self"] * 2,
          "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32, "temporal_attention_dim_div": 1}
    theirs = authors[1].get_motion_module(320, "Vanilla", kw).eval()
    _randomise(theirs, 2)
    pre = "down_blocks.0.motion_modules.0."
    renamed = animatediff_to_diffusers({pre + k: v for k, v in theirs.state_dict().items()})
    adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280)).eval()
    ours = adapter.down_blocks[0].motion_modules[0]
    ours.load_state_dict({k[len(pre):]: v for k, v in renamed.items()}, strict=True)
    per_frame_motion_norm(adapter)
    f = 5
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 320, f, 8, 8, generator=g) * 2 + torch.linspace(-3, 3, f)[None, None, :, None, None]
    with torch.no_grad():
        want = theirs(h, None, None)
        got = ours(h.permute(0, 2, 1, 3, 4).reshape(2 * f, 320, 8, 8), num_frames=f)
    got = got.reshape(2, f, 320, 8, 8).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
