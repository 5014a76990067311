"""Loading user-supplied backbone weights (LPIPS, Inception for FID, I3D, ...) safely.

facerig ships no third-party metric weights. Users point at files they have; they are read with
safetensors or ``torch.load(weights_only=True)`` (no arbitrary unpickling), and key layouts are
checked strictly against the network that consumes them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from facerig.errors import AssetMissing, InvalidInput

__all__ = ["load_state_dict", "strip_prefix", "check_keys", "resolve_weights"]


def resolve_weights(path: str | os.PathLike[str] | None, what: str, env: str | None = None) -> Path:
    """A weights path given directly or through an environment variable, or a clear AssetMissing."""
    p = path if path is not None else (os.environ.get(env) if env else None)
    if p is None:
        raise AssetMissing(what, f"argument or ${env}" if env else "argument",
                           f"download it yourself and pass its path{f' or set {env}' if env else ''}")
    pp = Path(p)
    if not pp.is_file():
        raise AssetMissing(what, str(pp), "check the path")
    return pp


def load_state_dict(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a .safetensors / .pth / .pt file (weights only) or a mapping.
    A checkpoint wrapping the weights under ``state_dict`` / ``model`` is unwrapped."""
    if isinstance(source, Mapping):
        sd = dict(source)
    else:
        p = Path(source)
        if not p.is_file():
            raise AssetMissing(f"weights file {p.name}", str(p), "check the path")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            try:
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001
                raise InvalidInput(str(p), "a weights-only torch checkpoint", f"{type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "net"):
        if key in sd and isinstance(sd[key], Mapping):
            sd = dict(sd[key])
    out = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise InvalidInput("weights", "a state dict of tensors", list(sd)[:5])
    return out


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def check_keys(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], what: str,
               ignore_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Keep the keys the module has; fail with a readable message on missing keys or shape mismatches."""
    own = module.state_dict()
    used = {k: v for k, v in sd.items() if k in own}
    missing = [k for k in own if k not in sd]
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in used.items() if v.shape != own[k].shape]
    extra = [k for k in sd if k not in own and not k.startswith(ignore_prefixes)]
    if missing or bad:
        raise InvalidInput(
            what, "weights in the documented key layout",
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}; shape mismatches {bad[:3]}; "
            f"unexpected {extra[:4]}",
        )
    return used
