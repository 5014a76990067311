"""Adapter: facerig :class:`~facerig.types.RenderBuffers` -> DiffusionRig's 9 conditioning channels.

DiffusionRig concatenates, after the 3 channels of the noisy image, DECA's float buffers in this
order and in their raw ranges (no clamping, no rescaling; they were pickled as float tensors):

====  ==================  ========================================================
ch    buffer              range
====  ==================  ========================================================
0-2   lambertian render   ``albedo * shading`` (>= 0, may exceed 1), background 0
3-5   normal              world-frame unit normals in [-1, 1], background 0
6-8   albedo              [0, 1], background 0
====  ==================  ========================================================

These are exactly facerig's ``render``, ``normal`` and ``albedo`` buffers (docs/conventions.md),
rendered at the model's ``image_size`` in the crop the image was aligned to. The adapter refuses
buffers made with another face model than the one the weights were trained on (the UNet config's
``face_model``: a full fingerprint such as ``"builtin-0123abcd45"`` must match exactly; a bare model
name such as ``"flame"``, as recorded for the released weights, matches any variant of that model).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from facerig.errors import IncompatibleModel, InvalidInput
from facerig.types import RenderBuffers

__all__ = ["BUFFER_ORDER", "check_face_model", "face_model_id", "model_buffers"]

#: RenderBuffers fields, in DiffusionRig's channel order
BUFFER_ORDER = ("render", "normal", "albedo")


def face_model_id(face_model: Any) -> str:
    """A face model (anything with ``fingerprint()``) or an id string -> the id string."""
    if isinstance(face_model, str):
        return face_model
    fp = getattr(face_model, "fingerprint", None)
    if callable(fp):
        return str(fp())
    raise InvalidInput("face_model", "a FaceModel or its fingerprint string", type(face_model).__name__)


def check_face_model(trained_with: str | None, given: Any) -> None:
    """Raise :class:`~facerig.errors.IncompatibleModel` when ``given`` (a FaceModel or id) is not the
    face model ``trained_with`` (a config's ``face_model``); warn when ``trained_with`` is unknown."""
    gid = face_model_id(given)
    if trained_with is None:
        warnings.warn(
            "the DiffusionRig weights do not record which face model they were trained with; "
            f"cannot check buffers of {gid!r}",
            stacklevel=3,
        )
        return
    if "-" in trained_with:
        ok = gid == trained_with
    else:
        ok = gid.split("-")[0] == trained_with
    if not ok:
        raise IncompatibleModel(
            f"these DiffusionRig weights were trained on buffers of face model {trained_with!r}; "
            f"got buffers of {gid!r} (render them with that face model, or train/personalize weights "
            "for this one)"
        )


def model_buffers(
    buffers: RenderBuffers,
    face_model: Any,
    config: Any,
) -> torch.Tensor:
    """``buffers`` rendered with ``face_model`` -> (B, 9, H, W) float tensor for a UNet whose config
    (a :class:`~.model.DiffusionRigUNet` config or the model itself) is ``config``."""
    cfg = getattr(config, "config", config)
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    check_face_model(get("face_model"), face_model)
    if buffers.space != "crop":
        raise InvalidInput("buffers.space", "'crop' (render in the aligned crop)", buffers.space)
    size = int(get("image_size", 256))
    h, w = buffers.render.shape[-2:]
    if (h, w) != (size, size):
        raise InvalidInput("buffers", f"{size}x{size} buffers (render_buffers(..., size={size}))", f"{h}x{w}")
    out = torch.cat([getattr(buffers, name).float() for name in BUFFER_ORDER], dim=1)
    n_expected = int(get("in_channels", 12)) - 3
    if out.shape[1] != n_expected:
        raise InvalidInput("config.in_channels", f"3 + {out.shape[1]}", n_expected + 3)
    return out
