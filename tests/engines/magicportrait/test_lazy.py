"""facerig.engines.magicportrait stays light: torch/diffusers load only when a name is used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_package_imports_without_diffusers_and_names_resolve():
    out = _run("import sys, facerig.engines.magicportrait as m\n"
               "print('diffusers' in sys.modules)\n"
               "print(m.load_released.__module__, m.GuidanceEncoder.__module__, m.load_motion_adapter.__module__)")
    assert out.split() == ["False", "facerig.engines.magicportrait.model", "facerig.engines.magicportrait.guidance",
                           "facerig.engines.magicportrait.checkpoints"]
