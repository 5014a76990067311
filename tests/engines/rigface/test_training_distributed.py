"""RigFace training under torchrun: 2 CPU processes over gloo (DDP). Both UNets train with the
identity UNet's dead tail frozen (DDP refuses parameters that never get a gradient), and both
processes end with identical weights that differ from the start."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def test_two_cpu_processes_train_rigface_in_sync(run_two_processes) -> None:
    w = run_two_processes(HERE / "rigface_dist_worker.py")
    assert [x["rank"] for x in w] == [0, 1] and all(x["world"] == 2 for x in w)
    assert w[0]["end"] == w[1]["end"]
    for part in ("unet_id", "unet_denoise", "au_aug_mlp"):
        assert w[0]["end"][part] != w[0]["start"][part], part
