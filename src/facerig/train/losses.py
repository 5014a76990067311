"""Diffusion training losses.

P2 weighting (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models"), as
DiffusionRig trains with it: the per-sample epsilon MSE (mean over all non-batch dimensions) times
``w_t = 1 / (k + SNR_t) ** gamma`` with ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``;
``gamma = 0`` gives the plain MSE. The weights are computed in float64 from the training schedule's
cumulative alphas.
"""

from __future__ import annotations

import torch

__all__ = ["p2_epsilon_loss", "p2_weights", "snr"]


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` per training timestep (float64)."""
    a = alphas_cumprod.double()
    return a / (1.0 - a)


def p2_weights(alphas_cumprod: torch.Tensor, gamma: float = 1.0, k: float = 1.0) -> torch.Tensor:
    """``1 / (k + SNR_t) ** gamma`` for every training timestep (float64, shape (T,))."""
    return 1.0 / (k + snr(alphas_cumprod)) ** gamma


def p2_epsilon_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    gamma: float = 1.0,
    k: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """P2-weighted MSE between predicted and true noise.

    ``pred``/``target`` (B, ...), ``timesteps`` (B,) integer indices into ``alphas_cumprod`` (T,).
    ``reduction``: ``"mean"`` (a scalar, the mean over the batch) or ``"none"`` (B,).
    """
    w = p2_weights(alphas_cumprod.to(timesteps.device), gamma, k)[timesteps.long()].float()
    per = ((target.float() - pred.float()) ** 2).mean(dim=tuple(range(1, pred.ndim)))
    per = per * w
    if reduction == "none":
        return per
    if reduction == "mean":
        return per.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
