"""MagicPortrait training objective on tiny seeded models (CPU): the loss falls in both stages,
stage 2 changes only motion-module parameters, stage 1 has no temporal modules, and resume
continues the same run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from facerig.engines.magicportrait.checkpoints import build_denoiser, strip_reference_tail
from facerig.engines.magicportrait.guidance import TINY_GUIDANCE_CONFIG, GuidanceEncoder
from facerig.engines.magicportrait.model import MagicPortraitModel
from facerig.engines.magicportrait.training import (
    MagicPortraitTrainModule,
    fresh_motion_adapter,
    release_alphas_cumprod,
)
from facerig.engines.rigface.model import TINY_UNET_CONFIG
from facerig.errors import InvalidInput
from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer


def _unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY_UNET_CONFIG)


def _model(stage: int, seed: int = 0) -> MagicPortraitModel:
    ref = strip_reference_tail(_unet(seed))
    den = _unet(seed + 1)
    encs = {}
    for i, t in enumerate(("depth", "normal", "render")):
        torch.manual_seed(seed + 10 + i)
        e = GuidanceEncoder(**TINY_GUIDANCE_CONFIG)
        torch.nn.init.normal_(e.conv_out.weight, std=0.02)  # a trained-like encoder (fresh ones add zero)
        encs[t] = e
    if stage == 2:
        den = build_denoiser(den, fresh_motion_adapter(TINY_UNET_CONFIG, num_attention_heads=2, norm_num_groups=8))
    return MagicPortraitModel(ref, den, encs, bank_dtype=None)


def _text() -> torch.Tensor:
    return torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(11))


class Clips(Dataset):
    """Synthetic latent clips whose targets depend on the reference and the maps."""

    def __init__(self, n: int, frames: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            ref = torch.randn(4, 8, 8, generator=g)
            maps = {k: torch.rand(frames, 3, 32, 32, generator=g) for k in ("depth", "normal", "render")}  # tiny encoders: /4
            shift = torch.linspace(-1, 1, frames).view(1, frames, 1, 1)
            tgt = 0.7 * ref[:, None] + 0.3 * shift
            self.items.append({"reference_latent": ref, "target_latent": tgt, **maps})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _eval(m: MagicPortraitTrainModule, ds: Dataset) -> float:
    g = torch.Generator().manual_seed(5)
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    total = 0.0
    with torch.no_grad():
        for t in torch.linspace(50, 950, 6).long():
            noise = torch.randn(batch["target_latent"].shape, generator=g)
            total += m.loss(batch, timesteps=t.repeat(len(ds)), noise=noise,
                            drop=torch.zeros(len(ds), dtype=torch.bool)).item()
    return total / 6


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=10, batch_size=2, lr=1e-3, log_every=5, save_every=1000, logger="csv", grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_zero_snr_schedule():
    ac = release_alphas_cumprod()
    assert ac[-1].item() == 0.0 and abs(ac[0].item() - (1 - 0.00085)) < 1e-3
    assert torch.all(ac[1:] <= ac[:-1])


def test_stage1_freezes_only_dead_parts_and_has_no_temporal_modules():
    m = MagicPortraitTrainModule(_model(1), _text(), stage=1)
    names = m.trainable_names()
    assert not any(".motion_modules." in n for n in m.state_dict())
    assert any(n.startswith("denoiser.") for n in names) and any(n.startswith("guidance_encoders.") for n in names)
    assert any(n.startswith("reference_unet.down_blocks.") for n in names)
    assert any(n.startswith("reference_unet.up_blocks.3.") for n in m.frozen)  # the dead tail
    assert "guidance_encoders.depth.guidance_attention.proj_in.weight" in m.frozen
    assert not any(n.startswith("denoiser.") for n in m.frozen)


def test_stage1_steps_lower_the_loss(tmp_path):
    ds = Clips(4, 1)
    m = MagicPortraitTrainModule(_model(1), _text(), stage=1)
    before = _eval(m, ds)
    Trainer(m, ds, _cfg(max_steps=30), tmp_path).run()
    after = _eval(m, ds)
    assert after < 0.8 * before, (before, after)


def test_stage2_changes_only_motion_modules_and_lowers_the_loss(tmp_path):
    ds = Clips(2, 3, seed=1)
    m = MagicPortraitTrainModule(_model(2), _text(), stage=2)
    assert m.trainable_names() and all(".motion_modules." in n for n in m.trainable_names())
    start = {k: v.clone() for k, v in m.state_dict().items()}
    before = _eval(m, ds)
    Trainer(m, ds, _cfg(max_steps=30, lr=3e-3), tmp_path).run()
    after = _eval(m, ds)
    end = m.state_dict()
    changed = [k for k in start if not torch.equal(start[k], end[k])]
    assert changed and all(".motion_modules." in k for k in changed), changed[:5]
    assert after < before, (before, after)


def test_resume_continues_the_same_run(tmp_path):
    ds = Clips(4, 1, seed=2)
    straight = MagicPortraitTrainModule(_model(1, 3), _text(), stage=1)
    Trainer(straight, ds, _cfg(max_steps=4, save_every=2), tmp_path / "a").run()
    first = MagicPortraitTrainModule(_model(1, 3), _text(), stage=1)
    Trainer(first, ds, _cfg(max_steps=4, save_every=2), tmp_path / "b").run(stop_after=2)
    resumed = MagicPortraitTrainModule(_model(1, 3), _text(), stage=1)
    tr = Trainer(resumed, ds, _cfg(max_steps=4, save_every=2), tmp_path / "b")
    tr.run(resume="latest")
    assert tr.step == 4
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_min_snr_weights_follow_the_lineage_form_and_are_finite_at_zero_snr():
    from facerig.engines.magicportrait.training import min_snr_weights

    ac = release_alphas_cumprod()
    w = min_snr_weights(ac, 5.0)
    assert torch.isfinite(w).all() and w[-1].item() == 1.0          # a = 0 at the last step
    snr = ac / (1 - ac)
    i = 500
    assert abs(w[i].item() - min(snr[i].item() + 1, 5.0) / (snr[i].item() + 1)) < 1e-9
    assert w[0].item() < 0.01                                       # nearly clean steps count little
    assert torch.all(min_snr_weights(ac, 0.0) == 1)


def test_snr_gamma_and_noise_offset_change_the_loss_as_specified():
    """The weighted loss is the hand-weighted per-sample MSE; the offset noise is the plain noise
    plus offset x a per-(sample, channel) constant drawn after it; gradients stay finite at t = 999."""
    from facerig.engines.magicportrait.training import min_snr_weights

    ds = Clips(2, 1, seed=5)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    t = torch.tensor([999, 300])
    noise = torch.randn(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    drop = torch.tensor([False, False])
    per = []
    for i in range(2):
        m = MagicPortraitTrainModule(_model(1), _text(), stage=1)
        sub = {k: v[i:i + 1] for k, v in batch.items()}
        per.append(m.loss(sub, timesteps=t[i:i + 1], noise=noise[i:i + 1], drop=drop[:1]).item())
    m = MagicPortraitTrainModule(_model(1), _text(), stage=1, snr_gamma=5.0)
    got = m.loss(batch, timesteps=t, noise=noise, drop=drop)
    w = min_snr_weights(m.alphas_cumprod[t], 5.0)
    assert abs(got.item() - float((torch.tensor(per, dtype=torch.float64) * w).mean())) < 1e-5
    got.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    # noise offset: same generator stream, plain noise first, then the (B, C, 1, 1, 1) constant
    off = MagicPortraitTrainModule(_model(1), _text(), stage=1, noise_offset=0.05)
    g = torch.Generator().manual_seed(9)
    t2 = torch.randint(0, 1000, (2,), generator=g)
    eps = torch.randn(2, 4, 1, 8, 8, generator=g)
    eps = eps + 0.05 * torch.randn((2, 4, 1, 1, 1), generator=g)
    d2 = torch.rand(2, generator=g) < off.reference_drop
    want = off.loss(batch, timesteps=t2, noise=eps, drop=d2).item()
    assert abs(off.loss(batch, generator=torch.Generator().manual_seed(9)).item() - want) < 1e-6
    with pytest.raises(InvalidInput, match="noise_offset"):
        MagicPortraitTrainModule(_model(1), _text(), stage=1, noise_offset=-0.1)
    with pytest.raises(InvalidInput, match="snr_gamma"):
        MagicPortraitTrainModule(_model(1), _text(), stage=1, snr_gamma=-1)


@pytest.mark.parametrize("name", ["paper_stage1", "paper_stage2"])
def test_paper_recipes_carry_champs_noise_offset_and_snr_gamma(name):
    from facerig.engines.magicportrait.training import MODEL_KEYS
    from facerig.train.config import load_recipe

    r = load_recipe(name, engine="magicportrait")
    mc = dict(r.model)
    assert set(mc) <= set(MODEL_KEYS)
    assert (mc["noise_offset"], mc["snr_gamma"], mc["reference_drop"]) == (0.05, 5.0, 0.1)
