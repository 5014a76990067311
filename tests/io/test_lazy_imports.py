"""MediaPipe's drawing helpers (which import matplotlib.pyplot) load only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_mediapipe_import_skips_matplotlib_until_drawing_is_used():
    code = (f"import sys; sys.path.insert(0, {SRC!r})\n"
            "from facerig.io.lazy_imports import install; install()\n"
            "import mediapipe as mp\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported eagerly'\n"
            "mp.solutions.selfie_segmentation.SelfieSegmentation\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "mp.solutions.drawing_utils.DrawingSpec\n"
            "assert 'matplotlib.pyplot' in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]


def test_cli_help_stays_torch_free():
    code = f"import sys; sys.path.insert(0, {SRC!r})\nimport facerig, facerig.cli\nassert 'torch' not in sys.modules\n"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
