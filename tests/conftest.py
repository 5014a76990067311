"""Shared test configuration: markers that skip heavy checks unless enabled, package photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facerig.io.assets import shared_dir


def pytest_collection_modifyitems(config, items):
    slow_on = os.environ.get("FACERIG_SLOW") == "1"
    gpu_on = os.environ.get("FACERIG_GPU") == "1"
    flame_on = bool(os.environ.get("FACERIG_FLAME"))
    have_shared = shared_dir() is not None
    for item in items:
        if "slow" in item.keywords and not slow_on:
            item.add_marker(pytest.mark.skip(reason="slow: set FACERIG_SLOW=1 to run"))
        if "gpu" in item.keywords:
            import torch

            if not gpu_on or not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason="gpu: set FACERIG_GPU=1 on a CUDA machine"))
        if "shared_data" in item.keywords and not have_shared:
            item.add_marker(pytest.mark.skip(reason="shared data folder absent (FACERIG_SHARED)"))
        if "flame" in item.keywords and not flame_on:
            item.add_marker(pytest.mark.skip(reason="real FLAME: set FACERIG_FLAME=/path/generic_model.pkl"))


def package_photo(name: str) -> np.ndarray:
    """Real photos shipped by installed packages (public domain)."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        import matplotlib
        from PIL import Image

        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return np.asarray(Image.open(p).convert("RGB"))
    raise KeyError(name)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return package_photo("astronaut")


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    return package_photo("grace_hopper")


@pytest.fixture(autouse=True)
def _restore_grad_mode():
    """Tests that switch autograd off for speed (``torch.set_grad_enabled(False)``) must not leak it
    into later tests (training tests then fail with "does not require grad")."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_grad_enabled(True)


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(owner, "name", counter=None, key="n")``: wrap ``owner.name`` (still called) so
    that each call adds 1 to ``counter[key]``; returns the counter (a new ``{key: 0}`` by default)."""

    def install(owner, name, counter=None, key="n"):
        counter = {key: 0} if counter is None else counter
        counter.setdefault(key, 0)
        real = getattr(owner, name)

        def wrapped(*a, **k):
            counter[key] += 1
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapped)
        return counter

    return install


@pytest.fixture
def run_two_processes(tmp_path):
    """Run a worker script under ``torch.distributed.run`` in 2 CPU processes (gloo) with the
    worker's folder on PYTHONPATH; returns the records ``worker_{rank}.json`` it wrote into its
    output folder (the script's one argument)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    def run(worker: Path, timeout: int = 400) -> list[dict]:
        out = tmp_path / "dist"
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=str(Path(worker).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(worker), str(out)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr[-3000:]
        return [json.loads((out / f"worker_{i}.json").read_text()) for i in range(2)]

    return run
