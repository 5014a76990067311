"""SMIRK's encoder (Retsinas et al.), as MagicPortrait's released conditioning uses it: the FLAME
expression (50) and jaw (3) of a driving frame (docs/magicportrait-conditions.md).

SMIRK's ``SmirkEncoder`` is three timm MobileNetV3 feature extractors with a linear head each: pose
(``tf_mobilenetv3_small_minimal_100`` -> 6), shape (``tf_mobilenetv3_large_minimal_100`` -> 300),
expression (large minimal -> 50 expression + 2 eyelid + 3 jaw). facerig builds the "minimal"
MobileNetV3 (ReLU, 3x3 depthwise kernels, no squeeze-excitation, TensorFlow "same" padding on the
stride-2 convolutions, batch-norm eps 1e-3) in plain torch with timm's parameter names, so the
released ``SMIRK_em1.pt`` loads strictly without timm. The block tables were read from timm 1.0's
instantiated models; the equality with timm's + SMIRK's own modules is a gated test
(``FACERIG_SMIRK_REF``).

The input crop is SMIRK's ``crop_face``: the MediaPipe landmarks' bounding box, side
``1.4 * (w + h) / 2`` around its centre, onto 224 x 224 (``[0, 223]``), RGB in [0, 1].
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput
from facerig.types import CropTransform

__all__ = ["SMIRK_CROP_SCALE", "SMIRK_SIZE", "MobileNetV3Features", "SmirkEncoder", "load_smirk", "smirk_crop"]

SMIRK_SIZE = 224
SMIRK_CROP_SCALE = 1.4
BN_EPS = 1e-3
N_EXP = 50
N_SHAPE = 300

# (kind, in, mid, out, stride, skip) per block, per stage; "ds": depthwise-separable (dw -> pw),
# "ir": inverted residual (pw -> dw -> pwl), "cn": 1x1 conv + BN + ReLU
LARGE_MINIMAL: tuple[tuple[tuple[str, int, int, int, int, bool], ...], ...] = (
    (("ds", 16, 16, 16, 1, True),),
    (("ir", 16, 64, 24, 2, False), ("ir", 24, 72, 24, 1, True)),
    (("ir", 24, 72, 40, 2, False), ("ir", 40, 120, 40, 1, True), ("ir", 40, 120, 40, 1, True)),
    (("ir", 40, 240, 80, 2, False), ("ir", 80, 200, 80, 1, True), ("ir", 80, 184, 80, 1, True),
     ("ir", 80, 184, 80, 1, True)),
    (("ir", 80, 480, 112, 1, False), ("ir", 112, 672, 112, 1, True)),
    (("ir", 112, 672, 160, 2, False), ("ir", 160, 960, 160, 1, True), ("ir", 160, 960, 160, 1, True)),
    (("cn", 160, 960, 960, 1, False),),
)
SMALL_MINIMAL: tuple[tuple[tuple[str, int, int, int, int, bool], ...], ...] = (
    (("ds", 16, 16, 16, 2, False),),
    (("ir", 16, 72, 24, 2, False), ("ir", 24, 88, 24, 1, True)),
    (("ir", 24, 96, 40, 2, False), ("ir", 40, 240, 40, 1, True), ("ir", 40, 240, 40, 1, True)),
    (("ir", 40, 120, 48, 1, False), ("ir", 48, 144, 48, 1, True)),
    (("ir", 48, 288, 96, 2, False), ("ir", 96, 576, 96, 1, True), ("ir", 96, 576, 96, 1, True)),
    (("cn", 96, 576, 576, 1, False),),
)


def conv_same(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv`` with TensorFlow "same" padding (asymmetric: the extra pixel right / bottom)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), conv.weight, None, conv.stride, 0, 1, conv.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class _Block(nn.Module):
    def __init__(self, kind: str, cin: int, mid: int, cout: int, stride: int, skip: bool) -> None:
        super().__init__()
        self.kind, self.skip = kind, skip
        if kind == "ds":
            self.conv_dw = nn.Conv2d(cin, cin, 3, stride, bias=False, groups=cin)
            self.bn1 = _bn(cin)
            self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn2 = _bn(cout)
        elif kind == "ir":
            self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn1 = _bn(mid)
            self.conv_dw = nn.Conv2d(mid, mid, 3, stride, bias=False, groups=mid)
            self.bn2 = _bn(mid)
            self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
            self.bn3 = _bn(cout)
        else:
            self.conv = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn1 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "cn":
            return F.relu(self.bn1(self.conv(x)))
        if self.kind == "ds":
            y = F.relu(self.bn1(conv_same(x, self.conv_dw)))
            y = self.bn2(self.conv_pw(y))
        else:
            y = F.relu(self.bn1(self.conv_pw(x)))
            y = F.relu(self.bn2(conv_same(y, self.conv_dw)))
            y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class MobileNetV3Features(nn.Module):
    """timm's ``tf_mobilenetv3_{large,small}_minimal_100`` with ``features_only=True``, only the last
    feature map (960 / 576 channels at stride 32), which is all SMIRK reads."""

    def __init__(self, variant: str = "large") -> None:
        super().__init__()
        if variant not in ("large", "small"):
            raise InvalidInput("variant", "'large' or 'small'", variant)
        table = LARGE_MINIMAL if variant == "large" else SMALL_MINIMAL
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, bias=False)
        self.bn1 = _bn(16)
        self.blocks = nn.ModuleList(nn.Sequential(*(_Block(*b) for b in stage)) for stage in table)
        self.num_features = table[-1][-1][3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(conv_same(x, self.conv_stem)))
        for stage in self.blocks:
            x = stage(x)
        return x


class _Head(nn.Module):
    def __init__(self, variant: str, n_out: int, layers: str) -> None:
        super().__init__()
        self.encoder = MobileNetV3Features(variant)
        self.layers_name = layers
        self.add_module(layers, nn.Sequential(nn.Linear(self.encoder.num_features, n_out)))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(self.encoder(img), 1).flatten(1)
        return getattr(self, self.layers_name)(f)


class SmirkEncoder(nn.Module):
    """SMIRK's encoder with its parameter names (``pose_encoder`` / ``shape_encoder`` /
    ``expression_encoder``). ``forward(img)`` (B, 3, 224, 224) RGB in [0, 1] -> SMIRK's output dict;
    :meth:`expression` runs only the expression branch (what MagicPortrait uses)."""

    def __init__(self, n_exp: int = N_EXP, n_shape: int = N_SHAPE) -> None:
        super().__init__()
        self.n_exp = int(n_exp)
        self.pose_encoder = _Head("small", 6, "pose_cam_layers")
        self.shape_encoder = _Head("large", int(n_shape), "shape_layers")
        self.expression_encoder = _Head("large", self.n_exp + 5, "expression_layers")

    def expression(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """``expression_params`` (B, 50), ``eyelid_params`` (B, 2) in [0, 1] and ``jaw_params`` (B, 3):
        (relu(jaw open), clamp(x, -0.2, 0.2) x 2) as SMIRK's ExpressionEncoder."""
        _check_img(img)
        p = self.expression_encoder(img)
        n = self.n_exp
        jaw = torch.cat([F.relu(p[:, n + 2 : n + 3]), p[:, n + 3 : n + 5].clamp(-0.2, 0.2)], 1)
        return {"expression_params": p[:, :n], "eyelid_params": p[:, n : n + 2].clamp(0, 1), "jaw_params": jaw}

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        _check_img(img)
        pc = self.pose_encoder(img)
        out = {"pose_params": pc[:, :3], "cam": pc[:, 3:], "shape_params": self.shape_encoder(img)}
        out.update(self.expression(img))
        return out


def _check_img(img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] != 3:
        raise InvalidInput("img", "a (B, 3, 224, 224) RGB tensor in [0, 1]", tuple(getattr(img, "shape", ())))


def load_smirk(path: Any, device: Any = "cpu") -> SmirkEncoder:
    """SMIRK's ``SMIRK_em1.pt`` (keys ``smirk_encoder.*`` and ``smirk_generator.*``; the generator's
    are ignored, as the release does) or a bare encoder state dict, loaded strictly
    (``weights_only=True``): a missing, unexpected or mis-shaped encoder key raises
    :class:`~facerig.errors.CheckpointMismatch` naming it (BN ``num_batches_tracked`` optional)."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise AssetMissing("SMIRK weights (SMIRK_em1.pt)", str(p),
                           "download SMIRK's pretrained model (github.com/georgeretsi/smirk) and pass its path")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling error is an invalid file
        raise InvalidInput(str(p), "a torch state dict (SMIRK_em1.pt)", f"{type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise InvalidInput(str(p), "a flat state dict {name: tensor}", type(raw).__name__)
    if any(k.startswith("smirk_encoder.") for k in raw):
        sd = {k[len("smirk_encoder."):]: v for k, v in raw.items() if k.startswith("smirk_encoder.")}
        extra = [k for k in raw if not k.startswith(("smirk_encoder.", "smirk_generator."))]
    else:
        sd, extra = dict(raw), []
    model = SmirkEncoder()
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own] + extra
    mism = {k: (tuple(own[k].shape), tuple(getattr(v, "shape", ()))) for k, v in sd.items()
            if k in own and (not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape))}
    if missing or unexpected or mism:
        raise CheckpointMismatch(str(p), missing, unexpected, mism, layout="SMIRK's SmirkEncoder (SMIRK_em1.pt)")
    model.load_state_dict(sd, strict=False)
    return model.eval().to(device)


def smirk_crop(landmarks: Any, frame_size: tuple[int, int]) -> CropTransform:
    """SMIRK's ``crop_face`` (scale 1.4, 224): the landmarks' box centre, side
    ``int(1.4 * (w + h) / 2)`` mapped onto [0, 223]."""
    pts = np.asarray(landmarks, np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2 or len(pts) < 3 or not np.isfinite(pts).all():
        raise InvalidInput("landmarks", "(N, 2) finite MediaPipe landmarks", pts.shape)
    pts = pts[:, :2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    side = int(((x1 - x0) + (y1 - y0)) / 2 * SMIRK_CROP_SCALE)
    if side <= 0:
        raise InvalidInput("landmarks", "a face of non-zero size", "degenerate landmarks")
    cx, cy = x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0
    k = (SMIRK_SIZE - 1) / side
    m = np.array([[k, 0.0, -k * (cx - side / 2.0)], [0.0, k, -k * (cy - side / 2.0)]])
    return CropTransform(m, SMIRK_SIZE, tuple(int(v) for v in frame_size), "smirk")  # type: ignore[arg-type]
