"""Load the DiffusionRig authors' released checkpoints (``model_*.pt``) into facerig's models.

A released checkpoint is a plain ``state_dict`` of the authors' top-level module, which holds the
denoiser under ``denoisingUNet.`` and the ResNet-18 global encoder under ``encoder.``. Inside each
prefix, facerig's :class:`~.model.DiffusionRigUNet` and :class:`~.model.GlobalEncoder` use the
same parameter names, so the key mapping is exactly a prefix split (docs/diffusionrig.md)::

    denoisingUNet.<name>  ->  DiffusionRigUNet.<name>     (590 tensors at the paper config)
    encoder.<name>        ->  GlobalEncoder.<name>        (122 tensors, BN buffers included)

Loading is strict: every key of the file must be used, every parameter/buffer of the model must be
present with the same shape, otherwise :class:`CheckpointMismatch` lists the offending keys. Files
are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from facerig.errors import CheckpointMismatch, InvalidInput

from .model import PAPER_UNET_CONFIG, DiffusionRigUNet, GlobalEncoder

__all__ = [
    "CheckpointMismatch",
    "OFFICIAL_FACE_MODEL",
    "PREFIXES",
    "check_state_dict",
    "load_official_checkpoint",
    "official_state_dict",
    "split_official_state_dict",
]

#: prefix in the released file -> facerig component
PREFIXES = {"denoisingUNet.": "unet", "encoder.": "encoder"}
#: the released weights were trained on DECA (FLAME 2020) buffers
OFFICIAL_FACE_MODEL = "flame"


def check_state_dict(
    state: Mapping[str, torch.Tensor], model: torch.nn.Module, source: str = "state_dict", prefix: str = ""
) -> None:
    """Raise :class:`CheckpointMismatch` unless ``state`` has exactly ``model``'s keys and shapes
    (``prefix`` is prepended to the model's names in the error)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [prefix + k for k in expected if k not in state]
    unexpected = [prefix + k for k in state if k not in expected]
    mismatched = {
        prefix + k: (expected[k], tuple(v.shape))
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    }
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(source, missing, unexpected, mismatched)


def split_official_state_dict(
    state: Mapping[str, Any], source: str = "state_dict"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The released flat dict -> (unet state, encoder state). A ``module.`` prefix (a DDP-wrapped
    save) is removed first; keys under no known prefix raise :class:`CheckpointMismatch`."""
    if not isinstance(state, Mapping):
        raise InvalidInput(source, "a state dict (mapping of names to tensors)", type(state).__name__)
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "encoder": {}}
    stray = []
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        for pre, part in PREFIXES.items():
            if k.startswith(pre):
                if not isinstance(value, torch.Tensor):
                    raise InvalidInput(f"{source}[{key}]", "a tensor", type(value).__name__)
                parts[part][k[len(pre) :]] = value
                break
        else:
            stray.append(key)
    if stray:
        raise CheckpointMismatch(source, [], stray, {})
    return parts["unet"], parts["encoder"]


def official_state_dict(unet: DiffusionRigUNet, encoder: GlobalEncoder) -> dict[str, torch.Tensor]:
    """facerig models -> a state dict in the released layout (inverse of the loader)."""
    out = {f"denoisingUNet.{k}": v for k, v in unet.state_dict().items()}
    out.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    return out


def _build(cls, config: Mapping[str, Any]):
    with torch.device("meta"):
        return cls(**config)


def load_official_checkpoint(
    path: str | os.PathLike | Mapping[str, Any],
    *,
    unet_config: Mapping[str, Any] | None = None,
    latent_dim: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[DiffusionRigUNet, GlobalEncoder]:
    """Read a released ``model_*.pt`` (or an already loaded state dict) -> ``(unet, encoder)``.

    ``unet_config`` overrides :data:`~.model.PAPER_UNET_CONFIG` (the released 256 px model) for
    checkpoints trained with other flags; ``face_model`` defaults to ``"flame"`` (DECA buffers).
    Both models are returned in eval mode. Raises :class:`CheckpointMismatch` naming the keys when
    the file does not match the configured layout, :class:`~facerig.errors.InvalidInput` when the
    file is not a state dict.
    """
    if isinstance(path, Mapping):
        state, source = path, "state_dict"
    else:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise InvalidInput("checkpoint", "an existing DiffusionRig model_*.pt file", source)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt file / pickle with code objects
            raise InvalidInput(
                "checkpoint", "a torch state dict readable with weights_only=True", f"{source}: {e}"
            ) from e
    unet_sd, enc_sd = split_official_state_dict(state, source)
    cfg = dict(PAPER_UNET_CONFIG)
    cfg["face_model"] = OFFICIAL_FACE_MODEL
    cfg.update(unet_config or {})
    if int(cfg.get("norm_num_groups", 32)) != 32:
        # the group count is not in the file (norm weights are per channel): refuse instead of
        # silently building another network than the authors' code, which hard-codes 32 groups
        raise InvalidInput(
            "unet_config.norm_num_groups", "32 (the released ADM code's group norms)", cfg["norm_num_groups"]
        )
    if latent_dim is None:
        latent_dim = int(cfg["latent_dim"])
    unet = _build(DiffusionRigUNet, cfg)
    encoder = _build(GlobalEncoder, {"latent_dim": latent_dim})
    missing, unexpected, mismatched = [], [], {}
    for pre, model, sd in (("denoisingUNet.", unet, unet_sd), ("encoder.", encoder, enc_sd)):
        try:
            check_state_dict(sd, model, source, prefix=pre)
        except CheckpointMismatch as e:
            missing += e.missing
            unexpected += e.unexpected
            mismatched.update(e.mismatched)
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(source, missing, unexpected, mismatched)

    def cast(sd):
        return {
            k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
            for k, v in sd.items()
        }

    unet.load_state_dict(cast(unet_sd), strict=True, assign=True)
    encoder.load_state_dict(cast(enc_sd), strict=True, assign=True)
    return unet.eval(), encoder.eval()
