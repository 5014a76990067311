"""RigFace's UNet pair on stock diffusers models (docs/rigface-model.md).

:class:`RigFaceUNets` holds

* ``unet_id`` -- the identity UNet, a stock ``UNet2DConditionModel`` (``in_channels`` 4). It runs
  once per source at timestep 0 on the UNSCALED source latent with the prompt's text embedding;
  forward pre-hooks record the INPUT tokens of each of its transformer blocks in execution order
  (:class:`facerig.engines.sd.reference.ReferenceRecorder`); its output is never needed, so it stops
  right after the last block's input is recorded (the states are recorded before the skipped layers
  run, so they are the same; ``identity_states(..., stop_early=False)`` runs it to the end).
* ``unet_denoise`` -- the denoising UNet, a stock ``UNet2DConditionModel`` with ``in_channels`` 12
  (conv_in over ``[noisy latent | background latent | render latent]``) whose ``attn1`` processors
  are FaceFusion readers (``concat_keep_half``). Its config carries ``class_embed_type="identity"``
  in memory: the stock forward then adds ``class_labels`` to the time embedding right after
  ``time_embedding`` and before the (absent) ``time_embed_act`` -- the very place where the release
  adds ``au_aug_mlp(expression)``. Saved configs keep the release's ``class_embed_type: null``.
* ``au_aug_mlp`` -- ``nn.Linear(expression_dim, time_embed_dim)`` (1280 x 64 in the release), no
  activation. Stored inside the denoiser's weight file as ``au_aug_mlp.weight`` / ``.bias``.

``expression_kind``: ``"deep3d"`` (the release's 64-d Deep3DFaceRecon BFM expression vector) or
``"facerig"`` (facerig's own expression coefficients, for weights facerig trains; dim recorded).

Released layout (``save_pretrained`` writes it, the loaders read it with STRICT keys)::

    DIR/unet_id/config.json, diffusion_pytorch_model.safetensors       (686 tensors at SD 1.5 size)
    DIR/unet_denoise/config.json, diffusion_pytorch_model.safetensors  (686 + au_aug_mlp.{weight,bias};
                                                                        conv_in.weight (320, 12, 3, 3))
    DIR/rigface.json   (facerig only: expression_kind, expression_dim, prompt, format version)
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

from ..sd.reference import ReferenceRecorder, install_reference_readers, strip_reference_hooks
from ..sd.unet_configs import SD15_UNET_CONFIG, TINY_UNET_CONFIG, clean_unet_config

__all__ = [
    "DEEP3D_EXPRESSION_DIM",
    "DEFAULT_PROMPT",
    "EXPRESSION_KINDS",
    "SD15_UNET_CONFIG",
    "TINY_UNET_CONFIG",
    "RigFaceUNets",
    "clone_unets",
    "load_released_unets",
    "load_rigface_weights",
    "read_unet_config",
    "read_unet_weights",
]

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "A close up of a person."
DEEP3D_EXPRESSION_DIM = 64
EXPRESSION_KINDS = ("deep3d", "facerig")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
RIGFACE_JSON = "rigface.json"
FORMAT_VERSION = 1
AU_KEYS = ("au_aug_mlp.weight", "au_aug_mlp.bias")
LAYOUT = "the RigFace released UNet layout"

#: Stable Diffusion 1.5's UNet config (both RigFace UNets use it, the denoiser with ``in_channels``
#: 12) and its tiny CPU-test variant: :mod:`facerig.engines.sd.unet_configs`




def _denoise_config(cfg: Mapping[str, Any], source: str = "unet_denoise config") -> dict[str, Any]:
    c = dict(cfg)
    if c.get("class_embed_type") not in (None, "identity"):
        raise InvalidInput(f"{source}.class_embed_type", "null (RigFace adds au_aug_mlp to the time embedding)",
                           c.get("class_embed_type"))
    if c.get("num_class_embeds") is not None:
        raise InvalidInput(f"{source}.num_class_embeds", "null", c.get("num_class_embeds"))
    c["class_embed_type"] = "identity"
    return c


def _build_unet(cfg: Mapping[str, Any], meta: bool = False) -> Any:
    from diffusers import UNet2DConditionModel

    try:
        if meta:
            with torch.device("meta"):
                return UNet2DConditionModel(**cfg)
        return UNet2DConditionModel(**cfg)
    except (TypeError, ValueError) as e:
        raise InvalidInput("unet config", "a valid UNet2DConditionModel config", str(e)) from e


def _time_embed_dim(unet: Any) -> int:
    return int(unet.time_embedding.linear_2.out_features)


def _released_config(unet: Any, denoiser: bool) -> dict[str, Any]:
    import diffusers

    cfg = {k: v for k, v in dict(unet.config).items() if not str(k).startswith("_")}
    if denoiser:
        cfg["class_embed_type"] = None
    return {"_class_name": "UNet2DConditionModel", "_diffusers_version": diffusers.__version__, **cfg}


class RigFaceUNets(nn.Module):
    """The identity UNet, the denoising UNet and ``au_aug_mlp`` (see the module docstring)."""

    def __init__(
        self,
        unet_id: Any,
        unet_denoise: Any,
        au_aug_mlp: nn.Linear,
        *,
        expression_kind: str = "deep3d",
        prompt: str = DEFAULT_PROMPT,
        meta: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if expression_kind not in EXPRESSION_KINDS:
            raise InvalidInput("expression_kind", f"one of {EXPRESSION_KINDS}", expression_kind)
        for name, u, ch in (("unet_id", unet_id, 4), ("unet_denoise", unet_denoise, 12)):
            if not hasattr(u, "config") or not hasattr(u, "time_embedding"):
                raise InvalidInput(name, "a diffusers UNet2DConditionModel", type(u).__name__)
            if int(u.config.in_channels) != ch:
                raise InvalidInput(f"{name}.config.in_channels", str(ch), u.config.in_channels)
        if unet_denoise.config.class_embed_type != "identity":
            raise InvalidInput("unet_denoise.config.class_embed_type", "'identity' (au_aug_mlp goes in as class_labels)",
                               unet_denoise.config.class_embed_type)
        if unet_id.config.class_embed_type is not None:
            raise InvalidInput("unet_id.config.class_embed_type", "null", unet_id.config.class_embed_type)
        t_dim = _time_embed_dim(unet_denoise)
        if not isinstance(au_aug_mlp, nn.Linear) or au_aug_mlp.out_features != t_dim:
            raise InvalidInput("au_aug_mlp", f"nn.Linear(expression_dim, {t_dim}) (the time embedding width)",
                               repr(au_aug_mlp))
        if expression_kind == "deep3d" and au_aug_mlp.in_features != DEEP3D_EXPRESSION_DIM:
            raise InvalidInput("au_aug_mlp", f"{DEEP3D_EXPRESSION_DIM} inputs for expression_kind 'deep3d'",
                               au_aug_mlp.in_features)
        self.unet_id = unet_id
        self.unet_denoise = unet_denoise
        self.au_aug_mlp = au_aug_mlp
        self.expression_kind = expression_kind
        self.prompt = str(prompt)
        self.meta: dict[str, Any] = dict(meta or {})
        self.install_processors()

    # ---- processors ------------------------------------------------------------------------
    def install_processors(self) -> None:
        """(Re)install the identity recorder and the FaceFusion readers (e.g. after a
        ``set_attn_processor`` call on the denoiser replaced them)."""
        strip_reference_hooks(self.unet_id)
        self.recorder = ReferenceRecorder(self.unet_id, point="block_input")
        self.bank = install_reference_readers(self.unet_denoise, "concat_keep_half")
        if self.bank.num_slots != self.recorder.bank.num_slots:
            raise InvalidInput("unet_denoise", f"{self.recorder.bank.num_slots} transformer blocks (as unet_id)",
                               self.bank.num_slots)

    @property
    def num_states(self) -> int:
        """Transformer blocks per UNet (16 for SD 1.5)."""
        return self.bank.num_slots

    @property
    def expression_dim(self) -> int:
        return int(self.au_aug_mlp.in_features)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet_denoise.config.cross_attention_dim)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        unet_config: Mapping[str, Any],
        *,
        expression_kind: str = "deep3d",
        expression_dim: int | None = None,
        seed: int | None = None,
        prompt: str = DEFAULT_PROMPT,
    ) -> RigFaceUNets:
        """Freshly initialised UNets of ``unet_config`` (``in_channels`` set to 4 / 12)."""
        cfg = clean_unet_config(unet_config, "unet_config")
        dim = _expression_dim(expression_kind, expression_dim)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            unet_id = _build_unet({**cfg, "in_channels": 4, "class_embed_type": None})
            unet_den = _build_unet(_denoise_config({**cfg, "in_channels": 12}))
            au = nn.Linear(dim, _time_embed_dim(unet_den))
        return cls(unet_id, unet_den, au, expression_kind=expression_kind, prompt=prompt)

    @classmethod
    def from_sd_unet(
        cls, unet: Any, *, expression_kind: str = "facerig", expression_dim: int | None = None,
        prompt: str = DEFAULT_PROMPT,
    ) -> RigFaceUNets:
        """Both UNets initialised from one SD UNet (training from SD 1.5): the identity UNet a copy,
        the denoiser a copy whose conv_in keeps SD's weights on the 4 noisy-latent channels and
        zeros on the 8 condition channels; ``au_aug_mlp`` zero-initialised, so training starts
        from SD's own prediction."""
        cfg = clean_unet_config(dict(unet.config), "unet.config")
        if int(cfg["in_channels"]) != 4:
            raise InvalidInput("unet.config.in_channels", "4 (a text-to-image SD UNet)", cfg["in_channels"])
        dim = _expression_dim(expression_kind, expression_dim)
        sd = unet.state_dict()
        unet_id = _build_unet({**cfg, "class_embed_type": None})
        unet_id.load_state_dict(sd, strict=True)
        unet_den = _build_unet(_denoise_config({**cfg, "in_channels": 12}))
        w = sd["conv_in.weight"]
        sd2 = dict(sd)
        sd2["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], 8, *w.shape[2:], dtype=w.dtype)], 1)
        unet_den.load_state_dict(sd2, strict=True)
        au = nn.Linear(dim, _time_embed_dim(unet_den))
        nn.init.zeros_(au.weight)
        nn.init.zeros_(au.bias)
        p = next(unet.parameters())
        out = cls(unet_id, unet_den, au, expression_kind=expression_kind, prompt=prompt)
        return out.to(device=p.device, dtype=p.dtype)

    # ---- inference -------------------------------------------------------------------------
    def _text(self, text_embeds: torch.Tensor, batch: int) -> torch.Tensor:
        if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3:
            raise InvalidInput("text_embeds", "a (B, 77, D) tensor", getattr(text_embeds, "shape", type(text_embeds)))
        if text_embeds.shape[-1] != self.cross_attention_dim:
            raise InvalidInput("text_embeds", f"last dim {self.cross_attention_dim} (the UNet's cross_attention_dim)",
                               tuple(text_embeds.shape))
        if text_embeds.shape[0] != batch:
            if text_embeds.shape[0] != 1:
                raise InvalidInput("text_embeds", f"batch 1 or {batch}", tuple(text_embeds.shape))
            text_embeds = text_embeds.expand(batch, -1, -1)
        return text_embeds.to(device=self.device, dtype=self.dtype)

    def identity_states(
        self, source_latent: torch.Tensor, text_embeds: torch.Tensor, *, stop_early: bool = True
    ) -> list[torch.Tensor]:
        """The identity UNet's transformer-block input tokens for the UNSCALED source latent
        (B, 4, h, w) at t = 0: a list of ``num_states`` (B, N_i, C_i) tensors, execution order."""
        _check_latent("source_latent", source_latent, 4)
        b = source_latent.shape[0]
        text = self._text(text_embeds, b)
        x = source_latent.to(device=self.device, dtype=self.dtype)
        t = torch.zeros(b, dtype=torch.long, device=x.device)
        return self.recorder.capture(
            lambda: self.unet_id(x, t, encoder_hidden_states=text, return_dict=False), stop_early=stop_early
        )

    def predict_noise(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor | int | float,
        background_latent: torch.Tensor,
        render_latent: torch.Tensor,
        expression: torch.Tensor,
        identity_states: Sequence[torch.Tensor],
        text_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """Epsilon for the SCALED noisy latent (B, 4, h, w), with the UNSCALED background and
        render latents, the expression vector (B or 1, expression_dim) and the identity states."""
        _check_latent("noisy_latent", noisy_latent, 4)
        b, _, h, w = noisy_latent.shape
        for name, lat in (("background_latent", background_latent), ("render_latent", render_latent)):
            _check_latent(name, lat, 4)
            if lat.shape[-2:] != (h, w) or lat.shape[0] not in (1, b):
                raise InvalidInput(name, f"(1 or {b}, 4, {h}, {w}) like noisy_latent", tuple(lat.shape))
        if not isinstance(expression, torch.Tensor) or expression.ndim != 2 or expression.shape[-1] != self.expression_dim:
            raise InvalidInput("expression", f"a (B, {self.expression_dim}) {self.expression_kind} expression vector",
                               getattr(expression, "shape", type(expression)))
        if expression.shape[0] not in (1, b):
            raise InvalidInput("expression", f"batch 1 or {b}", tuple(expression.shape))
        dev, dt = self.device, self.dtype
        x = torch.cat(
            [noisy_latent.to(dev, dt), background_latent.to(dev, dt).expand(b, -1, -1, -1),
             render_latent.to(dev, dt).expand(b, -1, -1, -1)], 1
        )
        text = self._text(text_embeds, b)
        emb = self.au_aug_mlp(expression.to(dev, dt)).expand(b, -1)
        self.bank.set(identity_states)
        t = timestep
        if isinstance(t, torch.Tensor):
            t = t.to(dev)
        return self.unet_denoise(x, t, encoder_hidden_states=text, class_labels=emb, return_dict=False)[0]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Same as :meth:`predict_noise`."""
        return self.predict_noise(*args, **kwargs)

    # ---- save / load -----------------------------------------------------------------------
    def rigface_json(self) -> dict[str, Any]:
        return {
            "format": "facerig-rigface",
            "version": FORMAT_VERSION,
            "expression_kind": self.expression_kind,
            "expression_dim": self.expression_dim,
            "prompt": self.prompt,
            **({"meta": self.meta} if self.meta else {}),
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> Path:
        """``DIR/unet_id/``, ``DIR/unet_denoise/`` in the released layout + ``DIR/rigface.json``."""
        from safetensors.torch import save_file

        d = Path(save_directory)
        for name, unet, extra in (
            ("unet_id", self.unet_id, {}),
            ("unet_denoise", self.unet_denoise, {f"au_aug_mlp.{k}": v for k, v in self.au_aug_mlp.state_dict().items()}),
        ):
            sub = d / name
            sub.mkdir(parents=True, exist_ok=True)
            (sub / CONFIG_NAME).write_text(json.dumps(_released_config(unet, name == "unet_denoise"), indent=2) + "\n")
            sd = {k: v.detach().contiguous() for k, v in {**unet.state_dict(), **extra}.items()}
            save_file(sd, str(sub / WEIGHTS_NAME), metadata={"format": "pt"})
        (d / RIGFACE_JSON).write_text(json.dumps(self.rigface_json(), indent=1) + "\n")
        return d

    @classmethod
    def from_pretrained(
        cls, pretrained: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> RigFaceUNets:
        """A ``save_pretrained`` folder (or a released pair of ``unet_id/`` + ``unet_denoise/``).
        ``torch_dtype`` (as ``DiffusionPipeline.from_pretrained`` passes it) overrides ``dtype``;
        other diffusers loading options are ignored."""
        if kwargs.get("torch_dtype") is not None:
            dtype = kwargs["torch_dtype"]
        d = Path(pretrained)
        info: dict[str, Any] = {}
        if (d / RIGFACE_JSON).is_file():
            info = json.loads((d / RIGFACE_JSON).read_text())
            if info.get("format") != "facerig-rigface" or int(info.get("version", 0)) > FORMAT_VERSION:
                raise InvalidInput(str(d / RIGFACE_JSON), f"facerig-rigface format version <= {FORMAT_VERSION}",
                                   {k: info.get(k) for k in ("format", "version")})
        return _load_pair(
            d / "unet_id", d / "unet_denoise", device=device, dtype=dtype,
            expression_kind=str(info.get("expression_kind", "deep3d")),
            expression_dim=info.get("expression_dim"), prompt=str(info.get("prompt", DEFAULT_PROMPT)),
            meta=info.get("meta"),
        )


def _expression_dim(kind: str, dim: int | None) -> int:
    if kind not in EXPRESSION_KINDS:
        raise InvalidInput("expression_kind", f"one of {EXPRESSION_KINDS}", kind)
    if kind == "deep3d":
        if dim is not None and int(dim) != DEEP3D_EXPRESSION_DIM:
            raise InvalidInput("expression_dim", f"{DEEP3D_EXPRESSION_DIM} for 'deep3d'", dim)
        return DEEP3D_EXPRESSION_DIM
    if dim is None or int(dim) < 1:
        raise InvalidInput("expression_dim", "the face model's number of expression coefficients for 'facerig'", dim)
    return int(dim)


def _check_latent(name: str, x: Any, channels: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        raise InvalidInput(name, f"a (B, {channels}, h, w) latent tensor", getattr(x, "shape", type(x)))
    if not x.is_floating_point():
        raise InvalidInput(name, "a floating-point latent", x.dtype)


# ---- strict loading ----------------------------------------------------------------------------
def read_unet_config(folder: str | os.PathLike, role: str = "unet") -> dict[str, Any]:
    """``folder/config.json`` without its ``_``-prefixed keys (unknown keys are errors)."""
    f = Path(folder) / CONFIG_NAME
    if not f.is_file():
        raise AssetMissing(f"RigFace {role} UNet config ({CONFIG_NAME})", str(Path(folder)),
                           "give the diffusers folder of that UNet (config.json + diffusion_pytorch_model.safetensors)")
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(str(f), "a JSON UNet config", str(e)) from e
    return clean_unet_config(cfg, str(f))


def read_unet_weights(folder: str | os.PathLike, role: str = "unet") -> dict[str, torch.Tensor]:
    """All tensors of a diffusers UNet folder (single or sharded safetensors; safetensors only)."""
    from safetensors.torch import load_file

    d = Path(folder)
    single = d / WEIGHTS_NAME
    index = d / (WEIGHTS_NAME + ".index.json")
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        out: dict[str, torch.Tensor] = {}
        for s in shards:
            out.update(load_file(str(d / s)))
        return out
    pickles = sorted(p.name for p in d.glob("*.bin")) if d.is_dir() else []
    if pickles:
        raise InvalidInput(str(d), f"{WEIGHTS_NAME} (facerig loads safetensors only)", f"only {pickles}",
                           hint="convert the .bin to safetensors with a trusted tool first")
    raise AssetMissing(f"RigFace {role} UNet weights ({WEIGHTS_NAME})", str(d),
                       "give the diffusers folder of that UNet")


def _strict_load(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` (built on the meta device) with exact keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mism = {k: (expected[k], tuple(v.shape)) for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]}
    if missing or unexpected or mism:
        raise CheckpointMismatch(source, missing, unexpected, mism, layout=LAYOUT)
    module.load_state_dict(dict(state), strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointMismatch(source, left, [], {}, layout=LAYOUT)


def _load_pair(
    unet_id_dir: Path, unet_denoise_dir: Path, *, device: str | torch.device, dtype: torch.dtype,
    expression_kind: str, expression_dim: int | None, prompt: str = DEFAULT_PROMPT,
    meta: Mapping[str, Any] | None = None,
) -> RigFaceUNets:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInput("dtype", "a floating torch.dtype", dtype)
    id_cfg = read_unet_config(unet_id_dir, "identity")
    den_cfg = read_unet_config(unet_denoise_dir, "denoising")
    if int(id_cfg.get("in_channels", 4)) != 4:
        raise InvalidInput(f"{unet_id_dir}/{CONFIG_NAME}: in_channels", "4", id_cfg.get("in_channels"))
    if int(den_cfg.get("in_channels", 4)) != 12:
        raise InvalidInput(f"{unet_denoise_dir}/{CONFIG_NAME}: in_channels", "12 (noisy | background | render)",
                           den_cfg.get("in_channels"))
    if id_cfg.get("class_embed_type") is not None:
        raise InvalidInput(f"{unet_id_dir}/{CONFIG_NAME}: class_embed_type", "null", id_cfg.get("class_embed_type"))
    den_cfg = _denoise_config(den_cfg, f"{unet_denoise_dir}/{CONFIG_NAME}")
    id_sd = read_unet_weights(unet_id_dir, "identity")
    den_sd = read_unet_weights(unet_denoise_dir, "denoising")
    unet_id = _build_unet(id_cfg, meta=True)
    _strict_load(unet_id, id_sd, str(Path(unet_id_dir) / WEIGHTS_NAME))
    unet_den = _build_unet(den_cfg, meta=True)
    au_state = {k: den_sd.pop(k) for k in AU_KEYS if k in den_sd}
    t_dim = _time_embed_dim(unet_den)
    if expression_kind == "facerig" and expression_dim is None and "au_aug_mlp.weight" in au_state:
        expression_dim = int(au_state["au_aug_mlp.weight"].shape[-1])
    dim = _expression_dim(expression_kind, expression_dim)
    au_expected = {"au_aug_mlp.weight": (t_dim, dim), "au_aug_mlp.bias": (t_dim,)}
    try:
        _strict_load(unet_den, den_sd, str(Path(unet_denoise_dir) / WEIGHTS_NAME))
    except CheckpointMismatch as e:
        au_missing = [k for k in AU_KEYS if k not in au_state]
        raise CheckpointMismatch(e.source, [*e.missing, *au_missing], e.unexpected, e.mismatched, layout=LAYOUT) from None
    au_missing = [k for k in AU_KEYS if k not in au_state]
    au_mism = {k: (au_expected[k], tuple(v.shape)) for k, v in au_state.items() if tuple(v.shape) != au_expected[k]}
    if au_missing or au_mism:
        raise CheckpointMismatch(str(Path(unet_denoise_dir) / WEIGHTS_NAME), au_missing, [], au_mism, layout=LAYOUT)
    au = nn.Linear(dim, t_dim, device="meta")
    au.load_state_dict({k.split(".", 1)[1]: v for k, v in au_state.items()}, strict=True, assign=True)
    model = RigFaceUNets(unet_id, unet_den, au, expression_kind=expression_kind, prompt=prompt, meta=meta)
    model = model.to(device=device, dtype=dtype)
    for p in model.parameters():  # assign=True keeps the file's tensors: make them ordinary trainable params
        p.requires_grad_(True)
    log.info("RigFace UNets loaded from %s and %s (%d + %d tensors, expression %s/%d)", unet_id_dir,
             unet_denoise_dir, len(id_sd), len(den_sd) + len(au_state), expression_kind, dim)
    return model


def load_released_unets(
    unet_id_dir: str | os.PathLike,
    unet_denoise_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    expression_kind: str = "deep3d",
    expression_dim: int | None = None,
) -> RigFaceUNets:
    """The authors' released ``unet_id/`` and ``unet_denoise/`` diffusers folders, STRICTLY: every
    tensor of each file must be a parameter of a stock ``UNet2DConditionModel`` of its config
    (plus ``au_aug_mlp.weight`` / ``.bias`` in the denoiser), every parameter present, every shape
    equal, else :class:`~facerig.errors.CheckpointMismatch` naming the keys. ``_``-prefixed config
    keys are ignored; other unknown config keys are errors."""
    return _load_pair(Path(unet_id_dir), Path(unet_denoise_dir), device=device, dtype=dtype,
                      expression_kind=expression_kind, expression_dim=expression_dim)


def _latest_checkpoint(folder: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    if not folder.is_dir():
        return None
    for p in folder.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


def _is_unet_dir(p: Path) -> bool:
    return (p / CONFIG_NAME).is_file()


def load_rigface_weights(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> RigFaceUNets:
    """RigFace weights from any of: a facerig ``save_pretrained`` folder (``rigface.json``), a
    facerig pipeline folder (``unets/``), a facerig training run (``final/``), a released pair
    directly (``unet_id/`` + ``unet_denoise/``), or a release root
    (``pre_trained/unet_id/checkpoint-N`` + ``pre_trained/unet_denoise/checkpoint-N``, the highest N)."""
    root = Path(path)
    looked: list[str] = []
    for d in (root, root / "unets", root / "final", root / "final" / "pipeline" / "unets", root / "pipeline" / "unets"):
        looked.append(str(d / RIGFACE_JSON))
        if (d / RIGFACE_JSON).is_file():
            return RigFaceUNets.from_pretrained(d, device=device, dtype=dtype)
    for base in (root, root / "pre_trained"):
        pair = []
        for name in ("unet_id", "unet_denoise"):
            sub = base / name
            looked.append(str(sub))
            if _is_unet_dir(sub):
                pair.append(sub)
            else:
                ck = _latest_checkpoint(sub)
                if ck is not None and _is_unet_dir(ck):
                    pair.append(ck)
        if len(pair) == 2:
            return load_released_unets(pair[0], pair[1], device=device, dtype=dtype)
    raise AssetMissing(
        "RigFace weights", ", ".join(looked),
        "give the release root (pre_trained/unet_id/checkpoint-*, pre_trained/unet_denoise/checkpoint-*), "
        "the two folders unet_id/ + unet_denoise/, or a facerig RigFace run / pipeline folder",
    )


def clone_unets(model: RigFaceUNets) -> RigFaceUNets:
    """A deep copy with its own recorder and bank (``copy.deepcopy`` alone would leave the copy's
    identity UNet hooked to the original's recorder)."""
    new = copy.deepcopy(model)
    new.install_processors()
    return new
