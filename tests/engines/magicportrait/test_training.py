"""MagicPortrait training on tiny models (CPU, seeded): the loss falls in both stages, stage 2 moves
only the motion modules, stage 1 leaves them untouched, resume continues the run, the exported
pipeline folder loads back with the same prediction."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from facerig.engines.magicportrait.training import (
    MagicPortraitTrainModule,
    is_motion_param,
    stage1_model,
)
from facerig.engines.rigface.model import TINY_UNET_CONFIG
from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer

GUIDANCE8 = {"guidance_embedding_channels": 16, "guidance_input_channels": 3,
             "block_out_channels": (8, 32, 32, 32), "attention_num_heads": 8}
MC = {"init": "config", "unet": dict(TINY_UNET_CONFIG), "guidance": GUIDANCE8, "motion_heads": 2,
      "motion_norm_groups": 8}
S = 8 * int(TINY_UNET_CONFIG["sample_size"])


class Clips(Dataset):
    """Synthetic latent clips whose targets depend on the maps and the reference."""

    def __init__(self, n: int, frames: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        h = S // 8
        self.items = []
        for _ in range(n):
            ref = torch.randn(4, h, h, generator=g)
            maps = {k: torch.rand(3, frames, S, S, generator=g) for k in ("depth", "normal", "render")}
            small = torch.nn.functional.avg_pool2d(maps["depth"].permute(1, 0, 2, 3), 8).permute(1, 0, 2, 3)
            tgt = 0.5 * ref[:, None] + torch.cat([small, small[:1]], 0)
            tgt = tgt + 0.3 * torch.linspace(-1, 1, frames).view(1, frames, 1, 1)
            self.items.append({"reference_latent": ref, "target_latent": tgt, **maps})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _module(stage: int, model=None, seed: int = 0) -> MagicPortraitTrainModule:
    model = model if model is not None else stage1_model(MC, None, seed)
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(11))
    return MagicPortraitTrainModule(model, text, stage=stage, reference_drop=0.0)


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=8, batch_size=2, lr=1e-3, log_every=4, save_every=1000, logger="csv", grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def _eval_loss(module: MagicPortraitTrainModule, ds: Dataset) -> float:
    g = torch.Generator().manual_seed(123)
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    total = 0.0
    ts = torch.linspace(100, 900, 4).long()
    with torch.no_grad():
        for t in ts:
            noise = torch.randn(batch["target_latent"].shape, generator=g)
            total += module.loss(batch, timesteps=t.repeat(len(ds)), noise=noise, drop=False).item()
    return total / len(ts)


def _snapshot(mod: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in mod.state_dict().items()}


def test_stage1_lowers_the_loss_and_leaves_motion_modules_untouched(tmp_path):
    m = _module(1)
    assert m.frozen, "the reference UNet's dead tail is frozen"
    assert not any(p.requires_grad for n, p in m.denoiser.named_parameters() if is_motion_param(n))
    ds = Clips(4, frames=1)
    before, snap = _eval_loss(m, ds), _snapshot(m.denoiser)
    Trainer(m, ds, _cfg(max_steps=10), tmp_path).run()
    after = _eval_loss(m, ds)
    assert after < 0.9 * before, (before, after)
    now = m.denoiser.state_dict()
    motion = [k for k in snap if is_motion_param(k)]
    assert motion and all(torch.equal(snap[k], now[k]) for k in motion)
    assert any(not torch.equal(snap[k], now[k]) for k in snap if not is_motion_param(k))
    # zero-output motion modules: an exact identity, the denoiser is the 2D UNet
    assert all(not now[k].any() for k in motion if ".proj_out." in k)


def test_stage2_lowers_the_loss_and_changes_only_motion_params(tmp_path):
    m = _module(2)
    ds = Clips(4, frames=3)
    snaps = {n: _snapshot(getattr(m, n)) for n in ("denoiser", "reference_unet", "guidance_encoders")}
    before = _eval_loss(m, ds)
    Trainer(m, ds, _cfg(max_steps=10, lr=3e-3), tmp_path).run()
    after = _eval_loss(m, ds)
    assert after < before, (before, after)
    for name, snap in snaps.items():
        now = getattr(m, name).state_dict()
        for k, v in snap.items():
            same = torch.equal(v, now[k])
            assert same != (name == "denoiser" and is_motion_param(k) and not k.endswith(".pe")), (name, k)


def test_resume_continues_the_same_run(tmp_path):
    ds = Clips(4, frames=1)
    full = Trainer(_module(1), ds, _cfg(max_steps=6, log_every=1), tmp_path / "a")
    full.run()
    split = Trainer(_module(1), ds, _cfg(max_steps=6, log_every=1), tmp_path / "b")
    split.run(stop_after=3)
    again = Trainer(_module(1), ds, _cfg(max_steps=6, log_every=1), tmp_path / "b")
    again.run(resume="latest")
    assert again.step == 6
    a, b = full.unwrapped.state_dict(), again.unwrapped.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
