"""Worker for test_training_distributed.py: trains the tiny MagicPortrait model of
test_training.py, stage 1 then stage 2, with the Trainer under torchrun (2 CPU processes over gloo,
DDP) and writes each process's weight digests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from test_training import Clips, _model, _text

from facerig.engines.magicportrait.training import MagicPortraitTrainModule
from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer, state_digest

PARTS = ("reference_unet", "denoiser", "guidance_encoders")


def digest(module: torch.nn.Module) -> dict[str, str]:
    return {part: state_digest(getattr(module, part)) for part in PARTS}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rec: dict = {}
    for stage, frames in ((1, 1), (2, 3)):
        module = MagicPortraitTrainModule(_model(stage), _text(), stage=stage)
        start = digest(module)
        cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, log_every=1, save_every=1000, logger="csv",
                          grad_clip=1.0, seed=1)
        tr = Trainer(module, Clips(4, frames, seed=stage), cfg, out / f"stage{stage}")
        model = tr.run()
        rec.update(rank=tr.rank, world=tr.world)
        rec[f"stage{stage}"] = {"start": start, "end": digest(model)}
    (out / f"worker_{rec['rank']}.json").write_text(json.dumps(rec))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
