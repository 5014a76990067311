"""Deep3DFaceRecon's coefficient regressor (ResNet-50 -> 257 BFM coefficients), for RigFace's 64-d
expression vector.

facerig ships no weights. Two released layouts load, each with strict key and shape checks and
``torch.load(weights_only=True)`` (facts read from the public code; re-implemented here):

* ``"deep3d"`` -- Deep3DFaceRecon_pytorch's ``checkpoints/<name>/epoch_20.pth``: a dict whose
  ``net_recon`` entry is the state dict of its ``ReconNetWrapper``: ``backbone.*`` (a torchvision
  ResNet-50 without ``fc``: ``conv1``, ``bn1``, ``layer1..4`` of Bottleneck blocks, stride on the 3x3
  conv) and ``final_layers.0..6``: seven 1x1 convolutions 2048 -> 80 (identity), 64 (expression), 80
  (texture), 3 (angles), 27 (SH gamma), 2 (tx, ty), 1 (tz), concatenated to 257. Input: a 224x224
  RGB crop in [0, 1].
* ``"rigface"`` -- the file RigFace's ``utils/save_exp_coeffs.py`` loads
  (``third_party/d3dfr_res50_nofc.pth``; a flat state dict, keys optionally ``module.``-prefixed):
  the same backbone and ``fianl_layers.0..7`` (the release's own spelling) = the seven heads above
  plus a 4-channel pupil head (261 outputs; the pupil values are dropped). Input: a 256x256 RGB crop
  normalised with mean 0.5 / std 0.5 (i.e. [-1, 1]), cut by a least-squares 5-point similarity
  (eyes, nose tip, mouth corners; insightface order) onto ``MEAN_FACE_LM5P_256``. This is the
  regressor that produced the expression vectors RigFace's released weights were trained with.

The 257 coefficients split as ``COEFF_SPLIT``: id 80 | exp 64 | tex 80 | angle 3 | gamma 27 | trans 3;
RigFace's expression is ``coeffs[:, 80:144]``. Both layouts' BatchNorms run in eval mode (the
release fuses them into the convolutions, which is the same function).
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
    "COEFF_SPLIT",
    "LAYOUTS",
    "MEAN_FACE_LM5P_256",
    "Deep3DRecon",
    "deep3d_crop",
    "deep3d_input",
    "load_deep3d",
    "split_coeffs",
]

COEFF_SPLIT: tuple[tuple[str, int], ...] = (
    ("id", 80), ("exp", 64), ("tex", 80), ("angle", 3), ("gamma", 27), ("trans", 3),
)
N_COEFFS = sum(n for _, n in COEFF_SPLIT)  # 257
#: output channels of the 1x1 heads, per layout
_HEADS = {"deep3d": (80, 64, 80, 3, 27, 2, 1), "rigface": (80, 64, 80, 3, 27, 2, 1, 4)}
_HEAD_NAME = {"deep3d": "final_layers", "rigface": "fianl_layers"}
LAYOUTS = tuple(_HEADS)
#: input side and value range per layout
INPUT_SIZE = {"deep3d": 224, "rigface": 256}

#: RigFace's 5-point template for the 256 crop (utils/datasets_faceswap.py), OpenCV pixel centres:
#: eye image-left, eye image-right, nose tip, mouth corner image-left, image-right
MEAN_FACE_LM5P_256 = np.array([
    [(30.2946 + 8) * 2 + 16, 51.6963 * 2],
    [(65.5318 + 8) * 2 + 16, 51.5014 * 2],
    [(48.0252 + 8) * 2 + 16, 71.7366 * 2],
    [(33.5493 + 8) * 2 + 16, 92.3655 * 2],
    [(62.7299 + 8) * 2 + 16, 92.2041 * 2],
], dtype=np.float64)



class Deep3DRecon(nn.Module):
    """ResNet-50 backbone + 1x1 heads -> (B, 257) BFM coefficients (see the module docstring).

    ``layout``: "deep3d" (``final_layers``, 7 heads, 224 input in [0, 1]) or "rigface"
    (``fianl_layers``, 8 heads incl. pupils, 256 input in [-1, 1]). ``forward`` takes the crop in the
    layout's own range (:func:`deep3d_input` makes it) and returns the 257 coefficients.
    """

    def __init__(self, layout: str = "deep3d") -> None:
        super().__init__()
        if layout not in _HEADS:
            raise InvalidInput("layout", f"one of {LAYOUTS}", layout)
        from facerig.eval.deca import _ResNet50Features

        self.layout = layout
        self.backbone = _ResNet50Features()
        heads = nn.ModuleList([nn.Conv2d(2048, n, 1) for n in _HEADS[layout]])
        setattr(self, _HEAD_NAME[layout], heads)

    @property
    def heads(self) -> nn.ModuleList:
        heads: nn.ModuleList = getattr(self, _HEAD_NAME[self.layout])
        return heads

    @property
    def input_size(self) -> int:
        return INPUT_SIZE[self.layout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (s, s):
            raise InvalidInput("images", f"a (B, 3, {s}, {s}) Deep3D crop batch", tuple(x.shape))
        f = self.backbone(x)[:, :, None, None]
        out = torch.cat([h(f) for h in self.heads], 1).flatten(1)
        return out[:, :N_COEFFS]

    def expression(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 64) expression coefficients of crops made by :func:`deep3d_input`."""
        return split_coeffs(self(x))["exp"]


def split_coeffs(coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, 257) -> {id (B, 80), exp (B, 64), tex (B, 80), angle (B, 3), gamma (B, 27), trans (B, 3)}."""
    if coeffs.ndim != 2 or coeffs.shape[1] != N_COEFFS:
        raise InvalidInput("coeffs", f"(B, {N_COEFFS}) Deep3D coefficients", tuple(coeffs.shape))
    out, start = {}, 0
    for k, n in COEFF_SPLIT:
        out[k] = coeffs[:, start:start + n]
        start += n
    return out


def deep3d_crop(landmarks: Any, layout: str = "rigface", *, frame_size: tuple[int, int] | None = None) -> Any:
    """The regressor's crop of a face (:class:`~facerig.types.CropTransform`): least-squares 5-point
    similarity onto :data:`MEAN_FACE_LM5P_256` (scaled by 224/256 for the "deep3d" layout, whose own
    POS alignment to BFM's 3D landmarks needs a BFM file facerig does not read; the scaled template
    is an approximation of it). ``landmarks``: FaceLandmarks, MediaPipe or iBUG-68 points, or the 5
    points themselves ((5, 2) array, insightface order) with ``frame_size``."""
    from facerig.detect.crops import _five_points, _unpack, umeyama_similarity
    from facerig.types import CropTransform

    if layout not in _HEADS:
        raise InvalidInput("layout", f"one of {LAYOUTS}", layout)
    size = INPUT_SIZE[layout]
    arr = None if hasattr(landmarks, "points") else np.asarray(landmarks, np.float64)
    if arr is not None and arr.shape == (5, 2):
        if frame_size is None:
            raise InvalidInput("frame_size", "(height, width) of the frame when landmarks are an array")
        five, fs = arr, (int(frame_size[0]), int(frame_size[1]))
    else:
        pts, fs = _unpack(landmarks, frame_size)
        five = _five_points(pts)
    dst = MEAN_FACE_LM5P_256 * (size / 256.0) + 0.5
    return CropTransform(umeyama_similarity(five, dst), size, fs, f"deep3d-{layout}")


def deep3d_input(image: np.ndarray, landmarks: Any, layout: str = "rigface") -> torch.Tensor:
    """(1, 3, S, S) regressor input of the face in an RGB uint8 ``image``: the 5-point crop
    (bilinear, black outside the frame as OpenCV's warpAffine in the release) in the layout's range."""
    from facerig.detect.crops import warp_to_crop

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInput("image", "an RGB uint8 image (H, W, 3)", f"{img.dtype} {img.shape}")
    ct = deep3d_crop(landmarks, layout, frame_size=img.shape[:2])
    crop = warp_to_crop(img, ct, border="constant", interpolation="linear")
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0
    return x * 2.0 - 1.0 if layout == "rigface" else x


# ------------------------------------------------------------------------------------------------
# loading


def _state_and_layout(ckpt: Any, where: str) -> tuple[dict[str, torch.Tensor], str]:
    if not isinstance(ckpt, Mapping):
        raise InvalidInput(where, "a Deep3DFaceRecon checkpoint dict", type(ckpt).__name__)
    sd: Any = ckpt.get("net_recon", ckpt)
    if not isinstance(sd, Mapping):
        raise InvalidInput(f"{where}['net_recon']", "a state dict", type(sd).__name__)
    sd = {(str(k)[7:] if str(k).startswith("module.") else str(k)): v for k, v in sd.items()}
    if any(k.startswith("final_layers.") for k in sd):
        layout = "deep3d"
    elif any(k.startswith("fianl_layers.") for k in sd):
        layout = "rigface"
    else:
        raise InvalidInput(where, "Deep3DFaceRecon weights: a 'net_recon' entry (epoch_20.pth) or RigFace's "
                           "d3dfr_res50_nofc.pth, with backbone.* and final_layers.* / fianl_layers.* keys",
                           sorted(sd)[:6])
    return sd, layout


def check_deep3d_keys(model: nn.Module, sd: Mapping[str, Any], where: str = "Deep3D weights") -> None:
    """Strict: every key of ``model`` (BN counters optional), no extra key, equal shapes; raises
    :class:`InvalidInput` naming the offending keys."""
    check_state_keys(model, sd, where, f"the released Deep3DFaceRecon key layout ({getattr(model, 'layout', '?')})")


def load_deep3d(path: str | os.PathLike[str] | Mapping[str, Any]) -> Deep3DRecon:
    """A :class:`Deep3DRecon` in eval mode from Deep3DFaceRecon's ``epoch_20.pth`` (``net_recon``
    entry) or RigFace's ``d3dfr_res50_nofc.pth`` (layout detected from the head names), read with
    ``torch.load(weights_only=True)``, keys checked strictly."""
    if isinstance(path, Mapping):
        ckpt: Any = path
        where = "Deep3D weights (given mapping)"
    else:
        p = Path(path)
        if not p.is_file():
            raise AssetMissing("Deep3DFaceRecon weights (epoch_20.pth or d3dfr_res50_nofc.pth)", str(p),
                               "download Deep3DFaceRecon_pytorch's released checkpoint (or RigFace's "
                               "third_party/d3dfr_res50_nofc.pth) yourself and pass its path")
        where = str(p)
        try:
            ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InvalidInput(where, "a checkpoint readable with torch.load(weights_only=True)",
                               f"{type(e).__name__}: {str(e)[:200]}") from None
    sd, layout = _state_and_layout(ckpt, where)
    model = Deep3DRecon(layout)
    check_deep3d_keys(model, sd, where)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=False)
    return model.eval().requires_grad_(False)
