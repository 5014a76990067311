"""DECA's coarse encoder (``E_flame``) for re-inference metrics, loaded from the user's ``deca_model.tar``.

facerig does not ship DECA weights. This module rebuilds the network that consumes the released
checkpoint's ``E_flame`` entry so the state dict loads with *strict* key and shape checks. Facts
used (from the public yfeng95/DECA code; re-implemented here, not copied):

* ``deca_model.tar`` is a ``torch.save`` dict with entries ``E_flame``, ``E_detail``, ``D_detail``
  (state dicts); only ``E_flame`` is needed for the coarse codes.
* ``E_flame`` = ``encoder`` (a ResNet-50 feature extractor with torchvision's module names:
  ``conv1``, ``bn1``, ``layer1..4`` of Bottleneck blocks ``conv1/bn1/conv2/bn2/conv3/bn3`` and
  ``downsample.0`` (1x1 conv) / ``downsample.1`` (BN) on the first block of each stage; stride on the
  3x3 ``conv2``; no ``fc``; 7x7 average pool -> 2048) followed by ``layers`` =
  ``Linear(2048, 1024)`` (``layers.0``), ReLU, ``Linear(1024, 236)`` (``layers.2``).
* The 236 outputs split in this order: shape 100 | tex 50 | exp 50 | pose 6 | cam 3 | light 27
  (light reshaped to (9, 3)); pose = global rotation (3, axis-angle) + jaw (3, axis-angle, DECA's
  default ``jaw_type='aa'``).
* Input: a (B, 3, 224, 224) RGB crop in [0, 1] (no mean/std normalisation), cropped around the 68
  landmarks as :func:`facerig.detect.crops.deca_crop` reproduces, sampled bilinearly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facerig.errors import AssetMissing, InvalidInput
from facerig.io.state_keys import check_state_keys

__all__ = [
    "DECA_PARAM_SPLIT",
    "DECA_N_PARAM",
    "DecaEncoder",
    "DecaEstimator",
    "deca_crop_image",
    "deca_params",
    "load_deca_encoder",
    "split_deca_code",
]

DECA_PARAM_SPLIT: tuple[tuple[str, int], ...] = (
    ("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27),
)
DECA_N_PARAM = sum(n for _, n in DECA_PARAM_SPLIT)  # 236
_RESNET50_BLOCKS = (3, 4, 6, 3)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + skip)


class _ResNet50Features(nn.Module):
    """ResNet-50 trunk (torchvision names, no ``fc``) -> (B, 2048) after the global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), _RESNET50_BLOCKS, strict=True)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
            mods = [_Bottleneck(inplanes, planes, stride, down)]
            inplanes = planes * 4
            mods += [_Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*mods))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean((2, 3))  # DECA: AvgPool2d(7) on the 7x7 map of a 224 input


class DecaEncoder(nn.Module):
    """DECA's ``E_flame`` (ResNet-50 + 2-layer MLP -> 236 codes) with the released state-dict names."""

    estimator: str

    def __init__(self) -> None:
        super().__init__()
        self.estimator = "DECA E_flame"
        self.encoder = _ResNet50Features()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, DECA_N_PARAM))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) in [0, 1] -> (B, 236) flat code."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, 224, 224):
            raise InvalidInput("images", "a (B, 3, 224, 224) DECA crop batch in [0, 1]", tuple(images.shape))
        return self.layers(self.encoder(images))


def split_deca_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 236) -> {shape (B,100), tex (B,50), exp (B,50), pose (B,6), cam (B,3), light (B,9,3)}."""
    if code.ndim != 2 or code.shape[1] != DECA_N_PARAM:
        raise InvalidInput("code", f"(B, {DECA_N_PARAM}) DECA codes", tuple(code.shape))
    out, start = {}, 0
    for key, n in DECA_PARAM_SPLIT:
        out[key] = code[:, start:start + n]
        start += n
    out["light"] = out["light"].reshape(-1, 9, 3)
    return out


def _read_checkpoint(path: Path, allow_pickle: bool) -> Any:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        if not allow_pickle:
            raise InvalidInput(
                str(path), "a DECA checkpoint readable with torch.load(weights_only=True)",
                f"{type(e).__name__}: {str(e)[:200]}",
                hint="if you trust the file, pass allow_pickle=True to unpickle it fully",
            ) from None
    return torch.load(str(path), map_location="cpu", weights_only=False)  # user opted in


def _encoder_state(ckpt: Any) -> dict[str, torch.Tensor]:
    if not isinstance(ckpt, Mapping):
        raise InvalidInput("DECA checkpoint", "a dict with an 'E_flame' state dict", type(ckpt).__name__)
    sd = ckpt.get("E_flame", ckpt)
    if not isinstance(sd, Mapping):
        raise InvalidInput("DECA checkpoint['E_flame']", "a state dict", type(sd).__name__)
    if "E_flame" not in ckpt and not any(str(k).startswith("encoder.") for k in sd):
        raise InvalidInput("DECA checkpoint", "an 'E_flame' entry (or a bare E_flame state dict)",
                           sorted(map(str, ckpt))[:8])
    return {str(k): v for k, v in sd.items()}


def check_deca_keys(model: nn.Module, sd: Mapping[str, Any]) -> None:
    """Strict check: every key the encoder has (BN ``num_batches_tracked`` optional), no extra key,
    equal shapes. Raises :class:`InvalidInput` naming the offending keys."""
    check_state_keys(model, sd, "DECA E_flame weights", "the released deca_model.tar E_flame key layout")


def load_deca_encoder(source: str | os.PathLike[str] | Mapping[str, Any], *, allow_pickle: bool = False) -> DecaEncoder:
    """A :class:`DecaEncoder` in eval mode from DECA's ``deca_model.tar`` (or a bare ``E_flame``
    state dict, as a file or mapping). Read with ``torch.load(weights_only=True)``; ``allow_pickle``
    permits a full unpickle for files that need it (only for files you trust). Keys are checked
    strictly (:func:`check_deca_keys`)."""
    if isinstance(source, Mapping):
        ckpt: Any = source
    else:
        p = Path(source)
        if not p.is_file():
            raise AssetMissing("DECA weights (deca_model.tar)", str(p),
                               "download DECA's released model yourself and pass its path")
        ckpt = _read_checkpoint(p, allow_pickle)
    sd = _encoder_state(ckpt)
    model = DecaEncoder()
    check_deca_keys(model, sd)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=False)
    model.estimator = f"DECA E_flame ({Path(source).name if not isinstance(source, Mapping) else 'given state dict'})"
    return model.eval().requires_grad_(False)


def deca_params(images: Any, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """DECA codes of (B, 3, 224, 224) crops in [0, 1] (see :func:`deca_crop_image`): dict of
    shape (B,100), tex (B,50), exp (B,50), pose (B,6), cam (B,3), light (B,9,3)."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[None]
    x = x.float()
    with torch.no_grad():
        return split_deca_code(encoder(x))


def deca_crop_image(image: Any, landmarks: Any = None, *, detector: Any = None, size: int = 224,
                    scale: float = 1.25) -> np.ndarray:
    """DECA's test-time crop of one image: (size, size, 3) float32 in [0, 1]. ``landmarks`` (a
    FaceLandmarks, MediaPipe or iBUG-68 points) or the largest face of ``detector`` (MediaPipe by
    default); bilinear sampling as DECA's skimage warp. Raises NoFaceFound when no face is found."""
    from facerig.detect.crops import deca_crop, warp_to_crop
    from facerig.io.image import load_image

    img = load_image(image, min_side=8)
    if landmarks is None:
        if detector is None:
            from facerig.detect import FaceDetector

            detector = FaceDetector()
        landmarks = detector.detect_one(img)
    ct = deca_crop(landmarks, size=size, scale=scale, frame_size=img.shape[:2])
    crop = warp_to_crop(img, ct, interpolation="linear")
    return crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop.astype(np.float32)


class DecaEstimator:
    """``deca(image) -> {key: np.ndarray}`` (one face) or None when no face is found: the callable
    :func:`facerig.eval.edit_accuracy.deca_reinference_rmse` uses for a DECA weights path."""

    def __init__(self, encoder: nn.Module | str | os.PathLike[str], *, detector: Any = None,
                 allow_pickle: bool = False):
        self.encoder: nn.Module = (encoder if isinstance(encoder, nn.Module)
                                   else load_deca_encoder(encoder, allow_pickle=allow_pickle))
        self.detector = detector
        self.estimator = (getattr(self.encoder, "estimator", "DECA E_flame")
                          + " on DECA 224 crops of MediaPipe iBUG-68 landmarks")

    def __call__(self, image: Any) -> dict[str, np.ndarray] | None:
        from facerig.errors import NoFaceFound

        if self.detector is None:
            from facerig.detect import FaceDetector

            self.detector = FaceDetector()
        try:
            crop = deca_crop_image(image, detector=self.detector)
        except NoFaceFound:
            return None
        codes = deca_params(torch.from_numpy(crop).permute(2, 0, 1)[None], self.encoder)
        return {k: v[0].double().numpy() for k, v in codes.items()}
