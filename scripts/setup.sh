#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with the pinned version set.
# Uses pip (torch 2.13.0 CPU is taken from the local wheel cache / PyPI, never a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.facerig-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -e ".[dev,text,identity,diffusion,ui]"
  touch "$stamp"
fi
