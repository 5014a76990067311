"""Worker for test_training_distributed.py: trains tiny RigFace UNets with the Trainer under
torchrun (2 CPU processes over gloo, DDP) and writes each process's final weights digest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from facerig.engines.rigface.model import TINY_UNET_CONFIG, RigFaceUNets
from facerig.engines.rigface.training import RigFaceTrainModule
from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer, state_digest

DIM = 6


class LatentPairs(Dataset):
    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(n):
            src, render = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
            expr = torch.rand(DIM, generator=g)
            self.items.append({"source_latent": src, "background_latent": src * 0.5, "render_latent": render,
                               "target_latent": 0.5 * (src + render), "expression": expr})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def digest(module: torch.nn.Module) -> dict[str, str]:
    return {part: state_digest(getattr(module.unets, part)) for part in ("unet_id", "unet_denoise", "au_aug_mlp")}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    unets = RigFaceUNets.from_config(TINY_UNET_CONFIG, expression_kind="facerig", expression_dim=DIM, seed=0)
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(11))
    module = RigFaceTrainModule(unets.train(), text)
    start = digest(module)
    cfg = TrainConfig(max_steps=2, batch_size=4, lr=1e-3, log_every=1, save_every=1000, logger="csv",
                      grad_clip=1.0, seed=1)
    tr = Trainer(module, LatentPairs(), cfg, out)
    model = tr.run()
    rec = {"rank": tr.rank, "world": tr.world, "start": start, "end": digest(model)}
    (out / f"worker_{tr.rank}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
