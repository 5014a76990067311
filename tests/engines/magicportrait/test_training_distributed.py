"""MagicPortrait training under torchrun: 2 CPU processes over gloo (DDP). Stage 1 trains the
reference UNet, the denoiser and the guidance encoders with their dead parts frozen (DDP refuses
parameters that never get a gradient); stage 2 trains the motion modules only. Both processes end
each stage with identical weights that differ from the start where that stage trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_two_cpu_processes_train_both_stages_in_sync(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "mp_dist_worker.py"), str(tmp_path / "dist")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    w = [json.loads((tmp_path / "dist" / f"worker_{i}.json").read_text()) for i in range(2)]
    assert [x["rank"] for x in w] == [0, 1] and all(x["world"] == 2 for x in w)
    for stage in ("stage1", "stage2"):
        assert w[0][stage]["end"] == w[1][stage]["end"], stage
    s1, s2 = w[0]["stage1"], w[0]["stage2"]
    for part in ("reference_unet", "denoiser", "guidance_encoders"):
        assert s1["end"][part] != s1["start"][part], part
    assert s2["end"]["denoiser"] != s2["start"]["denoiser"]          # its motion modules
    for part in ("reference_unet", "guidance_encoders"):              # frozen in stage 2
        assert s2["end"][part] == s2["start"][part], part
