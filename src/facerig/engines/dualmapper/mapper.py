"""The dual mapper pair of one target expression (METHODS.md, "Dual Mappers").

:class:`DualMapper` maps a source's appearance latent ``w`` (B, N, D) and expression ``psi`` (B, K)
to DELTAS ``dw`` (B, N, D) and ``dpsi`` (B, K):

* texture mapper: each w token -> ``Linear(D, hidden)`` + a learned position embedding per token ->
  LayerNorm;
* emotion mapper: each expression coefficient ``k`` becomes a token
  ``psi_k * value_emb_k + coeff_emb_k + Linear(1, hidden)(psi_k)`` (a learned direction scaled by the
  value, a learned identity of the coefficient, and a shared value projection) -> LayerNorm;
* ``layers`` blocks, each: self-attention within the w tokens and within the psi tokens, then
  cross-attention both ways computed from the same states (w tokens query the psi tokens, psi tokens
  query the w tokens), then a GELU MLP per stream; pre-norm residual blocks on
  ``torch.nn.MultiheadAttention`` (stock PyTorch blocks);
* heads: ``Linear(hidden, D)`` per w token -> dw and, per psi token k, its own row
  ``<h_k, a_k> + b_k`` -> dpsi_k; both ZERO-initialised, so a fresh mapper is the identity edit (dw = 0, dpsi = 0) while its
  gradients are not zero (the heads' weight gradients see the hidden states).

``apply(w, psi) = (w + dw, clamp(psi + dpsi, psi_lower, psi_upper))`` (bounds optional, per
coefficient, e.g. [0, 1] for blendshape weights). ``compose(mappers, w, psi)`` applies several pairs
one after another: mapper 2 sees mapper 1's output, and so on (edits compose like function
composition; the order matters in general, and each mapper was trained on unedited sources, so a
long chain moves later mappers off their training distribution).

The config records the target expression (``target``, ``text``) and ``psi_names``, so a saved pair
says what it edits and which generator layout it expects. Weights save as safetensors through
diffusers' ``save_pretrained`` / ``from_pretrained`` (bit-exact round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from facerig.errors import InvalidInput

__all__ = ["DualMapper", "compose", "mirror_pairs"]


class _Block(nn.Module):
    """Self-attention per stream, cross-attention both ways, MLP per stream (pre-norm residuals)."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm_w1, self.norm_p1 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.self_w = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.self_p = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm_w2, self.norm_p2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.cross_w = nn.MultiheadAttention(hidden, heads, batch_first=True)  # w queries psi
        self.cross_p = nn.MultiheadAttention(hidden, heads, batch_first=True)  # psi queries w
        self.norm_w3, self.norm_p3 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.mlp_w = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(), nn.Linear(mlp_ratio * hidden, hidden))
        self.mlp_p = nn.Sequential(nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(), nn.Linear(mlp_ratio * hidden, hidden))

    def forward(self, hw: torch.Tensor, hp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.norm_w1(hw)
        hw = hw + self.self_w(a, a, a, need_weights=False)[0]
        b = self.norm_p1(hp)
        hp = hp + self.self_p(b, b, b, need_weights=False)[0]
        a, b = self.norm_w2(hw), self.norm_p2(hp)
        hw, hp = (hw + self.cross_w(a, b, b, need_weights=False)[0],
                  hp + self.cross_p(b, a, a, need_weights=False)[0])
        hw = hw + self.mlp_w(self.norm_w3(hw))
        hp = hp + self.mlp_p(self.norm_p3(hp))
        return hw, hp


class _PerCoefficientHead(nn.Module):
    """``dpsi_k = <h_k, weight_k> + bias_k``: one output row per expression coefficient. A head
    shared by all coefficients (one Linear(hidden, 1)) learned mostly its common bias first and moved
    every coefficient together (+0.07 on all 51 blendshapes of a smile mapper after 100 steps)."""

    def __init__(self, n: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, hidden))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, K, hidden) -> (B, K)
        return (h * self.weight).sum(-1) + self.bias


class DualMapper(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' own config_name clash
    """Texture mapper (-> dw) and emotion mapper (-> dpsi) of one target expression, joined by
    cross-attention. See the module docstring.

    Config: ``w_tokens`` N and ``w_dim`` D of the generator's ``w_shape``, ``n_psi`` K and
    ``psi_names`` (K names, or empty), ``hidden`` width, attention ``heads``, ``layers`` blocks,
    ``target`` (e.g. ``"smile"``) and ``text`` (the prompt/description it was trained for),
    ``psi_lower`` / ``psi_upper`` (K bounds each, or None for unbounded), ``generator`` (the name of
    the generator it was trained against, informational), ``mirror_pairs`` ((left, right) index pairs
    of coefficients whose deltas are tied to their mean: a symmetric target moves both sides alike;
    see :func:`mirror_pairs`).
    """

    @register_to_config
    def __init__(
        self,
        w_tokens: int = 14,
        w_dim: int = 512,
        n_psi: int = 52,
        psi_names: Sequence[str] = (),
        hidden: int = 256,
        heads: int = 4,
        layers: int = 2,
        target: str = "",
        text: str = "",
        psi_lower: Sequence[float] | None = None,
        psi_upper: Sequence[float] | None = None,
        generator: str = "",
        mirror_pairs: Sequence[Sequence[int]] | None = None,
    ):
        super().__init__()
        for name, v in (("w_tokens", w_tokens), ("w_dim", w_dim), ("n_psi", n_psi), ("hidden", hidden),
                        ("heads", heads), ("layers", layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidInput(name, "a positive integer", v)
        if hidden % heads:
            raise InvalidInput("heads", f"a divisor of hidden={hidden}", heads)
        if psi_names and len(psi_names) != n_psi:
            raise InvalidInput("psi_names", f"{n_psi} names (n_psi) or none", len(psi_names))
        for name, bound in (("psi_lower", psi_lower), ("psi_upper", psi_upper)):
            if bound is not None and len(bound) != n_psi:
                raise InvalidInput(name, f"{n_psi} bounds (n_psi) or None", len(bound))
        if psi_lower is not None and psi_upper is not None and any(
                lo > hi for lo, hi in zip(psi_lower, psi_upper, strict=True)):
            raise InvalidInput("psi_lower", "bounds <= psi_upper", list(psi_lower))
        pairs = [tuple(int(i) for i in pr) for pr in (mirror_pairs or [])]
        if any(len(pr) != 2 or not all(0 <= i < n_psi for i in pr) for pr in pairs):
            raise InvalidInput("mirror_pairs", f"(left, right) index pairs in [0, {n_psi})", list(mirror_pairs or []))
        self._mirror = (torch.tensor([pr[0] for pr in pairs], dtype=torch.long),
                        torch.tensor([pr[1] for pr in pairs], dtype=torch.long))
        self.w_in = nn.Linear(w_dim, hidden)
        self.w_pos = nn.Parameter(torch.randn(w_tokens, hidden) * 0.02)
        self.w_norm = nn.LayerNorm(hidden)
        self.psi_value_emb = nn.Parameter(torch.randn(n_psi, hidden) * 0.02)
        self.psi_coeff_emb = nn.Parameter(torch.randn(n_psi, hidden) * 0.02)
        self.psi_in = nn.Linear(1, hidden)
        self.psi_norm = nn.LayerNorm(hidden)
        self.blocks = nn.ModuleList(_Block(hidden, heads) for _ in range(layers))
        self.out_norm_w, self.out_norm_p = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.dw_head = nn.Linear(hidden, w_dim)
        self.dpsi_head = _PerCoefficientHead(n_psi, hidden)
        nn.init.zeros_(self.dw_head.weight)
        nn.init.zeros_(self.dw_head.bias)
        lo = torch.tensor(list(psi_lower), dtype=torch.float32) if psi_lower is not None else torch.empty(0)
        hi = torch.tensor(list(psi_upper), dtype=torch.float32) if psi_upper is not None else torch.empty(0)
        # bounds as (non-persistent) buffers so they follow .to(); the config is their record
        self.register_buffer("_psi_lower", lo, persistent=False)
        self.register_buffer("_psi_upper", hi, persistent=False)

    # the ignores below: diffusers' config is a FrozenDict with attribute access
    @property
    def target(self) -> str:
        return str(self.config.target)  # type: ignore[attr-defined]

    @property
    def psi_names(self) -> tuple[str, ...]:
        return tuple(self.config.psi_names)  # type: ignore[attr-defined]

    def _check(self, w: torch.Tensor, psi: torch.Tensor) -> None:
        n, d, k = self.config.w_tokens, self.config.w_dim, self.config.n_psi  # type: ignore[attr-defined]
        if not isinstance(w, torch.Tensor) or w.ndim != 3 or tuple(w.shape[1:]) != (n, d):
            raise InvalidInput("w", f"a (B, {n}, {d}) tensor", getattr(w, "shape", type(w).__name__))
        if not isinstance(psi, torch.Tensor) or psi.ndim != 2 or psi.shape != (w.shape[0], k):
            raise InvalidInput("psi", f"a ({w.shape[0]}, {k}) tensor", getattr(psi, "shape", type(psi).__name__))

    def forward(self, w: torch.Tensor, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dw (B, N, D), dpsi (B, K))`` in the inputs' dtype."""
        self._check(w, psi)
        dt = self.w_in.weight.dtype
        x, p = w.to(dt), psi.to(dt)
        hw = self.w_norm(self.w_in(x) + self.w_pos)
        v = p[..., None]
        hp = self.psi_norm(v * self.psi_value_emb + self.psi_coeff_emb + self.psi_in(v))
        for block in self.blocks:
            hw, hp = block(hw, hp)
        dw = self.dw_head(self.out_norm_w(hw))
        dpsi = self.dpsi_head(self.out_norm_p(hp))
        left, right = self._mirror
        if left.numel():
            mean = 0.5 * (dpsi[:, left] + dpsi[:, right])
            dpsi = dpsi.index_copy(1, left.to(dpsi.device), mean).index_copy(1, right.to(dpsi.device), mean)
        return dw.to(w.dtype), dpsi.to(psi.dtype)

    def clamp_psi(self, psi: torch.Tensor) -> torch.Tensor:
        """``psi`` clamped to the configured bounds (unchanged where none are set)."""
        if self._psi_lower.numel():
            psi = torch.maximum(psi, self._psi_lower.to(psi))
        if self._psi_upper.numel():
            psi = torch.minimum(psi, self._psi_upper.to(psi))
        return psi

    def apply(self, w: Any, psi: torch.Tensor | None = None) -> Any:
        """``(w + dw, clamp(psi + dpsi))``: the edited latent and expression.

        (``apply(fn)`` with one callable keeps :meth:`torch.nn.Module.apply`'s meaning.)"""
        if psi is None and callable(w):
            return super().apply(w)
        if psi is None:
            raise InvalidInput("psi", "a (B, K) expression tensor", None)
        dw, dpsi = self(w, psi)
        return w + dw, self.clamp_psi(psi + dpsi)

    def describe(self) -> dict[str, Any]:
        c = self.config
        return {"target": c.target, "text": c.text, "w_shape": (c.w_tokens, c.w_dim),  # type: ignore[attr-defined]
                "n_psi": c.n_psi, "generator": c.generator,  # type: ignore[attr-defined]
                "parameters": sum(p.numel() for p in self.parameters())}


def mirror_pairs(names: Sequence[str]) -> list[list[int]]:
    """(left, right) index pairs of ARKit-style names ``X_L`` / ``X_R`` (or ``XLeft`` / ``XRight``)."""
    idx = {n: i for i, n in enumerate(names)}
    out = []
    for n, i in idx.items():
        for a, b in (("_L", "_R"), ("Left", "Right")):
            if n.endswith(a) and n[: -len(a)] + b in idx:
                out.append([i, idx[n[: -len(a)] + b]])
    return out


def compose(mappers: Sequence[DualMapper], w: torch.Tensor, psi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply mapper pairs one after another: ``(w, psi) -> m1.apply -> m2.apply -> ...`` (each sees
    the previous one's edited latent and expression; an empty sequence returns the inputs)."""
    for i, m in enumerate(mappers):
        if not isinstance(m, DualMapper):
            raise InvalidInput(f"mappers[{i}]", "a DualMapper", type(m).__name__)
        w, psi = m.apply(w, psi)
    return w, psi
