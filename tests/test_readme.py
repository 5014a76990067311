"""README's Python example runs as written (it once used an undefined `fm`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = _python_blocks()
    assert blocks, "README has no ```python block"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(blocks[0], str(README), "exec"), ns)  # noqa: S102 - our own README
    assert (tmp_path / "smile.png").is_file()
    assert ns["result"].image.shape == ns["results"][0].image.shape
    assert len(ns["results"]) == 3
    assert np.asarray(ns["buffers"].render).size > 0
