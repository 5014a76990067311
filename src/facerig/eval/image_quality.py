"""Image-quality metrics: PSNR, SSIM (+ masked variants), LPIPS, FID and KID, the Fréchet distance.

Inputs: torch tensors (B, 3, H, W) / (3, H, W) float in [0, 1], or numpy (H, W, 3) / (B, H, W, 3)
arrays (uint8 0..255, float 0..1). Results are dicts that name the metric and the estimator.

* PSNR: 10 log10(1 / MSE) on [0, 1] data (``inf`` for identical images), per image, then averaged.
* SSIM: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data range 1,
  per channel, averaged over the valid (unpadded) region; equals
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``.
* masked variants: ``mask`` (B, 1, H, W) or (H, W) in [0, 1] weights pixels (face region: the render
  mask; background: ``1 - mask``); SSIM averages its map over the mask (map pixel = window centre).
* LPIPS: AlexNet / VGG16 backbones built here (torchvision is not used) with torchvision's
  ``features.N.*`` key layout, linear heads in the ``lpips`` package's ``linK.model.1.weight`` layout.
* FID / KID: pytorch-fid's Inception-v3 (``pt_inception-2015-12-05-6726825d.pth`` key layout),
  pool3 2048-d features; FID = Fréchet distance of Gaussians; KID = unbiased cubic-polynomial-kernel
  MMD^2 averaged over random subsets.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from facerig.errors import InvalidInput
from facerig.eval.weights import check_keys, load_state_dict, strip_prefix

__all__ = [
    "to_batch",
    "psnr",
    "ssim",
    "ssim_map",
    "frechet_distance",
    "kernel_distance",
    "LPIPS",
    "lpips",
    "InceptionV3FID",
    "fid_features",
    "fid",
    "kid",
    "fid_from_features",
    "kid_from_features",
]

EST_TORCH = "facerig torch implementation"


def to_batch(x: Any, name: str = "image") -> torch.Tensor:
    """(B, C, H, W) float64-free float32 tensor in [0, 1] from tensors or uint8/float arrays."""
    if isinstance(x, (list, tuple)):
        return torch.cat([to_batch(v, name) for v in x])
    if isinstance(x, np.ndarray):
        a = x
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            raise InvalidInput(name, "(H, W, C) or (B, H, W, C) array", x.shape)
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
        t = t.float() / 255.0 if a.dtype == np.uint8 else t.float()
        return t
    if isinstance(x, torch.Tensor):
        tb = x if x.ndim == 4 else x[None] if x.ndim == 3 else None
        if tb is None:
            raise InvalidInput(name, "(C, H, W) or (B, C, H, W) tensor", tuple(x.shape))
        return tb.float() if tb.dtype == torch.uint8 else tb
    raise InvalidInput(name, "a tensor or an array", type(x).__name__)


def _mask_batch(mask: Any, ref: torch.Tensor) -> torch.Tensor:
    m = mask
    if isinstance(m, np.ndarray):
        m = torch.from_numpy(m.astype(np.float32))
    m = torch.as_tensor(m).float().to(ref.device)
    while m.ndim < 4:
        m = m[None]
    if m.shape[-2:] != ref.shape[-2:]:
        raise InvalidInput("mask", f"a mask of size {tuple(ref.shape[-2:])}", tuple(m.shape))
    return m.expand(ref.shape[0], 1, *ref.shape[-2:])


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = to_batch(a, "a"), to_batch(b, "b")
    if x.shape != y.shape:
        raise InvalidInput("b", f"images of the same shape as a {tuple(x.shape)}", tuple(y.shape))
    return x, y.to(x)


def _result(metric: str, per: torch.Tensor, estimator: str, **extra: Any) -> dict[str, Any]:
    vals = per.detach().cpu().double().numpy()
    return {"metric": metric, "estimator": estimator, "value": float(vals.mean()) if len(vals) else float("nan"),
            "per_item": vals.tolist(), **extra}


# ------------------------------------------------------------------------------------------
# PSNR / SSIM


def psnr(a: Any, b: Any, *, mask: Any = None, data_range: float = 1.0) -> dict[str, Any]:
    """Peak signal-to-noise ratio in dB per image (``inf`` when identical); ``mask`` restricts the
    mean squared error to weighted pixels (the face region, or ``1 - mask`` for the background)."""
    x, y = _pair(a, b)
    se = (x - y) ** 2
    if mask is not None:
        m = _mask_batch(mask, x)
        mse = (se * m).sum((1, 2, 3)) / (m.sum((1, 2, 3)) * x.shape[1]).clamp_min(1e-12)
    else:
        mse = se.mean((1, 2, 3))
    val = 10 * torch.log10(data_range ** 2 / mse)
    return _result("psnr" if mask is None else "psnr_masked", val, f"{EST_TORCH} (data_range={data_range})")


def _gauss(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11,
             sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Differentiable SSIM map (B, C, H - win + 1, W - win + 1) (valid region, separable Gaussian)."""
    c = x.shape[1]
    g = _gauss(win_size, sigma, x.dtype).to(x.device)
    gh = g.view(1, 1, 1, -1).expand(c, 1, 1, win_size)
    gv = g.view(1, 1, -1, 1).expand(c, 1, win_size, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gv, groups=c)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(a: Any, b: Any, *, mask: Any = None, data_range: float = 1.0) -> dict[str, Any]:
    """Structural similarity per image (Gaussian 11/1.5 window, averaged over channels and the valid
    region; matches skimage to 1e-4). ``mask``: average the map over the mask's pixels instead."""
    x, y = _pair(a, b)
    if min(x.shape[-2:]) < 11:
        raise InvalidInput("image", "at least 11x11 pixels for SSIM", tuple(x.shape[-2:]))
    s = ssim_map(x.double(), y.double(), data_range=data_range)
    if mask is None:
        per = s.mean((1, 2, 3))
    else:
        m = _mask_batch(mask, x).double()[:, :, 5:-5, 5:-5]
        per = (s * m).sum((1, 2, 3)) / (m.sum((1, 2, 3)) * s.shape[1]).clamp_min(1e-12)
    return _result("ssim" if mask is None else "ssim_masked", per,
                   f"{EST_TORCH} (Gaussian 11x11 sigma 1.5, K 0.01/0.03, data_range={data_range})")


# ------------------------------------------------------------------------------------------
# distribution distances


def _np64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InvalidInput("features", "(N, D) features", a.shape)
    return a


def frechet_distance(a: Any, b: Any, eps: float = 1e-6, *, method: str = "eigh") -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to (N, D) features
    (covariances with N - 1).

    ``method="eigh"`` (default) uses Tr((S_a S_b)^(1/2)) = sum sqrt(eig(A S_b A)), A = S_a^(1/2)
    (symmetric eigen-decompositions; S_a S_b is similar to A S_b A, so the eigenvalues are the same):
    about 2.4x faster than ``method="sqrtm"`` (pytorch-fid's scipy.linalg.sqrtm recipe, with eps*I
    added when the product is singular) at 2048-d, and equal to it to ~1e-6 relative."""
    from scipy import linalg

    x, y = _np64(a), _np64(b)
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise InvalidInput("features", "two sets of >= 2 samples of one dimension", (x.shape, y.shape))
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    if method == "eigh":
        w, u = np.linalg.eigh(s1)
        half = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
        ev = np.linalg.eigvalsh(half @ s2 @ half)
        tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    elif method == "sqrtm":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm(s1 @ s2)
            if isinstance(covmean, tuple):  # older scipy returned (sqrtm, errest)
                covmean = covmean[0]
            if not np.isfinite(covmean).all():
                off = np.eye(s1.shape[0]) * eps
                covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
        tr_covmean = float(np.trace(np.real(covmean)))
    else:
        raise InvalidInput("method", "'eigh' or 'sqrtm'", method)
    d = mu1 - mu2
    return float(max(d @ d + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def kernel_distance(a: Any, b: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                    degree: int = 3, coef0: float = 1.0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the kernel k(x, y) = (x.y / D + coef0)^degree, mean and std over
    ``subsets`` random subsets of min(subset_size, N) samples (Binkowski et al. 2018)."""
    x, y = _np64(a), _np64(b)
    if x.shape[1] != y.shape[1]:
        raise InvalidInput("features", "two sets of one dimension", (x.shape, y.shape))
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise InvalidInput("features", "at least 2 samples per set", (len(x), len(y)))
    rng = np.random.default_rng(seed)
    dim = x.shape[1]
    vals = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx = (xs @ xs.T / dim + coef0) ** degree
        kyy = (ys @ ys.T / dim + coef0) ** degree
        kxy = (xs @ ys.T / dim + coef0) ** degree
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    v = np.asarray(vals)
    return float(v.mean()), float(v.std())


# ------------------------------------------------------------------------------------------
# LPIPS

_ALEX_CFG: list[tuple[Any, ...]] = [("c", 3, 64, 11, 4, 2), ("r",), ("m",), ("c", 64, 192, 5, 1, 2), ("r",), ("m",),
             ("c", 192, 384, 3, 1, 1), ("r",), ("c", 384, 256, 3, 1, 1), ("r",), ("c", 256, 256, 3, 1, 1), ("r",)]
_ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1..relu5 (lpips alexnet slices)
_VGG_CH: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def _alexnet_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    for spec in _ALEX_CFG:
        if spec[0] == "c":
            _, ci, co, k, s, p = spec
            layers.append(nn.Conv2d(ci, co, k, s, p))
        elif spec[0] == "r":
            layers.append(nn.ReLU())
        else:
            layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    ci = 3
    for v in _VGG_CH:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(ci, int(v), 3, 1, 1), nn.ReLU()]
            ci = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018) with backbone and linear-head weights from user files.

    ``backbone_weights``: torchvision-style ``alexnet``/``vgg16`` state dict (``features.N.weight``;
    ``classifier.*`` ignored) — or an lpips full-model dict (``net.sliceK.N.weight``).
    ``lin_weights``: the lpips package's ``weights/v0.1/{alex,vgg}.pth`` (``linK.model.1.weight``,
    shape (1, C, 1, 1)). ``forward(a, b)`` takes [0, 1] images and returns (B,) distances.
    """

    shift: torch.Tensor  # buffers
    scale: torch.Tensor

    def __init__(self, net: str = "alex", backbone_weights: Any = None, lin_weights: Any = None):
        super().__init__()
        if net not in ("alex", "vgg"):
            raise InvalidInput("net", "'alex' or 'vgg'", net)
        self.net_name = net
        self.features = _alexnet_features() if net == "alex" else _vgg16_features()
        self.taps = _ALEX_TAPS if net == "alex" else _VGG_TAPS
        chans = [cast(nn.Conv2d, self.features[i - 1]).out_channels for i in self.taps]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        if backbone_weights is not None:
            self.load_backbone(backbone_weights)
        if lin_weights is not None:
            self.load_lins(lin_weights)
        self.eval().requires_grad_(False)

    def load_backbone(self, source: Any) -> None:
        sd = load_state_dict(source)
        if any(k.startswith("net.slice") for k in sd):
            sd = {"features." + k.split(".", 3)[2] + "." + k.split(".", 3)[3]: v
                  for k, v in sd.items() if k.startswith("net.slice")}
        sd = strip_prefix(sd, "module.")
        feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        self.features.load_state_dict(check_keys(self.features, feats, f"LPIPS {self.net_name} backbone"))

    def load_lins(self, source: Any) -> None:
        sd = load_state_dict(source)
        out = {}
        for i in range(len(self.lins)):
            key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight", f"lin{i}.weight") if k in sd), None)
            if key is None:
                raise InvalidInput("lin_weights", f"lpips linear heads lin0..lin{len(self.lins) - 1}", sorted(sd)[:6])
            out[f"{i}.weight"] = sd[key]
        self.lins.load_state_dict(check_keys(self.lins, out, "LPIPS linear heads"))

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x * 2 - 1) - self.shift) / self.scale
        outs = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                outs.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
                if len(outs) == len(self.taps):
                    break
        return outs

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self._feats(a), self._feats(b)
        total: Any = 0  # becomes a (B, 1) tensor
        for lin, x, y in zip(self.lins, fa, fb, strict=True):
            total = total + lin((x - y) ** 2).mean((2, 3))
        return total.view(-1)


def lpips(a: Any, b: Any, model: LPIPS, *, batch_size: int = 16) -> dict[str, Any]:
    """LPIPS distance per image pair with a loaded :class:`LPIPS` model."""
    x, y = _pair(a, b)
    dev = next(model.parameters()).device
    with torch.no_grad():
        per = torch.cat([model(x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)).cpu()
                         for i in range(0, len(x), batch_size)])
    return _result("lpips", per, f"LPIPS {model.net_name} (user-supplied weights; facerig torch backbone)")


# ------------------------------------------------------------------------------------------
# Inception-v3 for FID (pytorch-fid layout)


class _BasicConv(nn.Module):
    def __init__(self, ci: int, co: int, k: Any, s: int = 1, p: Any = 0):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, k, s, p, bias=False)
        self.bn = nn.BatchNorm2d(co, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)  # pytorch-fid's FID* blocks


class _IncA(nn.Module):
    def __init__(self, ci: int, pool: int):
        super().__init__()
        self.branch1x1 = _BasicConv(ci, 64, 1)
        self.branch5x5_1 = _BasicConv(ci, 48, 1)
        self.branch5x5_2 = _BasicConv(48, 64, 5, p=2)
        self.branch3x3dbl_1 = _BasicConv(ci, 64, 1)
        self.branch3x3dbl_2 = _BasicConv(64, 96, 3, p=1)
        self.branch3x3dbl_3 = _BasicConv(96, 96, 3, p=1)
        self.branch_pool = _BasicConv(ci, pool, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg3(x))], 1)


class _IncB(nn.Module):
    def __init__(self, ci: int):
        super().__init__()
        self.branch3x3 = _BasicConv(ci, 384, 3, s=2)
        self.branch3x3dbl_1 = _BasicConv(ci, 64, 1)
        self.branch3x3dbl_2 = _BasicConv(64, 96, 3, p=1)
        self.branch3x3dbl_3 = _BasicConv(96, 96, 3, s=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class _IncC(nn.Module):
    def __init__(self, ci: int, c7: int):
        super().__init__()
        self.branch1x1 = _BasicConv(ci, 192, 1)
        self.branch7x7_1 = _BasicConv(ci, c7, 1)
        self.branch7x7_2 = _BasicConv(c7, c7, (1, 7), p=(0, 3))
        self.branch7x7_3 = _BasicConv(c7, 192, (7, 1), p=(3, 0))
        self.branch7x7dbl_1 = _BasicConv(ci, c7, 1)
        self.branch7x7dbl_2 = _BasicConv(c7, c7, (7, 1), p=(3, 0))
        self.branch7x7dbl_3 = _BasicConv(c7, c7, (1, 7), p=(0, 3))
        self.branch7x7dbl_4 = _BasicConv(c7, c7, (7, 1), p=(3, 0))
        self.branch7x7dbl_5 = _BasicConv(c7, 192, (1, 7), p=(0, 3))
        self.branch_pool = _BasicConv(ci, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _IncD(nn.Module):
    def __init__(self, ci: int):
        super().__init__()
        self.branch3x3_1 = _BasicConv(ci, 192, 1)
        self.branch3x3_2 = _BasicConv(192, 320, 3, s=2)
        self.branch7x7x3_1 = _BasicConv(ci, 192, 1)
        self.branch7x7x3_2 = _BasicConv(192, 192, (1, 7), p=(0, 3))
        self.branch7x7x3_3 = _BasicConv(192, 192, (7, 1), p=(3, 0))
        self.branch7x7x3_4 = _BasicConv(192, 192, 3, s=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class _IncE(nn.Module):
    def __init__(self, ci: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _BasicConv(ci, 320, 1)
        self.branch3x3_1 = _BasicConv(ci, 384, 1)
        self.branch3x3_2a = _BasicConv(384, 384, (1, 3), p=(0, 1))
        self.branch3x3_2b = _BasicConv(384, 384, (3, 1), p=(1, 0))
        self.branch3x3dbl_1 = _BasicConv(ci, 448, 1)
        self.branch3x3dbl_2 = _BasicConv(448, 384, 3, p=1)
        self.branch3x3dbl_3a = _BasicConv(384, 384, (1, 3), p=(0, 1))
        self.branch3x3dbl_3b = _BasicConv(384, 384, (3, 1), p=(1, 0))
        self.branch_pool = _BasicConv(ci, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        p = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)


class InceptionV3FID(nn.Module):
    """pytorch-fid's FID Inception-v3 (TF 2015-12-05 graph ported), pool3 features.

    Load ``pt_inception-2015-12-05-6726825d.pth`` with :meth:`from_file` (keys ``Conv2d_1a_3x3.conv.weight``,
    ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight`` (1008, 2048)). ``forward`` takes [0, 1]
    images of any size, resizes to 299x299 (bilinear, align_corners=False) and scales to [-1, 1]
    like pytorch-fid, and returns (B, 2048) pool3 features."""

    def __init__(self, resize: bool = True):
        super().__init__()
        self.resize = resize
        self.Conv2d_1a_3x3 = _BasicConv(3, 32, 3, s=2)
        self.Conv2d_2a_3x3 = _BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv(32, 64, 3, p=1)
        self.Conv2d_3b_1x1 = _BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv(80, 192, 3)
        self.Mixed_5b = _IncA(192, 32)
        self.Mixed_5c = _IncA(256, 64)
        self.Mixed_5d = _IncA(288, 64)
        self.Mixed_6a = _IncB(288)
        self.Mixed_6b = _IncC(768, 128)
        self.Mixed_6c = _IncC(768, 160)
        self.Mixed_6d = _IncC(768, 160)
        self.Mixed_6e = _IncC(768, 192)
        self.Mixed_7a = _IncD(768)
        self.Mixed_7b = _IncE(1280, max_pool=False)
        self.Mixed_7c = _IncE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    @classmethod
    def from_file(cls, source: Any, resize: bool = True) -> InceptionV3FID:
        net = cls(resize)
        sd = strip_prefix(load_state_dict(source), "module.")
        net.load_state_dict(check_keys(net, sd, "FID Inception-v3 weights", ignore_prefixes=("AuxLogits.",)))
        return net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize and tuple(x.shape[-2:]) != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, 2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean((2, 3))


def fid_features(images: Any, net: nn.Module, *, batch_size: int = 16) -> np.ndarray:
    """(N, D) features of [0, 1] images with an Inception (or any feature) network."""
    x = to_batch(images)
    dev = next(net.parameters()).device
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch_size].to(dev)).double().cpu()
                          for i in range(0, len(x), batch_size)]).numpy()


def fid_from_features(fa: Any, fb: Any, *, estimator: str = "user-supplied features") -> dict[str, Any]:
    a, b = _np64(fa), _np64(fb)
    return {"metric": "fid", "estimator": estimator, "value": frechet_distance(a, b), "n_a": len(a), "n_b": len(b)}


def kid_from_features(fa: Any, fb: Any, *, estimator: str = "user-supplied features", subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    a, b = _np64(fa), _np64(fb)
    m, s = kernel_distance(a, b, subsets=subsets, subset_size=subset_size, seed=seed)
    return {"metric": "kid", "estimator": estimator, "value": m, "std": s, "n_a": len(a), "n_b": len(b)}


_EST_INC = "Inception-v3 pool3 (pytorch-fid layout, user-supplied weights)"


def fid(images_a: Any, images_b: Any, net: InceptionV3FID) -> dict[str, Any]:
    """FID between two image sets with a loaded :class:`InceptionV3FID`. Few images give biased,
    high values: report N alongside (``n_a``/``n_b``)."""
    return fid_from_features(fid_features(images_a, net), fid_features(images_b, net), estimator=_EST_INC)


def kid(images_a: Any, images_b: Any, net: InceptionV3FID, **kw: Any) -> dict[str, Any]:
    """KID between two image sets with a loaded :class:`InceptionV3FID`."""
    return kid_from_features(fid_features(images_a, net), fid_features(images_b, net), estimator=_EST_INC, **kw)
