"""Typed training configuration and named YAML recipes.

A recipe YAML has the sections ``engine`` (str), ``stage`` (int), ``model`` (engine-specific dict,
e.g. DiffusionRig's ``unet`` config + loss settings) and ``train`` (:class:`TrainConfig` fields).
Named recipes live in ``configs/<engine>/<name>.yaml`` (searched in ``$FACERIG_CONFIGS`` first,
then in the source checkout); :func:`load_recipe` also takes a path. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facerig.errors import InvalidInput

__all__ = ["Recipe", "TrainConfig", "from_dict", "load_recipe", "recipe_dirs"]

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class TrainConfig:
    """How to train (engine-independent). Batch sizes are per process; the effective batch is
    ``batch_size * grad_accum * num_processes``."""

    max_steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float | None = None
    ema_warmup: bool = True
    seed: int = 0
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0
    num_workers: int = 0
    logger: str = "auto"

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidInput("train.mixed_precision", f"one of {MIXED_PRECISION}", self.mixed_precision)
        if self.lr_schedule not in LR_SCHEDULES:
            raise InvalidInput("train.lr_schedule", f"one of {LR_SCHEDULES}", self.lr_schedule)
        if self.logger not in ("auto", "tensorboard", "csv"):
            raise InvalidInput("train.logger", "'auto', 'tensorboard' or 'csv'", self.logger)
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "save_every", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"train.{name}", "an integer >= 1", getattr(self, name))
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise InvalidInput("train.ema_decay", "a decay in (0, 1) or null", self.ema_decay)
        self.adam_betas = tuple(float(b) for b in self.adam_betas)  # type: ignore[assignment]


@dataclass
class Recipe:
    """A named training recipe: which engine and stage, its model settings, how to train."""

    name: str
    engine: str
    stage: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    notes: str = ""


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        return from_dict(typing.cast(type, tp), value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise InvalidInput(where, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(where, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(where, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InvalidInput(where, "a string", value)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise InvalidInput(where, f"a list of {len(args)} values", value)
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidInput(where, "a mapping", value)
        return dict(value)
    return value


def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a plain dict, type-checking fields; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(where, f"a mapping for {cls.__name__}", data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - names)
    if extra:
        raise InvalidInput(where, f"only the fields {sorted(names)}", f"unknown {extra}")
    kw = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kw)


def recipe_dirs() -> list[Path]:
    """Where named recipes are searched: ``$FACERIG_CONFIGS``, then ``configs/`` of the checkout."""
    out = []
    env = os.environ.get("FACERIG_CONFIGS")
    if env:
        out.append(Path(env))
    out.append(Path(__file__).resolve().parents[3] / "configs")
    return out


def load_recipe(name_or_path: str | os.PathLike, engine: str | None = None) -> Recipe:
    """A recipe from a YAML path, or by name (``"diffusionrig/paper_stage1"`` or, with ``engine``,
    ``"paper_stage1"``)."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        rel = Path(f"{name_or_path}.yaml") if engine is None else Path(engine) / f"{name_or_path}.yaml"
        found = [d / rel for d in recipe_dirs() if (d / rel).is_file()]
        if not found:
            avail = sorted(
                str(f.relative_to(d).with_suffix(""))
                for d in recipe_dirs()
                if d.is_dir()
                for f in d.rglob("*.yaml")
            )
            raise InvalidInput("recipe", f"a recipe YAML path or one of {avail}", str(name_or_path))
        p = found[0]
    if not p.is_file():
        raise InvalidInput("recipe", "an existing YAML file", str(p))
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise InvalidInput(str(p), "a YAML mapping", type(data).__name__)
    data.setdefault("name", p.stem)
    return from_dict(Recipe, data, where=p.name)
