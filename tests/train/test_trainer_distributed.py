"""Trainer under torchrun: 2 CPU processes over gloo; both ran, saw different data, and ended with
identical parameters equal to one process training on the union of their batches (so gradients
were averaged across processes, also with gradient accumulation's skipped all-reduces)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def test_two_cpu_processes_sync_gradients(tmp_path, run_two_processes):
    w = run_two_processes(HERE / "trainer_dist_worker.py", timeout=240)
    assert [x["rank"] for x in w] == [0, 1]
    assert all(x["world"] == 2 and x["backend"] == "gloo" and "MULTI_CPU" in x["distributed_type"] for x in w)
    assert all(len(x["seen"]) == 3 * 2 for x in w)  # 3 steps x 2 micro-batches each
    s0 = {v for b in w[0]["seen"] for v in b}
    s1 = {v for b in w[1]["seen"] for v in b}
    assert not s0 & s1  # different data on each process
    assert w[0]["params"] == w[1]["params"]
    ck = tmp_path / "dist" / "checkpoints" / "step_0000003"
    assert (ck / "rank_0.pt").is_file() and (ck / "rank_1.pt").is_file()

    # one process, batch 4 = the union of both processes' batches of 2
    sys.path.insert(0, str(HERE))
    try:
        from trainer_dist_worker import Net, Regression, config

        from facerig.train.trainer import Trainer

        single = Trainer(Net(), Regression(), config(batch_size=4), tmp_path / "single").run()
    finally:
        sys.path.remove(str(HERE))
    for n, p in single.named_parameters():
        torch.testing.assert_close(
            p.detach().flatten(), torch.tensor(w[0]["params"][n]), rtol=1e-5, atol=1e-6
        )
    seen_single = {v for b in single.seen for v in b}
    assert seen_single == s0 | s1
