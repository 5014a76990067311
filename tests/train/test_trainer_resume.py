"""Trainer: exact resume (N straight == N/2 + resume + N/2), checkpoint files, EMA, logging, configs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from facerig.train.config import TrainConfig, from_dict
from facerig.train.trainer import Trainer, lr_lambda


class _Pairs(Dataset):
    def __init__(self, n=12, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.image = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        self.cond = torch.rand(n, 9, size, size, generator=g)

    def __len__(self):
        return len(self.image)

    def __getitem__(self, i):
        return {"image": self.image[i], "cond": self.cond[i]}


def _module(seed=0):
    from facerig.engines.diffusionrig.model import TINY_UNET_CONFIG, DiffusionRigUNet, GlobalEncoder
    from facerig.engines.diffusionrig.training import DiffusionRigTrainModule

    torch.manual_seed(seed)
    cfg = dict(TINY_UNET_CONFIG, dropout=0.1)  # dropout: the global RNG must be restored too
    return DiffusionRigTrainModule(DiffusionRigUNet(**cfg), GlobalEncoder(), p2_gamma=1.0, p2_k=1.0)


def _cfg(**kw):
    base = dict(
        max_steps=4,
        batch_size=2,
        grad_accum=2,
        lr=1e-3,
        lr_schedule="cosine",
        warmup_steps=1,
        ema_decay=0.99,
        save_every=2,
        log_every=1,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_exact_resume(tmp_path):
    data = _Pairs()
    straight = Trainer(_module(), data, _cfg(), tmp_path / "a").run()

    Trainer(_module(), data, _cfg(save_every=3), tmp_path / "b").run(stop_after=2)  # "interrupted" at 2
    resumed_tr = Trainer(
        _module(seed=99), data, _cfg(), tmp_path / "b"
    )  # other init: all comes from the checkpoint
    resumed = resumed_tr.run(resume="latest")

    a, b = straight.state_dict(), resumed.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = load_file(tmp_path / "a" / "checkpoints" / "step_0000004" / "ema.safetensors")
    ema_b = load_file(tmp_path / "b" / "checkpoints" / "step_0000004" / "ema.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    # the parameters moved, and EMA differs from them
    k = "unet.out.2.weight"
    assert not torch.equal(a[k], torch.zeros_like(a[k]))
    assert not torch.equal(ema_a[k], a[k])

    ck = tmp_path / "b" / "checkpoints"
    assert (ck / "latest").read_text().strip() == "step_0000004"
    assert {p.name for p in (ck / "step_0000004").iterdir()} >= {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.pt",
        "lr_scheduler.pt",
        "rank_0.pt",
        "trainer.json",
    }
    assert not list(ck.glob(".tmp*"))
    assert json.loads((ck / "step_0000004" / "trainer.json").read_text())["step"] == 4
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,name,value" and any(r.startswith("4,loss,") for r in rows)


def test_lr_schedules_and_config_types():
    f = lr_lambda("cosine", 2, 10)
    assert f(0) == 0.5 and f(1) == 1.0 and f(2) == 1.0 and abs(f(10)) < 1e-12
    assert lr_lambda("linear", 0, 10)(5) == 0.5
    assert lr_lambda("constant", 5, 10)(0) == 1.0
    from facerig.errors import InvalidInput

    with pytest.raises(InvalidInput):
        from_dict(TrainConfig, {"max_steps": "10"})
    with pytest.raises(InvalidInput):
        from_dict(TrainConfig, {"nonsense": 1})
    with pytest.raises(InvalidInput):
        TrainConfig(mixed_precision="fp8")
    c = from_dict(TrainConfig, {"adam_betas": [0.9, 0.99], "ema_decay": None, "lr": 1})
    assert c.adam_betas == (0.9, 0.99) and c.lr == 1.0
