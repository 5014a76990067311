"""Strict state-dict key checks for released checkpoints loaded into facerig's own modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from facerig.errors import InvalidInput

__all__ = ["check_state_keys"]

#: BatchNorm counters are absent from checkpoints written by old torch versions; nothing reads them in eval.
OPTIONAL_SUFFIX = "num_batches_tracked"


def check_state_keys(model: nn.Module, sd: Mapping[str, Any], name: str, expected: str) -> None:
    """Strict: every key of ``model`` (BN counters optional), no extra key, equal shapes. Raises
    :class:`InvalidInput` (``name``, ``expected``) naming the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in sd if k not in own]
    bad = [(k, tuple(getattr(v, "shape", ())), tuple(own[k].shape)) for k, v in sd.items()
           if k in own and (not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape))]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {missing[:6]}{'...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
        if bad:
            parts.append(f"shape mismatches (key, file, expected): {bad[:4]}")
        raise InvalidInput(name, expected, "; ".join(parts))
