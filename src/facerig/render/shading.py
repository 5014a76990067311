"""Spherical-harmonics (order 2) lighting in DECA's convention.

Basis on a normal n = (x, y, z) (DECA evaluates it on the interpolated, UNnormalised normal):
``Y = [1, x, y, z, x*y, x*z, y*z, x*x - y*y, 3*z*z - 1]``, each multiplied by DECA's constant
(:data:`SH_CONSTANTS`):

    c0 = 1/sqrt(4 pi)
    c1..c3 = (2 pi / 3) sqrt(3 / (4 pi))
    c4..c6 = (pi / 4) * 3 * sqrt(5 / (12 pi))
    c7 = (pi / 4) * (3 / 2) * sqrt(5 / (12 pi))
    c8 = (pi / 4) * (1 / 2) * sqrt(5 / (4 pi))

Lighting ``L`` is (B, 9, 3) (coefficient x RGB); ``shading[c] = sum_k L[k, c] * c_k * Y_k(n)``
(irradiance, unclamped); the lambertian render is ``albedo * shading`` (no clamp, no gamma).
Normals are in the world frame: x right, y up, z towards the viewer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from facerig.errors import InvalidInput

_PI = math.pi
SH_CONSTANTS: tuple[float, ...] = (
    1 / math.sqrt(4 * _PI),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (2 * _PI / 3) * math.sqrt(3 / (4 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * 3 * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (3 / 2) * math.sqrt(5 / (12 * _PI)),
    (_PI / 4) * (1 / 2) * math.sqrt(5 / (4 * _PI)),
)

#: DC coefficient of a neutral (ambient, white) light: shading = NEUTRAL_DC * SH_CONSTANTS[0] = 1
NEUTRAL_DC: float = math.sqrt(4 * _PI)

# order-2 Legendre coefficients of the clamped cosine max(0, t): 1/4, 1/2, 5/16
_A0, _A1, _A2 = 0.25, 0.5, 5.0 / 16.0


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """DECA's scaled SH basis: (..., 3) normals -> (..., 9) = c_k * Y_k(n). Differentiable."""
    x, y, z = normals.unbind(-1)
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    const = torch.tensor(SH_CONSTANTS, dtype=normals.dtype, device=normals.device)
    return basis * const


def sh_basis_rows(normals: torch.Tensor) -> torch.Tensor:
    """Channel-major variant of :func:`sh_basis`: (3, ...) normals -> (9, ...)."""
    x, y, z = normals[0], normals[1], normals[2]
    const = SH_CONSTANTS
    return torch.stack(
        [
            torch.full_like(x, const[0]),
            x * const[1],
            y * const[2],
            z * const[3],
            (x * y) * const[4],
            (x * z) * const[5],
            (y * z) * const[6],
            (x * x - y * y) * const[7],
            (3 * z * z - 1) * const[8],
        ],
        0,
    )


def shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """SH irradiance for normals and lighting.

    * normals (B, 3, H, W) (channels-first images, as DECA) with light (B, 9, 3) -> (B, 3, H, W);
    * normals (B, N, 3) with light (B, 9, 3) -> (B, N, 3);
    * normals (N, 3) (or any (..., 3)) with light (9, 3) -> (..., 3).

    Normals are used as given (DECA does not re-normalise the interpolated normal).
    """
    if light.shape[-2:] != (9, 3):
        raise InvalidInput("light", "SH coefficients of shape (B, 9, 3) or (9, 3)", tuple(light.shape))
    light = light.to(normals.dtype)
    if light.ndim == 2:
        return sh_basis(normals) @ light
    if normals.ndim == 4:
        if normals.shape[1] != 3:
            raise InvalidInput("normals", "a (B, 3, H, W) normal image", tuple(normals.shape))
        basis = sh_basis(normals.permute(0, 2, 3, 1))  # (B, H, W, 9)
        return torch.einsum("bhwk,bkc->bchw", basis, light)
    if normals.ndim == 3:
        return torch.einsum("bnk,bkc->bnc", sh_basis(normals), light)
    raise InvalidInput("normals", "(B, 3, H, W), (B, N, 3) or (N, 3) normals", tuple(normals.shape))


def lambertian(albedo: torch.Tensor, normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """``albedo * shading(normals, light)`` (same layout as ``normals``); no clamp, no gamma."""
    return albedo * shading(normals, light)


def light_direction(azimuth_deg: float, elevation_deg: float) -> tuple[float, float, float]:
    """Unit vector towards the light: azimuth 0 = from the viewer (+z), positive azimuth towards +x
    (image right), positive elevation towards +y (up)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))


def _rgb(v: float | Sequence[float] | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(3)
    if t.numel() != 3:
        raise InvalidInput(name, "a scalar or 3 RGB values", tuple(t.shape))
    return t


def directional_light_sh(
    azimuth_deg: float,
    elevation_deg: float,
    intensity: float | Sequence[float] = 1.0,
    ambient: float | Sequence[float] = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SH lighting (9, 3) of a directional light plus a constant ambient term.

    The irradiance ``intensity * max(0, n . d) + ambient`` (``d`` from :func:`light_direction`) is
    projected onto the order-2 SH basis (clamped cosine coefficients 1/4, 1/2, 5/16) and expressed
    in DECA's basis/constants, so ``shading(n, L)`` ~ that irradiance for unit normals (it equals the
    order-2 approximation exactly). ``intensity``/``ambient``: scalars or RGB triples.
    """
    dx, dy, dz = light_direction(azimuth_deg, elevation_deg)
    k = 1.5 * _A2  # coefficient of t^2 in a2 * P2(t)
    # coefficients in front of the basis functions [1, x, y, z, xy, xz, yz, x2-y2, 3z2-1]
    b = torch.tensor(
        [
            _A0,
            _A1 * dx,
            _A1 * dy,
            _A1 * dz,
            2 * k * dx * dy,
            2 * k * dx * dz,
            2 * k * dy * dz,
            k * (dx * dx - dy * dy) / 2,
            k * (dz * dz / 3 - (dx * dx + dy * dy) / 6),
        ],
        dtype=torch.float64,
    )
    i_rgb, a_rgb = _rgb(intensity, "intensity"), _rgb(ambient, "ambient")
    coef = b[:, None] * i_rgb[None, :]
    coef[0] += a_rgb
    const = torch.tensor(SH_CONSTANTS, dtype=torch.float64)
    return (coef / const[:, None]).to(dtype)


def fit_sh(
    normals: torch.Tensor,
    colors: torch.Tensor,
    weights: torch.Tensor | None = None,
    ridge: float = 1e-6,
) -> torch.Tensor:
    """Weighted linear least squares for SH lighting such that ``shading(normals, L) ~ colors``.

    normals (N, 3) or (B, N, 3); colors (same leading shape, 3) — the target irradiance (e.g. image /
    albedo); weights (N,) / (B, N) or None. Returns (9, 3) or (B, 9, 3). ``ridge`` adds
    ``ridge * mean(diag)`` to the normal equations (stabilises poorly covered spheres).
    Differentiable w.r.t. all inputs.
    """
    squeeze = normals.ndim == 2
    n = normals[None] if squeeze else normals
    c = (colors[None] if squeeze else colors).to(n.dtype)
    if n.ndim != 3 or n.shape[-1] != 3 or c.shape != n.shape:
        raise InvalidInput(
            "normals/colors",
            "matching (N, 3) or (B, N, 3) tensors",
            (tuple(normals.shape), tuple(colors.shape)),
        )
    phi = sh_basis(n)  # (B, N, 9)
    if weights is not None:
        w = (weights[None] if squeeze else weights).to(n.dtype)
        if w.shape != n.shape[:2]:
            raise InvalidInput("weights", f"shape {tuple(normals.shape[:-1])}", tuple(weights.shape))
        pw = phi * w[..., None]
    else:
        pw = phi
    ata = pw.transpose(1, 2) @ phi  # (B, 9, 9)
    atb = pw.transpose(1, 2) @ c  # (B, 9, 3)
    diag = ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
    eye = torch.eye(9, dtype=n.dtype, device=n.device)
    sol = torch.linalg.solve(ata + (ridge * diag)[:, None, None] * eye, atb)
    return sol[0] if squeeze else sol
