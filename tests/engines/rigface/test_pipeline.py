"""RigFacePipeline on tiny random weights: identity states cached vs recomputed, one UNet call per
step (no doubled guidance batch), the release's latent spaces, determinism, save/load, dtype."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))

from rigface_tiny import write_tiny_rigface  # noqa: E402

from facerig.engines.rigface.conditions import RigFaceConditions  # noqa: E402
from facerig.engines.rigface.model import RigFaceUNets  # noqa: E402
from facerig.engines.rigface.pipeline import RigFacePipeline  # noqa: E402
from facerig.engines.sd.base import load_sd_base  # noqa: E402
from facerig.errors import IncompatibleModel, InvalidInput  # noqa: E402

S = 64


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return write_tiny_rigface(tmp_path_factory.mktemp("rf"), expression_kind="facerig", expression_dim=6)


@pytest.fixture()
def pipe(parts):
    base_dir, weights = parts
    return RigFacePipeline.from_parts(RigFaceUNets.from_pretrained(weights), load_sd_base(base_dir))


def _conditions(astronaut, seed=0, expression=None):
    from facerig.engines.sd.latents import image_to_tensor

    g = torch.Generator().manual_seed(seed)
    src = image_to_tensor(np.ascontiguousarray(astronaut[:256:4, 128:384:4]))
    bg = src.clone()
    bg[:, :, 8:56, 16:48] = 127 / 127.5 - 1
    render = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    exp = expression if expression is not None else torch.randn(1, 6, generator=g)
    return RigFaceConditions(source=src, background=bg, render=render, expression=exp, expression_kind="facerig",
                             crop=None, mask=torch.ones(1, 1, S, S))  # type: ignore[arg-type]


def test_cached_and_uncached_identity_states_give_the_same_image(pipe, astronaut):
    c = _conditions(astronaut)
    calls = []
    h = pipe.unets.unet_id.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        first = pipe(c, num_inference_steps=3, generator=0, progress=False)
        again = pipe(_conditions(astronaut, expression=torch.zeros(1, 6)), num_inference_steps=3, generator=0,
                     progress=False)
        assert len(calls) == 1  # a second edit of the same source reuses the states
        pipe.clear_identity_cache()
        fresh = pipe(c, num_inference_steps=3, generator=0, progress=False)
        explicit = pipe(c, num_inference_steps=3, generator=0, progress=False,
                        identity_states=pipe.unets.identity_states(
                            pipe.vae.encode(c.source).latent_dist.mean, pipe.prompt_embeds()))
    finally:
        h.remove()
    assert first.shape == (S, S, 3) and first.dtype == np.uint8
    assert np.array_equal(first, fresh) and np.array_equal(first, explicit)
    assert not np.array_equal(first, again)  # the expression reaches the output


def test_one_unet_call_per_step_on_a_batch_of_one(pipe, astronaut):
    batches = []
    h = pipe.unets.unet_denoise.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        pipe(_conditions(astronaut), num_inference_steps=4, generator=0, progress=False)
    finally:
        h.remove()
    assert batches == [1, 1, 1, 1]


def test_latent_spaces_follow_the_release(pipe, astronaut, monkeypatch):
    """background/render/source go in unscaled (posterior mean), the noise starts in scaled space."""
    c = _conditions(astronaut)
    seen = {}
    orig = pipe.unets.predict_noise

    def spy(noisy, t, bg, rd, expr, states, text):
        seen.setdefault("bg", bg)
        seen.setdefault("noisy", noisy)
        return orig(noisy, t, bg, rd, expr, states, text)

    monkeypatch.setattr(pipe.unets, "predict_noise", spy)
    pipe(c, num_inference_steps=1, generator=7, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(seen["bg"], pipe.vae.encode(c.background).latent_dist.mean)
    torch.testing.assert_close(seen["noisy"], torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7)))


def test_seeded_and_default_fifty_steps(pipe, astronaut):
    c = _conditions(astronaut)
    a = pipe(c, num_inference_steps=2, generator=1, progress=False)
    b = pipe(c, num_inference_steps=2, generator=torch.Generator().manual_seed(1), progress=False)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, pipe(c, num_inference_steps=2, generator=2, progress=False))
    import inspect

    assert inspect.signature(RigFacePipeline.__call__).parameters["num_inference_steps"].default == 50
    pipe.scheduler.set_timesteps(50)
    assert pipe.scheduler.timesteps[0] == 999 and pipe.scheduler.timesteps[-1] == 20


def test_save_and_load_the_whole_pipeline(pipe, astronaut, tmp_path):
    c = _conditions(astronaut)
    ref = pipe(c, num_inference_steps=2, generator=0, progress=False)
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "unets" / "unet_denoise" / "config.json").is_file()
    back = RigFacePipeline.from_pretrained(tmp_path / "p")
    assert type(back.scheduler).__name__ == "UniPCMultistepScheduler"
    assert np.array_equal(back(c, num_inference_steps=2, generator=0, progress=False), ref)


def test_bf16_runs_and_errors_are_typed(parts, astronaut):
    base_dir, weights = parts
    p16 = RigFacePipeline.from_parts(RigFaceUNets.from_pretrained(weights, dtype=torch.bfloat16),
                                     load_sd_base(base_dir, dtype=torch.bfloat16))
    out = p16(_conditions(astronaut), num_inference_steps=1, generator=0, progress=False)
    assert out.shape == (S, S, 3)
    with pytest.raises(IncompatibleModel, match="expression"):
        p16(_conditions(astronaut, expression=torch.zeros(1, 5)), num_inference_steps=1, progress=False)
    with pytest.raises(InvalidInput, match="num_inference_steps"):
        p16(_conditions(astronaut), num_inference_steps=0, progress=False)
