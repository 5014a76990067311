"""Shared tiny InstaFace fixtures (CPU, seeded)."""

from __future__ import annotations

import pytest
import torch

from facerig.engines.instaface.model import TINY_UNET_CONFIG, InstaFaceModel

CLIP_DIM = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids oversubscription slow-downs on a shared CPU. Per test: the
    face fit of the engine fixtures leaves torch on 2 threads (measured), ~10x slower here when
    the other core is busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(seed: int = 0, clip_dim: int = CLIP_DIM, **kw) -> InstaFaceModel:
    return InstaFaceModel.from_config(TINY_UNET_CONFIG, clip_dim=clip_dim, num_tokens=4, projection_width=32,
                                      projection_heads=2, seed=seed, **kw)


def tiny_inputs(seed: int = 0, batch: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {"noisy": r(batch, 4, 8, 8), "cond": r(1, 12, 8, 8), "face": r(1, 128), "clip": r(1, CLIP_DIM),
            "text": r(1, 77, 32)}
