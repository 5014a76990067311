"""RigFace training under torchrun: 2 CPU processes over gloo (DDP). Both UNets train with the
identity UNet's dead tail frozen (DDP refuses parameters that never get a gradient), and both
processes end with identical weights that differ from the start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_two_cpu_processes_train_rigface_in_sync(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "rigface_dist_worker.py"), str(tmp_path / "dist")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    w = [json.loads((tmp_path / "dist" / f"worker_{i}.json").read_text()) for i in range(2)]
    assert [x["rank"] for x in w] == [0, 1] and all(x["world"] == 2 for x in w)
    assert w[0]["end"] == w[1]["end"]
    for part in ("unet_id", "unet_denoise", "au_aug_mlp"):
        assert w[0]["end"][part] != w[0]["start"][part], part
