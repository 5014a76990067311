"""Engines: the registry of the image generators behind ``facerig edit`` / ``facerig reenact``.

``get_engine(name, **options)`` returns a ready :class:`~facerig.engines.base.Engine`;
``available_engines()`` lists the registered names with whether they need weights.
The default engine is ``warp`` (training-free, embedded). Engines are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from facerig.errors import InvalidInput

DEFAULT_ENGINE = "warp"

# name -> "module:ClassName" (imported on first use, so `import facerig.engines` stays light)
_REGISTRY: dict[str, str | type] = {
    "warp": "facerig.engines.warp.engine:WarpEngine",
    "diffusionrig": "facerig.engines.diffusionrig.engine:DiffusionRigEngine",
    "rigface": "facerig.engines.rigface.engine:RigFaceEngine",
    "magicportrait": "facerig.engines.magicportrait.engine:MagicPortraitEngine",
    "instaface": "facerig.engines.instaface.engine:InstaFaceEngine",
    "dualmapper": "facerig.engines.dualmapper.engine:DualMapperEngine",
}


def register_engine(name: str, target: str | type) -> None:
    """Register an engine class (or a "module:Class" path) under ``name``."""
    if not name or not name.replace("_", "").isalnum():
        raise InvalidInput("name", "an identifier-like engine name", name)
    _REGISTRY[name] = target


def _resolve(name: str) -> type:
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        raise InvalidInput("engine", f"one of {', '.join(sorted(_REGISTRY))}", name, hint=hint)
    target = _REGISTRY[key]
    if isinstance(target, str):
        mod, cls = target.split(":")
        return getattr(importlib.import_module(mod), cls)
    return target


def get_engine(name: str = DEFAULT_ENGINE, **options: Any) -> Any:
    """An engine instance by name (``options`` go to its constructor, e.g. ``weights=``)."""
    return _resolve(name)(**options)


def available_engines() -> dict[str, dict[str, Any]]:
    """``{name: {"requires_weights": bool, "description": str}}`` for every registered engine."""
    out = {}
    for n in sorted(_REGISTRY):
        try:
            cls: Any = _resolve(n)  # an engine class: requires_weights / description are class attributes
            out[n] = {"requires_weights": bool(cls.requires_weights), "description": cls.description}
        except ImportError as e:  # an optional engine whose dependencies are missing
            out[n] = {"requires_weights": None, "description": f"unavailable: {e}"}
    return out


__all__ = ["DEFAULT_ENGINE", "available_engines", "get_engine", "register_engine"]
