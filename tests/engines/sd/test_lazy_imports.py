"""The SD substrate and RigFace packages stay light: diffusers loads only when a name is used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_packages_import_without_diffusers():
    out = _run("import sys, facerig.engines, facerig.engines.sd, facerig.engines.rigface\n"
               "print('diffusers' in sys.modules, 'transformers' in sys.modules)")
    assert out.split() == ["False", "False"]


def test_contract_names_resolve_lazily():
    out = _run("import facerig.engines.rigface as r, facerig.engines.sd as s\n"
               "print(r.load_released_unets.__module__, r.RigFacePipeline.__module__, r.RigFaceEngine.__module__,"
               " s.load_sd_base.__module__, s.make_scheduler.__module__)")
    assert out.split() == ["facerig.engines.rigface.model", "facerig.engines.rigface.pipeline",
                           "facerig.engines.rigface.engine", "facerig.engines.sd.base", "facerig.engines.sd.schedulers"]
