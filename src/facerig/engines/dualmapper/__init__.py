"""The text-guided dual-mapper expression editor (METHODS.md, "Dual Mappers"; docs/dualmapper.md):
mappers that predict appearance-latent and expression deltas of any :class:`RigGenerator`.

Importing this package is light; the mapper, objectives and trainer import diffusers/torch pieces on
first use (``from facerig.engines.dualmapper.mapper import DualMapper`` etc., or the names below).
"""

from __future__ import annotations

from typing import Any

from facerig.engines.dualmapper.generator import RigGenerator, check_generator

_LAZY = {
    "DualMapper": "mapper", "compose": "mapper",
    "subspace_target": "subspace", "subspace_coefficients": "subspace", "DEFAULT_PROMPTS": "subspace",
    "EXPRESSION_TARGETS": "subspace",
    "HFClipEncoder": "objective", "ClipObjective": "objective", "IdentityObjective": "objective",
    "OfflineExpressionObjective": "objective", "DeltaPenalty": "objective", "OFFLINE_ESTIMATOR": "objective",
    "expression_target": "objective",
    "train_mapper": "training", "edit_with_mappers": "training", "mapper_for": "training",
    "build_generator": "adapters", "GENERATORS": "adapters",
    "DualMapperEngine": "engine", "load_mappers": "engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"facerig.engines.dualmapper.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'facerig.engines.dualmapper' has no attribute {name!r}")


__all__ = ["RigGenerator", "check_generator", *_LAZY]
