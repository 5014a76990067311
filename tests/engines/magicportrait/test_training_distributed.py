"""MagicPortrait training under torchrun: 2 CPU processes over gloo (DDP). Stage 1 trains the
reference UNet, the denoiser and the guidance encoders with their dead parts frozen (DDP refuses
parameters that never get a gradient); stage 2 trains the motion modules only. Both processes end
each stage with identical weights that differ from the start where that stage trains."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def test_two_cpu_processes_train_both_stages_in_sync(run_two_processes) -> None:
    w = run_two_processes(HERE / "mp_dist_worker.py")
    assert [x["rank"] for x in w] == [0, 1] and all(x["world"] == 2 for x in w)
    for stage in ("stage1", "stage2"):
        assert w[0][stage]["end"] == w[1][stage]["end"], stage
    s1, s2 = w[0]["stage1"], w[0]["stage2"]
    for part in ("reference_unet", "denoiser", "guidance_encoders"):
        assert s1["end"][part] != s1["start"][part], part
    assert s2["end"]["denoiser"] != s2["start"]["denoiser"]          # its motion modules
    for part in ("reference_unet", "guidance_encoders"):              # frozen in stage 2
        assert s2["end"][part] == s2["start"][part], part
