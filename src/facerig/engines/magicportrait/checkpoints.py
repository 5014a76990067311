"""Strict loaders for MagicPortrait's released checkpoints (torch state dicts, ``.pth``).

Files of the release (``ckpts/``) and what they load into (stock diffusers classes only):

* ``guidance_encoder_{depth,normal,render}.pth`` -> :class:`~.guidance.GuidanceEncoder` (149 keys
  each as released; the dead attention weights are loaded too and listed by ``dead_keys()``);
* ``reference_unet.pth`` -> ``UNet2DConditionModel`` of the base UNet config WITHOUT its tail: the
  file has no ``conv_norm_out.*`` / ``conv_out.*`` (the authors' reference class drops them), so the
  loaded model has ``conv_norm_out = None`` and ``conv_out = Identity`` and returns the last up
  block's output, like theirs. Only its transformer blocks' tokens are ever used;
* ``denoising_unet.pth`` -> ``UNet2DConditionModel`` of the base UNet config (stock keys);
* ``motion_module.pth`` (AnimateDiff naming) -> diffusers ``MotionAdapter`` after renaming
  (:func:`animatediff_to_diffusers`); :func:`build_denoiser` joins the two with
  ``UNetMotionModel.from_unet2d``. Their temporal modules' GroupNorm is made per-frame
  (:class:`FrameGroupNorm`): the release (AnimateDiff lineage) normalises each frame, diffusers'
  ``AnimateDiffTransformer3D`` normalises over all frames at once.

Every loader reads with ``torch.load(weights_only=True)`` and raises
:class:`~facerig.errors.CheckpointMismatch` naming the missing, unexpected and mis-shaped keys; a
missing file is :class:`~facerig.errors.AssetMissing`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

from .guidance import GUIDANCE_TYPES, RELEASED_GUIDANCE_CONFIG, GuidanceEncoder

log = logging.getLogger(__name__)

__all__ = [
    "DENOISING_FILE",
    "FrameGroupNorm",
    "GUIDANCE_FILE",
    "MOTION_FILE",
    "REFERENCE_FILE",
    "REFERENCE_DROPPED_PREFIXES",
    "animatediff_to_diffusers",
    "build_denoiser",
    "check_strict",
    "diffusers_to_animatediff",
    "load_denoising_unet",
    "load_guidance_encoder",
    "load_guidance_encoders",
    "load_motion_adapter",
    "load_reference_unet",
    "per_frame_motion_norm",
    "read_checkpoint",
    "save_motion_module",
    "strip_reference_tail",
]

GUIDANCE_FILE = "guidance_encoder_{}.pth"
REFERENCE_FILE = "reference_unet.pth"
DENOISING_FILE = "denoising_unet.pth"
MOTION_FILE = "motion_module.pth"
#: the reference UNet's tail, absent from ``reference_unet.pth``
REFERENCE_DROPPED_PREFIXES = ("conv_norm_out.", "conv_out.")
LAYOUT = "the MagicPortrait release layout"


def read_checkpoint(path: str | os.PathLike[str], what: str = "MagicPortrait checkpoint") -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict read with ``torch.load(weights_only=True)`` on the CPU; tensors only."""
    p = Path(path)
    if not p.is_file():
        raise AssetMissing(what, str(p), "give the folder of the released MagicPortrait checkpoints (ckpts/)")
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused or corrupt file: one line naming the file
        raise InvalidInput(str(p), "a torch state dict readable with weights_only=True", f"{type(e).__name__}: {e}") from None
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise InvalidInput(str(p), "a flat state dict {name: tensor}", type(sd).__name__)
    return dict(sd)


def check_strict(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], source: str,
                 layout: str = LAYOUT) -> None:
    """Exact key set and shapes, else :class:`CheckpointMismatch` naming the keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mism = {k: (tuple(expected[k]), tuple(v.shape)) for k, v in state.items()
            if k in expected and tuple(v.shape) != tuple(expected[k])}
    if missing or unexpected or mism:
        raise CheckpointMismatch(source, missing, unexpected, mism, layout=layout)


def _load_into(module: Any, state: Mapping[str, torch.Tensor], source: str, layout: str = LAYOUT) -> None:
    check_strict({k: tuple(v.shape) for k, v in module.state_dict().items()}, state, source, layout)
    module.load_state_dict(dict(state), strict=True)


def _place(module: Any, device: str | torch.device, dtype: torch.dtype) -> Any:
    module = module.to(device=device)
    p = next(module.parameters(), None)
    if p is not None and p.dtype != dtype:  # (a no-op cast would still make diffusers log a warning)
        module = module.to(dtype=dtype)
    return module.eval()


# ---------------------------------------------------------------- guidance encoders

def load_guidance_encoder(path: str | os.PathLike[str], config: Mapping[str, Any] | None = None, *,
                          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> GuidanceEncoder:
    """One ``guidance_encoder_*.pth`` into a :class:`GuidanceEncoder` of ``config`` (the released
    one by default), strictly; the dead weights it carries are loaded and logged."""
    enc = GuidanceEncoder(**dict(config if config is not None else RELEASED_GUIDANCE_CONFIG))
    _load_into(enc, read_checkpoint(path, "MagicPortrait guidance encoder"), str(path))
    dead = enc.dead_keys()
    log.info("%s: %d keys loaded, %d of them dead weights (never run): %s", path, len(enc.state_dict()), len(dead),
             ", ".join(p.rstrip(".") for p in enc.dead_prefixes()))
    return _place(enc, device, dtype)


def load_guidance_encoders(ckpts_dir: str | os.PathLike[str], config: Mapping[str, Any] | None = None, *,
                           device: str | torch.device = "cpu",
                           dtype: torch.dtype = torch.float32) -> dict[str, GuidanceEncoder]:
    """The three released encoders ``{"depth", "normal", "render"}`` from ``ckpts_dir``."""
    d = Path(ckpts_dir)
    return {t: load_guidance_encoder(d / GUIDANCE_FILE.format(t), config, device=device, dtype=dtype)
            for t in GUIDANCE_TYPES}


# ---------------------------------------------------------------- UNets

def _unet_config(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A UNet config dict, or the ``config.json`` of a diffusers UNet folder (or its file)."""
    import json

    if isinstance(config, Mapping):
        return {k: v for k, v in config.items() if not str(k).startswith("_")}
    p = Path(config)
    f = p / "config.json" if p.is_dir() else p
    if not f.is_file():
        raise AssetMissing("SD 1.5 UNet config (config.json)", str(f), "give the base model's unet/ folder")
    try:
        cfg = json.loads(f.read_text())
    except ValueError as e:
        raise InvalidInput(str(f), "a JSON UNet config", str(e)) from None
    return {k: v for k, v in cfg.items() if not str(k).startswith("_")}


def _new_unet(config: Mapping[str, Any] | str | os.PathLike[str]) -> Any:
    from diffusers import UNet2DConditionModel

    # from_config: a real unet/config.json carries keys of other diffusers versions (ignored, logged)
    return UNet2DConditionModel.from_config(_unet_config(config))


def strip_reference_tail(unet: Any) -> Any:
    """Drop ``conv_norm_out`` / ``conv_out`` as the authors' reference UNet does: the model then
    returns its last up block's output and its keys are those of ``reference_unet.pth``."""
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    return unet


def load_reference_unet(path: str | os.PathLike[str], unet_config: Mapping[str, Any] | str | os.PathLike[str], *,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """``reference_unet.pth`` into a tail-less ``UNet2DConditionModel`` (:func:`strip_reference_tail`)."""
    unet = strip_reference_tail(_new_unet(unet_config))
    _load_into(unet, read_checkpoint(path, "MagicPortrait reference UNet"), str(path))
    return _place(unet, device, dtype)


def load_denoising_unet(path: str | os.PathLike[str], unet_config: Mapping[str, Any] | str | os.PathLike[str], *,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """``denoising_unet.pth`` (stock ``UNet2DConditionModel`` keys, no motion modules) strictly."""
    sd = read_checkpoint(path, "MagicPortrait denoising UNet")
    motion = [k for k in sd if ".motion_modules." in k]
    if motion:
        raise CheckpointMismatch(str(path), [], motion, {},
                                 layout=f"{LAYOUT} (denoising UNet without motion modules; those are in {MOTION_FILE})")
    unet = _new_unet(unet_config)
    _load_into(unet, sd, str(path))
    return _place(unet, device, dtype)


# ---------------------------------------------------------------- motion modules

_AD_TO_DIFFUSERS = [
    (re.compile(r"\.temporal_transformer\."), "."),
    (re.compile(r"\.attention_blocks\.0\."), ".attn1."),
    (re.compile(r"\.attention_blocks\.1\."), ".attn2."),
    (re.compile(r"\.norms\.0\."), ".norm1."),
    (re.compile(r"\.norms\.1\."), ".norm2."),
    (re.compile(r"\.ff_norm\."), ".norm3."),
]
_PE = re.compile(r"^(.*\.transformer_blocks\.\d+)\.attention_blocks\.(\d+)\.pos_encoder\.pe$")


def animatediff_to_diffusers(state: Mapping[str, torch.Tensor], source: str = "motion_module.pth") -> dict[str, torch.Tensor]:
    """AnimateDiff motion-module keys -> diffusers ``MotionAdapter`` keys.

    ``...motion_modules.J.temporal_transformer.X`` -> ``...motion_modules.J.X``; in each block
    ``attention_blocks.0/1`` -> ``attn1/attn2``, ``norms.0/1`` -> ``norm1/norm2``, ``ff_norm`` ->
    ``norm3``; the two attentions' sinusoid buffers ``attention_blocks.{0,1}.pos_encoder.pe`` become the
    block's one ``pos_embed.pe`` (they must be equal). Keys without ``motion_modules`` are refused.
    """
    out: dict[str, torch.Tensor] = {}
    pes: dict[str, list[tuple[str, torch.Tensor]]] = {}
    bad = [k for k in state if ".motion_modules." not in k]
    if bad:
        raise CheckpointMismatch(source, [], bad, {}, layout=f"{LAYOUT} (AnimateDiff motion-module keys only)")
    for k, v in state.items():
        m = _PE.match(k)
        if m:
            stem = m.group(1).replace(".temporal_transformer.", ".")
            pes.setdefault(stem + ".pos_embed.pe", []).append((k, v))
            continue
        new = k
        for pat, rep in _AD_TO_DIFFUSERS:
            new = pat.sub(rep, new)
        out[new] = v
    for new, found in pes.items():
        first = found[0][1]
        for k, v in found[1:]:
            if v.shape != first.shape or (not (v.is_meta or first.is_meta) and not torch.equal(v, first)):
                raise CheckpointMismatch(source, [], [], {k: (tuple(first.shape), tuple(v.shape))},
                                         layout=f"{LAYOUT} (equal positional sinusoids in one temporal block: {found[0][0]})")
        out[new] = first
    return out


def diffusers_to_animatediff(state: Mapping[str, torch.Tensor], num_attentions: int = 2) -> dict[str, torch.Tensor]:
    """Inverse of :func:`animatediff_to_diffusers` (each ``pos_embed.pe`` is written once per
    temporal attention, ``num_attentions`` = 2 as released)."""
    inv = [(".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."), (".norm1.", ".norms.0."),
           (".norm2.", ".norms.1."), (".norm3.", ".ff_norm.")]
    mm = re.compile(r"^(.*\.motion_modules\.\d+)\.(.*)$")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        m = mm.match(k)
        if not m:
            raise InvalidInput("state", "MotionAdapter keys (...motion_modules.J....)", k)
        k2 = f"{m.group(1)}.temporal_transformer.{m.group(2)}"
        if k2.endswith(".pos_embed.pe"):
            stem = k2[: -len(".pos_embed.pe")]
            for a in range(num_attentions):
                out[f"{stem}.attention_blocks.{a}.pos_encoder.pe"] = v
            continue
        for old, new in inv:
            k2 = k2.replace(old, new)
        out[k2] = v
    return out


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per FRAME on ``(B, C, F, H, W)`` (as AnimateDiff and the release
    normalise their temporal modules' input); diffusers' ``AnimateDiffTransformer3D`` hands its
    ``norm`` the 5-D tensor, whose statistics would then span all frames. Same parameters/keys."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.ndim != 5:
            return super().forward(input)
        b, c, f, h, w = input.shape
        x = input.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        x = nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return x.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def per_frame_motion_norm(model: Any, num_groups: int | None = None) -> int:
    """Swap the ``norm`` of every temporal transformer (``AnimateDiffTransformer3D``) under ``model``
    for a :class:`FrameGroupNorm` with the same parameters (and ``num_groups`` groups when given:
    ``UNetMotionModel`` builds its temporal norms with the UNet's ``norm_num_groups``, not the
    adapter's); returns how many."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    n = 0
    for m in model.modules():
        if isinstance(m, AnimateDiffTransformer3D) and not isinstance(m.norm, FrameGroupNorm):
            old = m.norm
            groups = int(num_groups) if num_groups is not None else old.num_groups
            new = FrameGroupNorm(groups, old.num_channels, eps=old.eps, affine=old.affine)
            new.to(device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.copy_(old.bias)
            m.norm = new
            n += 1
    return n


def load_motion_adapter(path: str | os.PathLike[str], unet_config: Mapping[str, Any] | str | os.PathLike[str], *,
                        num_attention_heads: int = 8, norm_num_groups: int = 32,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """``motion_module.pth`` (AnimateDiff naming) into a diffusers ``MotionAdapter`` built for the
    base UNet config (its widths and layers per block, a mid-block module; 8 heads and 32 norm groups
    as released; the sinusoid length is read from the file's ``pe`` buffers, 32 as released)."""
    from diffusers import MotionAdapter

    cfg = _unet_config(unet_config)
    sd = animatediff_to_diffusers(read_checkpoint(path, "MagicPortrait motion module"), str(path))
    pe = [v for k, v in sd.items() if k.endswith(".pos_embed.pe")]
    if not pe or pe[0].ndim != 3:
        raise CheckpointMismatch(str(path), ["down_blocks.0.motion_modules.0.temporal_transformer."
                                             "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"], [], {},
                                 layout=f"{LAYOUT} (temporal position encodings)")
    adapter = MotionAdapter(block_out_channels=tuple(cfg["block_out_channels"]),
                            motion_layers_per_block=int(cfg.get("layers_per_block", 2)),
                            motion_num_attention_heads=int(num_attention_heads),
                            motion_norm_num_groups=int(norm_num_groups), motion_max_seq_length=int(pe[0].shape[1]),
                            use_motion_mid_block=True)
    _load_into(adapter, sd, str(path), layout=f"{LAYOUT} (AnimateDiff motion modules, renamed to MotionAdapter keys)")
    per_frame_motion_norm(adapter)
    return _place(adapter, device, dtype)


def save_motion_module(denoiser: Any, path: str | os.PathLike[str]) -> Path:
    """The temporal modules of a ``UNetMotionModel`` as an AnimateDiff-named ``motion_module.pth``
    (the released file's layout: :func:`diffusers_to_animatediff` of its ``.motion_modules.``
    parameters and buffers, fp32 tensors only, so :func:`load_motion_adapter` and
    ``torch.load(weights_only=True)`` read it back). Returns the path."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in denoiser.state_dict().items()
             if ".motion_modules." in f".{k}"}
    if not state:
        raise InvalidInput("denoiser", "a UNetMotionModel with motion modules", type(denoiser).__name__)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(diffusers_to_animatediff(state), out)
    return out


def build_denoiser(unet: Any, adapter: Any) -> Any:
    """``UNetMotionModel.from_unet2d(unet, adapter)`` in the UNet's device and dtype, eval mode, with
    per-frame GroupNorm in its temporal modules (:class:`FrameGroupNorm`, as released)."""
    from diffusers import UNetMotionModel

    p = next(unet.parameters())
    model = UNetMotionModel.from_unet2d(unet, adapter)
    per_frame_motion_norm(model, int(adapter.config.motion_norm_num_groups))
    return _place(model, p.device, p.dtype)
