"""Worker for test_trainer_distributed.py: trains a tiny deterministic model with the Trainer
(launched with torchrun, 2 CPU processes over gloo) and writes what each process saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer


class Regression(Dataset):
    def __init__(self, n=32):
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randn(n, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
        self.seen: list[list[float]] = []

    def forward(self, batch, generator=None):
        self.seen.append(batch["x"][:, 0].tolist())
        return ((self.body(batch["x"]) - batch["y"]) ** 2).mean()


def config(batch_size: int) -> TrainConfig:
    return TrainConfig(
        max_steps=3,
        batch_size=batch_size,
        grad_accum=2,
        lr=0.05,
        grad_clip=10.0,
        save_every=2,
        log_every=1,
        seed=1,
    )


def main(out: Path) -> None:
    tr = Trainer(Net(), Regression(), config(batch_size=2), out)
    model = tr.run()
    grads_seen = {n: p.grad is None for n, p in model.named_parameters()}
    rec = {
        "rank": tr.rank,
        "world": tr.world,
        "distributed_type": str(tr.acc.distributed_type),
        "backend": str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else None,
        "seen": model.seen,
        "params": {n: p.detach().flatten().tolist() for n, p in model.named_parameters()},
        "grads_cleared": all(grads_seen.values()),
    }
    (out / f"worker_{tr.rank}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
