"""CLI tests never write the user's fit cache (``facerig edit`` caches fits by default)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _cli_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fit-cache")


@pytest.fixture(autouse=True)
def _private_fit_cache(_cli_cache_dir, monkeypatch):
    monkeypatch.setenv("FACERIG_CACHE", str(_cli_cache_dir))


@pytest.fixture
def run_cli(capsys):
    """run_cli(args) -> (exit code, stdout, stderr) of ``facerig ARGS`` in this process."""
    from facerig.cli import main

    def run(args):
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run
