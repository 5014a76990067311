"""InstaFace's networks on stock diffusers models (docs/instaface.md).

:class:`InstaFaceModel` holds

* ``guidance_unet`` -- the Guidance Network: a stock ``UNet2DConditionModel`` with ``in_channels``
  12 over the 3D Fusion Controller's latents ``[albedo | normal | lambertian render]`` (4 channels
  each). Forward pre-hooks on each transformer block's ``attn1`` record the tokens that layer is
  about to attend over (after the block's ``norm1``) into a
  :class:`~facerig.engines.sd.reference.ReferenceBank`, in execution order; the guidance UNet stops
  right after the last one is recorded (its remaining layers cannot change a recorded feature).
* ``diffusion_unet`` -- the Diffusion Network: a stock ``UNet2DConditionModel`` (``in_channels`` 4,
  the noisy latent). Every ``attn1`` has a :class:`GuidanceAddProcessor`: it ADDS the matching
  guidance feature to the tokens before the stock self-attention computation (InstaFace: "features
  added to the diffusion network's features before each self-attention layer").
* ``projection`` -- the Identity Preserver's :class:`IdentityProjection`: [CLIP image embedding ;
  face-recognition embedding] -> ``num_tokens`` tokens of the UNets' ``cross_attention_dim``.

The cross-attention context of BOTH UNets is ``[text embedding ; identity tokens]`` (the text part
optional: ``text_embeds=None`` uses the identity tokens alone).

Layout written by :meth:`InstaFaceModel.save_pretrained` (safetensors only, loaded with strict keys)::

    DIR/guidance_unet/config.json, diffusion_pytorch_model.safetensors   (conv_in (C, 12, 3, 3))
    DIR/diffusion_unet/config.json, diffusion_pytorch_model.safetensors
    DIR/projection/config.json, diffusion_pytorch_model.safetensors
    DIR/instaface.json   (format, version, guidance_timestep, guidance_weight, prompt[, meta])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from facerig.errors import AssetMissing, CheckpointMismatch, InvalidInput

from ..sd.reference import ReferenceBank, ReferenceRecorder, strip_reference_hooks, transformer_blocks
from ..sd.unet_configs import SD15_UNET_CONFIG, TINY_UNET_CONFIG, clean_unet_config

__all__ = [
    "CONDITION_CHANNELS",
    "DEFAULT_PROMPT",
    "FACE_EMBED_DIM",
    "GUIDANCE_TIMESTEPS",
    "SD15_UNET_CONFIG",
    "TINY_UNET_CONFIG",
    "GuidanceAddProcessor",
    "IdentityProjection",
    "InstaFaceModel",
    "guidance_processors",
]

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "A close up of a person."
FACE_EMBED_DIM = 128             # dlib / facerig port face-recognition descriptor
CONDITION_CHANNELS = 12          # 3 buffers x 4 latent channels
GUIDANCE_TIMESTEPS = ("denoise", "zero")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
INSTAFACE_JSON = "instaface.json"
FORMAT = "facerig-instaface"
FORMAT_VERSION = 1
LAYOUT = "the facerig InstaFace layout (guidance_unet/, diffusion_unet/, projection/)"



# ---- identity projection -------------------------------------------------------------------------
class _ProjectionLayer(nn.Module):
    """Pre-norm attention of the output queries over [queries ; input tokens], then a feed-forward."""

    def __init__(self, width: int, heads: int, ff_mult: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, width * ff_mult), nn.GELU(), nn.Linear(width * ff_mult, width))

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        qn = self.norm_q(q)
        kv = torch.cat([qn, self.norm_kv(x)], 1)
        q = q + self.attn(qn, kv, kv, need_weights=False)[0]
        return q + self.ff(self.norm_ff(q))


class IdentityProjection(ModelMixin, ConfigMixin):
    """The Identity Preserver's projection module (attention + feed-forward layers).

    Inputs: ``face`` (B, ``face_dim``) face-recognition descriptors and, when ``clip_dim`` > 0,
    ``clip`` (B, ``clip_dim``) CLIP image embeddings or None. Each embedding becomes one input
    token (LayerNorm + Linear to ``width``, plus a learned type embedding); ``num_tokens`` learned
    queries attend over [queries ; input tokens] through ``depth`` layers of attention + feed-forward;
    a final LayerNorm + Linear maps them to ``cross_attention_dim``. With ``clip=None`` the CLIP
    token is simply absent from the keys (face-recognition tokens only).
    """

    @register_to_config
    def __init__(self, cross_attention_dim: int = 768, face_dim: int = FACE_EMBED_DIM, clip_dim: int = 0,
                 num_tokens: int = 4, width: int = 768, depth: int = 2, heads: int = 8, ff_mult: int = 4):
        super().__init__()
        for name, v, lo in (("cross_attention_dim", cross_attention_dim, 1), ("face_dim", face_dim, 1),
                            ("clip_dim", clip_dim, 0), ("num_tokens", num_tokens, 1), ("width", width, 1),
                            ("depth", depth, 1), ("heads", heads, 1), ("ff_mult", ff_mult, 1)):
            if int(v) < lo:
                raise InvalidInput(name, f"an integer >= {lo}", v)
        if width % heads:
            raise InvalidInput("width", f"a multiple of heads ({heads})", width)
        self.face_in = nn.Sequential(nn.LayerNorm(face_dim), nn.Linear(face_dim, width))
        self.clip_in = nn.Sequential(nn.LayerNorm(clip_dim), nn.Linear(clip_dim, width)) if clip_dim else None
        self.type_embed = nn.Parameter(torch.zeros(2, width))
        self.queries = nn.Parameter(torch.randn(num_tokens, width) * width**-0.5)
        self.layers = nn.ModuleList(_ProjectionLayer(width, heads, ff_mult) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, cross_attention_dim)

    @property
    def uses_clip(self) -> bool:
        return self.clip_in is not None

    def forward(self, face: torch.Tensor, clip: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_tokens, cross_attention_dim) identity tokens."""
        cfg: Any = self.config
        if not isinstance(face, torch.Tensor) or face.ndim != 2 or face.shape[1] != cfg.face_dim:
            raise InvalidInput("face_embedding", f"a (B, {cfg.face_dim}) face-recognition embedding",
                               getattr(face, "shape", type(face)))
        p = self.proj_out.weight
        toks = [self.face_in(face.to(p)) + self.type_embed[0]]
        if clip is not None:
            if self.clip_in is None:
                raise InvalidInput("clip_embedding", "None (this projection was built without a CLIP input)",
                                   tuple(clip.shape))
            if clip.ndim != 2 or clip.shape[1] != cfg.clip_dim or clip.shape[0] != face.shape[0]:
                raise InvalidInput("clip_embedding", f"a ({face.shape[0]}, {cfg.clip_dim}) CLIP image embedding",
                                   tuple(clip.shape))
            toks.append(self.clip_in(clip.to(p)) + self.type_embed[1])
        x = torch.stack(toks, 1)
        q = self.queries[None].expand(face.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, x)
        return self.proj_out(self.norm_out(q))


# ---- guidance feature injection ------------------------------------------------------------------
class GuidanceAddProcessor:
    """``attn1`` processor of the diffusion UNet's transformer block ``index``: adds
    ``weight * bank[index]`` (the guidance UNet's matching attn1 input) to the hidden states, then
    runs diffusers' stock SDPA self-attention. With the bank inactive it is stock self-attention.
    ``calls`` counts the additions (tests check every block receives its feature)."""

    def __init__(self, bank: ReferenceBank, index: int, weight: float = 1.0):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.bank = bank
        self.index = int(index)
        self.weight = float(weight)
        self.calls = 0
        self._stock = AttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise InvalidInput("attn1", "a self-attention layer for the guidance processor", "cross-attention input")
        if self.bank.active:
            hidden_states = hidden_states + self.weight * self.bank.get(self.index, hidden_states)
            self.calls += 1
        return self._stock(attn, hidden_states, None, attention_mask, temb)


def guidance_processors(unet: nn.Module) -> list[GuidanceAddProcessor]:
    """The guidance processors installed on ``unet`` (execution order)."""
    return [b.attn1.processor for b in transformer_blocks(unet) if isinstance(b.attn1.processor, GuidanceAddProcessor)]


# ---- the model -----------------------------------------------------------------------------------


def _build_unet(cfg: Mapping[str, Any]) -> Any:
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel(**cfg)
    except (TypeError, ValueError) as e:
        raise InvalidInput("unet config", "a valid UNet2DConditionModel config", str(e)) from e


def _check_latent(name: str, x: Any, channels: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        raise InvalidInput(name, f"a (B, {channels}, h, w) latent tensor", getattr(x, "shape", type(x)))
    if not x.is_floating_point():
        raise InvalidInput(name, "a floating-point latent", x.dtype)


class InstaFaceModel(nn.Module):
    """Guidance UNet, diffusion UNet and identity projection (see the module docstring).

    ``guidance_timestep``: ``"denoise"`` (the guidance UNet runs at the diffusion step's timestep,
    once per step) or ``"zero"`` (at t = 0: its features do not depend on the step, so a sampler
    computes them once). ``guidance_weight`` scales the added features (1 = plain addition).
    """

    def __init__(self, guidance_unet: Any, diffusion_unet: Any, projection: IdentityProjection, *,
                 guidance_timestep: str = "denoise", guidance_weight: float = 1.0, prompt: str = DEFAULT_PROMPT,
                 meta: Mapping[str, Any] | None = None):
        super().__init__()
        for name, u, ch in (("guidance_unet", guidance_unet, CONDITION_CHANNELS), ("diffusion_unet", diffusion_unet, 4)):
            if not hasattr(u, "config") or not hasattr(u, "time_embedding"):
                raise InvalidInput(name, "a diffusers UNet2DConditionModel", type(u).__name__)
            if int(u.config.in_channels) != ch:
                raise InvalidInput(f"{name}.config.in_channels", str(ch), u.config.in_channels)
        if not isinstance(projection, IdentityProjection):
            raise InvalidInput("projection", "an IdentityProjection", type(projection).__name__)
        d = int(diffusion_unet.config.cross_attention_dim)
        for name, v in (("guidance_unet.config.cross_attention_dim", guidance_unet.config.cross_attention_dim),
                        ("projection.config.cross_attention_dim", projection.config.cross_attention_dim)):
            if int(v) != d:
                raise InvalidInput(name, f"{d} (the diffusion UNet's cross_attention_dim)", v)
        if guidance_timestep not in GUIDANCE_TIMESTEPS:
            raise InvalidInput("guidance_timestep", f"one of {GUIDANCE_TIMESTEPS}", guidance_timestep)
        self.guidance_unet = guidance_unet
        self.diffusion_unet = diffusion_unet
        self.projection = projection
        self.guidance_timestep = guidance_timestep
        self.guidance_weight = float(guidance_weight)
        self.prompt = str(prompt)
        #: free-form JSON-able facts saved with the weights (e.g. ``personalized_for``)
        self.meta: dict[str, Any] = dict(meta or {})
        self.install_processors()

    def install_processors(self) -> None:
        """(Re)install the guidance recorder and the diffusion UNet's guidance processors (e.g. after
        a ``set_attn_processor`` call or a ``copy.deepcopy``)."""
        strip_reference_hooks(self.guidance_unet)
        self.recorder = ReferenceRecorder(self.guidance_unet, point="post_norm1")
        blocks = transformer_blocks(self.diffusion_unet)
        if len(blocks) != self.recorder.bank.num_slots:
            raise InvalidInput("diffusion_unet", f"{self.recorder.bank.num_slots} transformer blocks (as guidance_unet)",
                               len(blocks))
        self.bank = ReferenceBank(len(blocks))
        for i, blk in enumerate(blocks):
            blk.attn1.set_processor(GuidanceAddProcessor(self.bank, i, self.guidance_weight))

    @property
    def num_blocks(self) -> int:
        """Transformer blocks per UNet (16 for SD 1.5's layout)."""
        return self.bank.num_slots

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def cross_attention_dim(self) -> int:
        return int(self.diffusion_unet.config.cross_attention_dim)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, unet_config: Mapping[str, Any], *, clip_dim: int = 0, num_tokens: int = 4,
                    projection_width: int | None = None, projection_depth: int = 2, projection_heads: int | None = None,
                    seed: int | None = None, **kwargs: Any) -> InstaFaceModel:
        """Freshly initialised networks of ``unet_config`` (``in_channels`` set to 12 / 4)."""
        cfg = clean_unet_config(unet_config, "unet_config")
        d = int(cfg.get("cross_attention_dim", 768))
        width = int(projection_width or d)
        heads = int(projection_heads or max(1, width // 64))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            g = _build_unet({**cfg, "in_channels": CONDITION_CHANNELS})
            u = _build_unet({**cfg, "in_channels": 4})
            proj = IdentityProjection(cross_attention_dim=d, clip_dim=clip_dim, num_tokens=num_tokens, width=width,
                                      depth=projection_depth, heads=heads)
        return cls(g, u, proj, **kwargs)

    @classmethod
    def from_sd_unet(cls, unet: Any, *, clip_dim: int = 0, num_tokens: int = 4, projection_depth: int = 2,
                     seed: int | None = None, **kwargs: Any) -> InstaFaceModel:
        """Both UNets initialised from one SD UNet (training from SD 1.5): the diffusion UNet a copy;
        the guidance UNet a copy whose conv_in weight is SD's repeated over the three 4-channel
        condition groups and divided by 3 (so on three equal latents it answers exactly as SD does);
        the projection freshly initialised (seeded)."""
        cfg = clean_unet_config(dict(unet.config), "unet.config")
        if int(cfg["in_channels"]) != 4:
            raise InvalidInput("unet.config.in_channels", "4 (a text-to-image SD UNet)", cfg["in_channels"])
        sd = unet.state_dict()
        u = _build_unet(cfg)
        u.load_state_dict(sd, strict=True)
        g = _build_unet({**cfg, "in_channels": CONDITION_CHANNELS})
        sd2 = dict(sd)
        sd2["conv_in.weight"] = sd["conv_in.weight"].repeat(1, CONDITION_CHANNELS // 4, 1, 1) / (CONDITION_CHANNELS // 4)
        g.load_state_dict(sd2, strict=True)
        d = int(cfg.get("cross_attention_dim", 768))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(int(seed))
            proj = IdentityProjection(cross_attention_dim=d, clip_dim=clip_dim, num_tokens=num_tokens, width=d,
                                      depth=projection_depth, heads=max(1, d // 64))
        p = next(unet.parameters())
        return cls(g, u, proj, **kwargs).to(device=p.device, dtype=p.dtype)

    # ---- forward -----------------------------------------------------------------------------
    def identity_tokens(self, face_embedding: torch.Tensor, clip_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_tokens, D) tokens of the Identity Preserver."""
        return self.projection(face_embedding, clip_embedding)

    def context(self, identity_tokens: torch.Tensor, text_embeds: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The cross-attention context ``[text ; identity tokens]`` for ``batch`` rows."""
        dev, dt = self.device, self.dtype
        if not isinstance(identity_tokens, torch.Tensor) or identity_tokens.ndim != 3 \
                or identity_tokens.shape[-1] != self.cross_attention_dim:
            raise InvalidInput("identity_tokens", f"a (B, N, {self.cross_attention_dim}) tensor",
                               getattr(identity_tokens, "shape", type(identity_tokens)))
        parts = [identity_tokens]
        if text_embeds is not None:
            if not isinstance(text_embeds, torch.Tensor) or text_embeds.ndim != 3 \
                    or text_embeds.shape[-1] != self.cross_attention_dim:
                raise InvalidInput("text_embeds", f"a (B, 77, {self.cross_attention_dim}) tensor",
                                   getattr(text_embeds, "shape", type(text_embeds)))
            parts.insert(0, text_embeds)
        out = []
        for name, p in zip(("text_embeds", "identity_tokens")[-len(parts):], parts, strict=True):
            if p.shape[0] not in (1, batch):
                raise InvalidInput(name, f"batch 1 or {batch}", tuple(p.shape))
            out.append(p.to(dev, dt).expand(batch, -1, -1))
        return torch.cat(out, 1)

    def guidance_features(self, condition_latents: torch.Tensor, timestep: torch.Tensor | int | float,
                          context: torch.Tensor) -> list[torch.Tensor]:
        """The guidance UNet's attn1 inputs (``num_blocks`` (B, N_i, C_i) tensors, execution order)
        for the fused condition latents (B, 12, h, w) at ``timestep`` (ignored for "zero")."""
        _check_latent("condition_latents", condition_latents, CONDITION_CHANNELS)
        x = condition_latents.to(self.device, self.dtype)
        b = x.shape[0]
        if self.guidance_timestep == "zero":
            t: Any = torch.zeros(b, dtype=torch.long, device=x.device)
        else:
            t = timestep.to(x.device) if isinstance(timestep, torch.Tensor) else timestep
        ctx = context if context.shape[0] == b else context[:1].expand(b, -1, -1)
        return self.recorder.capture(lambda: self.guidance_unet(x, t, encoder_hidden_states=ctx, return_dict=False))

    def predict_noise(self, noisy_latent: torch.Tensor, timestep: torch.Tensor | int | float,
                      condition_latents: torch.Tensor, identity_tokens: torch.Tensor,
                      text_embeds: torch.Tensor | None = None,
                      guidance_features: Sequence[torch.Tensor] | None = None, *,
                      use_guidance: bool = True) -> torch.Tensor:
        """Epsilon for the SCALED noisy latent (B, 4, h, w) given the fused condition latents
        (1 or B, 12, h, w), the identity tokens (1 or B, N, D) and optional text embeddings.
        ``guidance_features``: precomputed (e.g. once per sampling with ``guidance_timestep="zero"``).
        ``use_guidance=False``: the diffusion UNet alone (stock self-attention; the guidance UNet is not run)."""
        _check_latent("noisy_latent", noisy_latent, 4)
        b, _, h, w = noisy_latent.shape
        _check_latent("condition_latents", condition_latents, CONDITION_CHANNELS)
        if condition_latents.shape[-2:] != (h, w) or condition_latents.shape[0] not in (1, b):
            raise InvalidInput("condition_latents", f"(1 or {b}, {CONDITION_CHANNELS}, {h}, {w}) like noisy_latent",
                               tuple(condition_latents.shape))
        ctx = self.context(identity_tokens, text_embeds, b)
        t = timestep.to(self.device) if isinstance(timestep, torch.Tensor) else timestep
        if use_guidance:
            feats = guidance_features
            if feats is None:
                feats = self.guidance_features(condition_latents, t, ctx[: condition_latents.shape[0]])
            self.bank.set(feats)
        else:
            self.bank.clear()
            self.bank.disable()
        x = noisy_latent.to(self.device, self.dtype)
        return self.diffusion_unet(x, t, encoder_hidden_states=ctx, return_dict=False)[0]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Same as :meth:`predict_noise`."""
        return self.predict_noise(*args, **kwargs)

    # ---- save / load -------------------------------------------------------------------------
    def instaface_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "guidance_timestep": self.guidance_timestep,
                "guidance_weight": self.guidance_weight, "prompt": self.prompt,
                **({"meta": self.meta} if self.meta else {})}

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> Path:
        """Write the layout of the module docstring (safetensors)."""
        import diffusers
        from safetensors.torch import save_file

        d = Path(save_directory)
        for name, mod in self._parts().items():
            sub = d / name
            sub.mkdir(parents=True, exist_ok=True)
            cfg = {k: v for k, v in dict(mod.config).items() if not str(k).startswith("_")}
            cfg = {"_class_name": type(mod).__name__, "_diffusers_version": diffusers.__version__, **cfg}
            (sub / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
            sd = {k: v.detach().contiguous() for k, v in mod.state_dict().items()}
            save_file(sd, str(sub / WEIGHTS_NAME), metadata={"format": "pt"})
        (d / INSTAFACE_JSON).write_text(json.dumps(self.instaface_json(), indent=1) + "\n")
        return d

    def _parts(self) -> dict[str, Any]:
        return {"guidance_unet": self.guidance_unet, "diffusion_unet": self.diffusion_unet,
                "projection": self.projection}

    @classmethod
    def from_pretrained(cls, pretrained: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, **kwargs: Any) -> InstaFaceModel:
        """A :meth:`save_pretrained` folder, with strict keys and shapes (``torch_dtype`` overrides ``dtype``)."""
        from safetensors.torch import load_file

        if kwargs.get("torch_dtype") is not None:
            dtype = kwargs["torch_dtype"]
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InvalidInput("dtype", "a floating torch.dtype", dtype)
        d = Path(pretrained)
        info_f = d / INSTAFACE_JSON
        if not info_f.is_file():
            raise AssetMissing("InstaFace weights (instaface.json)", str(d),
                               "give a folder written by InstaFaceModel.save_pretrained or facerig train/personalize")
        info = json.loads(info_f.read_text())
        if info.get("format") != FORMAT or int(info.get("version", 0)) > FORMAT_VERSION:
            raise InvalidInput(str(info_f), f"{FORMAT} format version <= {FORMAT_VERSION}",
                               {k: info.get(k) for k in ("format", "version")})
        mods: dict[str, Any] = {}
        for name in ("guidance_unet", "diffusion_unet", "projection"):
            sub = d / name
            cf, wf = sub / CONFIG_NAME, sub / WEIGHTS_NAME
            if not cf.is_file() or not wf.is_file():
                raise AssetMissing(f"InstaFace {name} ({CONFIG_NAME} + {WEIGHTS_NAME})", str(sub), f"{LAYOUT} is expected")
            try:
                cfg = json.loads(cf.read_text())
            except json.JSONDecodeError as e:
                raise InvalidInput(str(cf), "a JSON config", str(e)) from e
            if name == "projection":
                mod = IdentityProjection.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
            else:
                mod = _build_unet(clean_unet_config(cfg, str(cf)))
            state = load_file(str(wf))
            expected = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
            missing = [k for k in expected if k not in state]
            unexpected = [k for k in state if k not in expected]
            mism = {k: (expected[k], tuple(v.shape)) for k, v in state.items()
                    if k in expected and tuple(v.shape) != expected[k]}
            if missing or unexpected or mism:
                raise CheckpointMismatch(str(wf), missing, unexpected, mism, layout=LAYOUT)
            mod.load_state_dict(state, strict=True)
            mods[name] = mod
        model = cls(mods["guidance_unet"], mods["diffusion_unet"], mods["projection"],
                    guidance_timestep=str(info.get("guidance_timestep", "denoise")),
                    guidance_weight=float(info.get("guidance_weight", 1.0)),
                    prompt=str(info.get("prompt", DEFAULT_PROMPT)), meta=info.get("meta"))
        log.info("InstaFace networks loaded from %s", d)
        return model.to(device=device, dtype=dtype)
