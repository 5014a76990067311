"""Fixtures of the equality tests against the authors' RigFace: the released-layout writer, the stock
diffusers reading of it, the tiny layout written once per session and the authors' reference outputs.

With pytest's importlib mode a test cannot import a sibling module by name, so the two helper modules
are loaded here by path (scripts/make_rigface_reference.py loads released_layout.py the same way).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[2] / "fixtures" / "rigface"


def _load(name: str) -> ModuleType:
    key = f"facerig_tests_rigface_authors_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def released_layout() -> ModuleType:
    """tests/engines/rigface/authors/released_layout.py (writer, configs, seeded inputs)."""
    pytest.importorskip("diffusers")
    return _load("released_layout")


@pytest.fixture(scope="session")
def stock_oracle() -> ModuleType:
    """tests/engines/rigface/authors/stock_oracle.py (the release read on stock diffusers)."""
    pytest.importorskip("diffusers")
    return _load("stock_oracle")


@pytest.fixture(scope="session")
def tiny_release(released_layout, tmp_path_factory) -> dict:
    """The tiny released layout (seed 0), written once: {"unet_id": dir, "unet_denoise": dir, "hashes"}."""
    return released_layout.write_released_layout(tmp_path_factory.mktemp("rigface_release_tiny"), "tiny", seed=0)


@pytest.fixture(scope="session")
def authors_tiny() -> tuple[dict, dict]:
    """(tensors, sidecar) of tests/fixtures/rigface/authors_tiny.safetensors."""
    from safetensors.torch import load_file

    path = FIXTURES / "authors_tiny.safetensors"
    return load_file(str(path)), json.loads(path.with_suffix(".json").read_text())
