"""Make MediaPipe's drawing helpers load lazily.

``import mediapipe`` imports every ``mediapipe.solutions`` module, and two of them
(``drawing_utils``, ``drawing_styles``) import matplotlib.pyplot: about 0.8 s of a cached
``facerig edit`` that never draws with them. :func:`install` registers a meta-path finder that
gives those two modules :class:`importlib.util.LazyLoader`, so they execute only when one of their
attributes is used (MediaPipe itself does not use them when importing). Idempotent; harmless when
MediaPipe is absent or already imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Any

LAZY_MODULES = frozenset({"mediapipe.python.solutions.drawing_utils", "mediapipe.python.solutions.drawing_styles"})


class _LazyFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in LAZY_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


def install() -> None:
    if any(isinstance(f, _LazyFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _LazyFinder())
