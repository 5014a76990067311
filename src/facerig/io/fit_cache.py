"""A cache of fitted source params, keyed by the photo's content, so repeated edits skip the fit.

Key: sha256 of the image file's bytes (or of the array's pixels) + the face model's name and size +
the face selector + :data:`FIT_VERSION` + a digest of the detector's and fit's source code (so a
changed fit never serves stale params). The value is the
params JSON (``FaceParams.to_json_dict`` with the albedo and ``meta``: the detections the warp engine
reuses), one file per key in :func:`cache_dir` (``$FACERIG_CACHE/fits``, default
``~/.cache/facerig/fits``, or ``$XDG_CACHE_HOME/facerig/fits``). Unreadable or stale entries are
ignored and overwritten; the CLI's ``--no-cache`` skips the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: bump when the detector / fit changes what it returns for the same photo
FIT_VERSION = "1"

__all__ = ["FIT_VERSION", "cache_dir", "fit_key", "load_fit", "store_fit"]


def cache_dir() -> Path:
    """Folder of the cached fits (created on first store)."""
    root = os.environ.get("FACERIG_CACHE")
    if root:
        return Path(root).expanduser() / "fits"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "facerig" / "fits"


def content_digest(image: Any) -> str:
    """sha256 of a file's bytes, or of an array's shape, dtype and pixels."""
    h = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        import numpy as np

        a = np.ascontiguousarray(image)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """sha256 of the detector's and the fit's source files (facerig/detect, facerig/fit): a change
    of the code that produces a fit invalidates the cached fits without a manual version bump."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for sub in ("detect", "fit"):
            for f in sorted((root / sub).glob("*.py")):
                h.update(f.name.encode())
                h.update(f.read_bytes())
        _CODE_DIGEST = h.hexdigest()[:16]
    return _CODE_DIGEST


def fit_key(image: Any, model: Any, face: Any) -> str:
    """The cache key of fitting ``image`` (a path or an array) with ``model`` selecting ``face``:
    the content's sha256, the model (name and sizes), the face selector, :data:`FIT_VERSION` and
    :func:`code_digest`."""
    digest = content_digest(image)
    model_id = f"{getattr(model, 'name', model)}:{getattr(model, 'n_identity', '')}:{getattr(model, 'n_expression', '')}"
    raw = json.dumps([digest, model_id, str(face), FIT_VERSION, code_digest()])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def load_fit(key: str) -> Any | None:
    """The cached FaceParams of ``key``, or None (absent or unreadable)."""
    from facerig.types import FaceParams

    path = cache_dir() / f"{key}.json"
    if not path.is_file():
        return None
    try:
        params = FaceParams.from_json(path.read_text())
    except Exception as e:  # a truncated / old entry: re-fit and overwrite it
        log.info("ignoring the unreadable cached fit %s: %s", path, e)
        return None
    log.debug("cached fit %s", path)
    return params


def store_fit(key: str, params: Any) -> Path | None:
    """Write ``params`` under ``key`` (atomically); None when the cache folder is not writable."""
    d = cache_dir()
    path = d / f"{key}.json"
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(params.to_json(include_albedo=True))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError) as e:
        log.warning("could not cache the fit in %s: %s", d, e)
        return None
    return path
