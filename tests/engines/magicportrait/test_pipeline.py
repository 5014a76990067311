"""MagicPortraitPipeline on a tiny seeded release + tiny SD base (CPU): windows, shapes and output
types, windowed == full-clip sampling when one window covers the clip, the reference drop in the
unconditional half, determinism, save/load round trip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline, context_windows, release_scheduler
from facerig.errors import InvalidInput

S = 64


def tiny_pipeline(layout, root: Path, seed: int = 0) -> MagicPortraitPipeline:
    return layout.tiny_pipeline(root, seed)


def clip(n: int, seed: int = 0, s: int = S) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(reference=torch.rand(1, 3, s, s, generator=g),
                           depth=torch.rand(n, 3, s, s, generator=g), normal=torch.rand(n, 3, s, s, generator=g),
                           render=torch.rand(n, 3, s, s, generator=g))


@pytest.fixture(scope="module")
def pipe(layout, tmp_path_factory):
    return tiny_pipeline(layout, tmp_path_factory.mktemp("mp_pipe"))


def test_context_windows_are_the_releases():
    assert context_windows(14) == [list(range(12)), [11, 12, 13, *range(9)]]
    assert context_windows(12) == [list(range(12))]
    assert context_windows(5) == [list(range(5))]
    assert context_windows(9, 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 0]]
    assert context_windows(24) == [list(range(12)), list(range(11, 23)), [22, 23, *range(10)]]
    assert context_windows(10, 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 0, 1, 2]]
    assert context_windows(10, 4, closed_loop=False) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert all(len(w) == 12 for w in context_windows(100))
    covered = {i for w in context_windows(37) for i in w}
    assert covered == set(range(37))
    with pytest.raises(InvalidInput):
        context_windows(0)
    with pytest.raises(InvalidInput):
        context_windows(20, 4, 4)


def test_release_scheduler():
    s = release_scheduler()
    assert type(s).__name__ == "DDIMScheduler"
    c = s.config
    assert (c.prediction_type, c.timestep_spacing, c.beta_schedule, c.steps_offset, c.clip_sample,
            c.rescale_betas_zero_snr) == ("v_prediction", "trailing", "linear", 1, False, True)
    s.set_timesteps(20)
    assert int(s.timesteps[0]) == 999 and int(s.timesteps[-1]) == 49
    assert float(s.alphas_cumprod[-1]) < 1e-6  # zero terminal SNR


def test_shapes_and_output_types(pipe):
    fr = clip(3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    lat = pipe(fr, 2, generator=g(), output_type="latent")
    assert lat.shape == (1, 4, 3, S // 8, S // 8) and torch.isfinite(lat).all()
    pt = pipe(fr, 2, generator=g(), output_type="pt")
    assert pt.shape == (3, 3, S, S) and pt.min() >= 0 and pt.max() <= 1
    im = pipe(fr, 2, generator=g())
    assert im.shape == (3, S, S, 3) and im.dtype == np.uint8
    np.testing.assert_array_equal(im, (pt * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert pipe.image_size == 8 * pipe.model.denoiser.config.sample_size
    with pytest.raises(InvalidInput):
        pipe(fr, 2, output_type="pil")
    with pytest.raises(InvalidInput):
        pipe(SimpleNamespace(reference=fr.reference, depth=fr.depth[:, :1], normal=fr.normal, render=fr.render), 1)


def test_determinism_and_generator(pipe):
    fr = clip(2, 1)
    a = pipe(fr, 2, generator=torch.Generator().manual_seed(3), output_type="latent")
    b = pipe(fr, 2, generator=torch.Generator().manual_seed(3), output_type="latent")
    c = pipe(fr, 2, generator=torch.Generator().manual_seed(4), output_type="latent")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_one_window_equals_full_clip_and_windows_change_it(pipe):
    fr = clip(5, 2)
    noise = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(5))
    full = pipe(fr, 2, latents=noise, context_frames=5, output_type="latent")
    big = pipe(fr, 2, latents=noise, context_frames=12, output_type="latent")
    torch.testing.assert_close(full, big, rtol=0, atol=0)
    win = pipe(fr, 2, latents=noise, context_frames=3, output_type="latent")
    assert (win - full).abs().max() > 1e-4


def test_windows_are_averaged_per_frame(pipe):
    """One step by hand: window sums / counters, then CFG, then the DDIM step."""
    fr = clip(5, 3)
    noise = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(6))
    got = pipe(fr, 1, latents=noise, context_frames=3, output_type="latent")
    sched = release_scheduler()
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    mp, text = pipe.model, pipe.prompt_embeds()
    bank = pipe.reference_bank_for(fr.reference)
    feats = pipe.guidance_features(fr)
    acc = torch.zeros(2, 4, 5, 8, 8)
    cnt = torch.zeros(5)
    for w in context_windows(5, 3):
        u = mp.predict(noise[:, :, w], t, text, feats[:, :, w], bank, uncond=True)
        c = mp.predict(noise[:, :, w], t, text, feats[:, :, w], bank)
        acc[0:1, :, w] += u
        acc[1:2, :, w] += c
        cnt[w] += 1
    avg = acc / cnt.view(1, 1, 5, 1, 1)
    v = avg[0:1] + 3.5 * (avg[1:2] - avg[0:1])
    want = sched.step(v, t, noise).prev_sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_reference_drop_in_the_uncond_half(pipe):
    fr = clip(2, 4)
    other = SimpleNamespace(**{**vars(fr), "reference": torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(9))})
    noise = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(7))
    # scale <= 1: no CFG, the conditional half alone (as released) -> the reference matters
    u1 = pipe(fr, 1, guidance_scale=0.0 + 1e-9, latents=noise, output_type="latent")
    u2 = pipe(other, 1, guidance_scale=0.0 + 1e-9, latents=noise, output_type="latent")
    assert (u1 - u2).abs().max() > 1e-5
    # scale 1 (no CFG) = conditional only; equals the CFG formula at scale 1 up to rounding
    c1 = pipe(fr, 1, guidance_scale=1.0, latents=noise, output_type="latent")
    torch.testing.assert_close(c1, u1, rtol=0, atol=0)
    cfg = pipe(fr, 1, guidance_scale=1.0 + 1e-6, latents=noise, output_type="latent")
    torch.testing.assert_close(cfg, c1, rtol=1e-4, atol=1e-4)
    # CFG at 3.5 differs from conditional-only: the uncond half (reference dropped) is used
    g = pipe(fr, 1, guidance_scale=3.5, latents=noise, output_type="latent")
    assert (g - c1).abs().max() > 1e-4
    # the uncond half ignores the reference: one DDIM step is affine in the model output, so with
    # u independent of the reference, g(a) - g(b) = 3.5 (c(a) - c(b))
    c2 = pipe(other, 1, guidance_scale=1.0, latents=noise, output_type="latent")
    g2 = pipe(other, 1, guidance_scale=3.5, latents=noise, output_type="latent")
    torch.testing.assert_close(g - g2, 3.5 * (c1 - c2), rtol=1e-3, atol=1e-5)


def test_cached_bank_and_guidance_per_window_are_equal(pipe):
    fr = clip(5, 5)
    noise = torch.randn(1, 4, 5, 8, 8, generator=torch.Generator().manual_seed(8))
    a = pipe(fr, 2, latents=noise, context_frames=3, output_type="latent")
    b = pipe(fr, 2, latents=noise, context_frames=3, output_type="latent",
             reference_bank=pipe.reference_bank_for(fr.reference), guidance_cache_mb=0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_progress_callable(pipe):
    seen = []
    pipe(clip(5, 6), 2, context_frames=3, generator=torch.Generator().manual_seed(0), output_type="latent",
         progress=lambda d, t: seen.append((d, t)))
    n = len(context_windows(5, 3)) * 2
    assert seen == [(i + 1, n) for i in range(n)]


def test_save_load_round_trip(pipe, tmp_path):
    fr = clip(2, 7)
    noise = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    a = pipe(fr, 2, latents=noise, output_type="pt")
    d = pipe.save_pretrained(tmp_path / "mp")
    assert (d / "magicportrait" / "denoiser.safetensors").is_file()
    back = MagicPortraitPipeline.from_pretrained(d)
    b = back(fr, 2, latents=noise, output_type="pt")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
