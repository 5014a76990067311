"""Where facerig finds files: the package's own assets, the shared folder, user paths."""

from __future__ import annotations

import os
from pathlib import Path

from facerig.errors import AssetMissing

PACKAGE_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def shared_dir() -> Path | None:
    """The shared development folder (``FACERIG_SHARED``, default ``../shared`` beside the checkout)."""
    env = os.environ.get("FACERIG_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    # src/facerig/io/assets.py -> repo root is parents[3]; shared sits beside the checkout
    candidates += [here.parents[3].parent / "shared", Path.cwd().parent / "shared"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_path(*parts: str) -> Path | None:
    d = shared_dir()
    if d is None:
        return None
    p = d.joinpath(*parts)
    return p if p.exists() else None


def package_asset(name: str) -> Path:
    p = PACKAGE_ASSETS / name
    if not p.exists():
        raise AssetMissing(f"packaged asset {name}", str(PACKAGE_ASSETS), "reinstall facerig")
    return p


def user_cache_dir() -> Path:
    base = os.environ.get("FACERIG_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "facerig"
    )
    return Path(base)
