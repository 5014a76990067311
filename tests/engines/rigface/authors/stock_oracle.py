"""An independent second reading of the released RigFace on STOCK diffusers, for the equality tests.

Written from the facts in ../shared/design/RIGFACE.md (not from the authors' code) with hooks and an
attention processor on stock ``UNet2DConditionModel``s, so the authors' reference outputs can be
checked without facerig's engine, and facerig's engine against two readings instead of one:

- identity states: a forward pre-hook on every ``BasicTransformerBlock`` of the identity UNet records
  its input tokens, in execution order;
- FaceFusion: a pre-hook hands block i the i-th state; its self-attention processor takes Q from the
  block's own norm1 tokens and K/V from ``[own ; norm1(identity)]`` (equal to joining the tokens,
  norm1 over both, attention over all, residual, keep the own half: norm1 is per token);
- expression: a forward hook adds ``au_aug_mlp(expression)`` to the time embedding's output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _transformer_blocks(unet: nn.Module) -> list[nn.Module]:
    from diffusers.models.attention import BasicTransformerBlock

    return [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


def _load_unet(folder: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Stock UNet from a released folder; returns it and the tensors it does not own."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    cfg = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}
    unet = UNet2DConditionModel.from_config(cfg)
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    own = set(unet.state_dict())
    extra = {k: v for k, v in state.items() if k not in own}
    unet.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return unet.eval(), extra


class _FusionProcessor:
    """Self-attention whose K/V also see the identity tokens handed to this block."""

    def __init__(self, norm1: nn.Module) -> None:
        self.norm1 = norm1
        self.identity: torch.Tensor | None = None

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        assert self.identity is not None, "no identity state handed to this block"
        ident = self.norm1(self.identity.to(hidden_states.dtype))
        if ident.shape[0] != hidden_states.shape[0]:
            ident = ident.expand(hidden_states.shape[0], -1, -1)
        joined = torch.cat([hidden_states, ident], dim=1)
        q, k, v = attn.to_q(hidden_states), attn.to_k(joined), attn.to_v(joined)
        b, h = q.shape[0], attn.heads
        d = q.shape[-1] // h
        q, k, v = (x.view(b, -1, h, d).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, h * d)
        return attn.to_out[1](attn.to_out[0](out))


class StockRigFace:
    """Released ``unet_id/`` + ``unet_denoise/`` folders run on stock diffusers (see module docstring)."""

    def __init__(self, unet_id_dir: str | Path, unet_denoise_dir: str | Path) -> None:
        self.unet_id, extra_id = _load_unet(Path(unet_id_dir))
        self.unet_denoise, extra = _load_unet(Path(unet_denoise_dir))
        if extra_id or set(extra) != {"au_aug_mlp.weight", "au_aug_mlp.bias"}:
            raise ValueError(f"unexpected extra keys: {sorted(extra_id)} / {sorted(extra)}")
        w = extra["au_aug_mlp.weight"]
        self.au_aug_mlp = nn.Linear(w.shape[1], w.shape[0])
        self.au_aug_mlp.load_state_dict({"weight": w, "bias": extra["au_aug_mlp.bias"]})
        self._recorded: list[torch.Tensor] = []
        for blk in _transformer_blocks(self.unet_id):
            blk.register_forward_pre_hook(self._record, with_kwargs=True)
        self._queue: list[torch.Tensor] = []
        for blk in _transformer_blocks(self.unet_denoise):
            proc = _FusionProcessor(blk.norm1)
            blk.attn1.set_processor(proc)
            blk.register_forward_pre_hook(self._hand(proc), with_kwargs=True)
        self._expression: torch.Tensor | None = None
        self.unet_denoise.time_embedding.register_forward_hook(self._add_expression)

    def _record(self, _m: nn.Module, args: tuple, kwargs: dict) -> None:
        self._recorded.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def _hand(self, proc: _FusionProcessor) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple, _kwargs: dict) -> None:
            proc.identity = self._queue.pop(0)

        return hook

    def _add_expression(self, _m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
        assert self._expression is not None
        return out + self.au_aug_mlp(self._expression.to(out.dtype))

    @torch.no_grad()
    def identity_states(self, source_latent: torch.Tensor, text_embeds: torch.Tensor) -> list[torch.Tensor]:
        self._recorded = []
        self.unet_id(source_latent, 0, encoder_hidden_states=text_embeds)
        states, self._recorded = self._recorded, []
        return states

    @torch.no_grad()
    def predict_noise(self, noisy_latent: torch.Tensor, timestep: torch.Tensor | int,
                      background_latent: torch.Tensor, render_latent: torch.Tensor, expression: torch.Tensor,
                      identity_states: list[torch.Tensor], text_embeds: torch.Tensor) -> torch.Tensor:
        self._queue = list(identity_states)
        self._expression = expression
        try:
            x = torch.cat([noisy_latent, background_latent, render_latent], dim=1)
            out = self.unet_denoise(x, timestep, encoder_hidden_states=text_embeds).sample
        finally:
            left, self._queue, self._expression = len(self._queue), [], None
        if left:
            raise ValueError(f"{left} identity states were not consumed")
        return out


def release_unipc(scheduler_config: dict[str, Any], **overrides: Any):
    """diffusers' UniPC configured as the release runs it (diffusers 0.22 from the SD 1.5 config):
    linspace spacing, order 2, bh2, predicting x0, epsilon, and the 0.22 last step, which ends at
    sigma(t=0) rather than at 0 (``final_sigmas_type="sigma_min"`` in later diffusers)."""
    from diffusers import UniPCMultistepScheduler

    kw: dict[str, Any] = dict(timestep_spacing="linspace", solver_order=2, solver_type="bh2", predict_x0=True,
                              prediction_type="epsilon", final_sigmas_type="sigma_min")
    kw.update(overrides)
    cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    return UniPCMultistepScheduler.from_config(cfg, **kw)


@torch.no_grad()
def run_unipc(eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], init_noise: torch.Tensor, scheduler: Any,
              steps: int) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Single-batch sampling loop; returns (final latent, latent after every step, timesteps)."""
    scheduler.set_timesteps(steps)
    lat = init_noise * scheduler.init_noise_sigma
    per_step = []
    for t in scheduler.timesteps:
        e = eps(scheduler.scale_model_input(lat, t), t)
        lat = scheduler.step(e, t, lat, return_dict=False)[0]
        per_step.append(lat.clone())
    return lat, per_step, scheduler.timesteps.clone()
