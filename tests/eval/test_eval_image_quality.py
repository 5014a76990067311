"""PSNR / SSIM / LPIPS / FID / KID and the Fréchet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from facerig.eval import image_quality as iq


def test_psnr_hand_cases() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    assert iq.psnr(a, a)["value"] == float("inf")
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.1)
    assert iq.psnr(x, y)["value"] == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    # masked: error only outside the mask -> inf inside, 20 dB outside
    y2 = y.clone()
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    y2[..., :4, :] = 0
    assert iq.psnr(x, y2, mask=mask)["value"] == float("inf")
    assert iq.psnr(x, y2, mask=1 - mask)["value"] == pytest.approx(20.0, abs=1e-4)


def test_ssim_matches_skimage(astronaut: np.ndarray) -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = astronaut[100:228, 150:278]
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(a, 3, axis=1)
    for other in (b, shifted, rng.integers(0, 255, a.shape).astype(np.uint8)):
        ref = structural_similarity(a / 255.0, other / 255.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=-1)
        assert iq.ssim(a, other)["value"] == pytest.approx(ref, abs=1e-4)
    assert iq.ssim(a, a)["value"] == pytest.approx(1.0, abs=1e-9)
    # masked SSIM: noise only in the bottom half -> top half scores 1
    c = a.copy()
    c[64:] = b[64:]
    m = np.zeros(a.shape[:2])
    m[:50] = 1
    assert iq.ssim(a, c, mask=m)["value"] == pytest.approx(1.0, abs=1e-9)
    assert iq.ssim(a, c, mask=1 - m)["value"] < 0.9


def test_ssim_differentiable() -> None:
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    y = torch.rand(2, 3, 24, 24)
    iq.ssim_map(x, y).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _scipy_fd(x: np.ndarray, y: np.ndarray) -> float:
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # independent reference: sqrt of S1^(1/2) S2 S1^(1/2) (same trace as sqrtm(S1 S2))
    r1 = linalg.sqrtm(s1)
    tr = np.trace(np.real(linalg.sqrtm(r1 @ s2 @ r1)))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def test_frechet_distance_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    y = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 1.0
    assert iq.frechet_distance(x, y) == pytest.approx(_scipy_fd(x, y), rel=1e-6)
    assert iq.frechet_distance(x, y, method="sqrtm") == pytest.approx(_scipy_fd(x, y), rel=1e-6)
    # rank-deficient covariances (fewer samples than dimensions), as with small FID sets
    xs, ys = rng.normal(size=(10, 32)), rng.normal(size=(12, 32)) + 0.2
    assert iq.frechet_distance(xs, ys) == pytest.approx(iq.frechet_distance(xs, ys, method="sqrtm"), rel=1e-4)
    assert iq.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # 1-D closed form: (m1-m2)^2 + (s1-s2)^2
    a = rng.normal(size=(2000, 1))
    b = a * 2 + 3
    v1, v2 = a.std(ddof=1), b.std(ddof=1)
    assert iq.frechet_distance(a, b) == pytest.approx((a.mean() - b.mean()) ** 2 + (v1 - v2) ** 2, rel=1e-6)
    m, _ = iq.kernel_distance(x, x, subsets=3, subset_size=200)
    m2, _ = iq.kernel_distance(x, y, subsets=3, subset_size=200)
    assert abs(m) < 0.05 < m2


def _torchvision_layout(net: str) -> dict[str, torch.Tensor]:
    """Random weights written with torchvision's key names and shapes (plus a classifier to ignore)."""
    g = torch.Generator().manual_seed(0)
    if net == "alex":
        spec = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    else:
        chans = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256), (512, 256),
                 (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
        idx = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        spec = {i: (co, ci, 3) for i, (co, ci) in zip(idx, chans, strict=True)}
    sd = {}
    for i, (co, ci, k) in spec.items():
        sd[f"features.{i}.weight"] = torch.randn(co, ci, k, k, generator=g) * (2.0 / (ci * k * k)) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(co)
    sd["classifier.1.weight"] = torch.zeros(4, 4)
    return sd


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_layouts(net: str, tmp_path) -> None:  # noqa: ANN001
    chans = [64, 192, 384, 256, 256] if net == "alex" else [64, 128, 256, 512, 512]
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(chans)}
    torch.save(_torchvision_layout(net), tmp_path / "backbone.pth")
    torch.save(lin, tmp_path / "lin.pth")
    model = iq.LPIPS(net, tmp_path / "backbone.pth", tmp_path / "lin.pth")
    x = torch.rand(2, 3, 64, 64)
    y = (x + 0.2 * torch.rand(2, 3, 64, 64)).clamp(0, 1)
    r = iq.lpips(x, x, model)
    assert r["value"] == pytest.approx(0.0, abs=1e-7) and "LPIPS" in r["estimator"]
    d = iq.lpips(x, y, model)["per_item"]
    assert min(d) > 0 and d == pytest.approx(iq.lpips(y, x, model)["per_item"], rel=1e-5)
    # an lpips full-model state dict (net.sliceK.N.*) loads as the same backbone
    taps = iq._ALEX_TAPS if net == "alex" else iq._VGG_TAPS
    full = {}
    for k, v in _torchvision_layout(net).items():
        if k.startswith("features."):
            n = int(k.split(".")[1])
            s = 1 + sum(n > t for t in taps)
            full[f"net.slice{s}.{n}.{k.split('.')[2]}"] = v
    m2 = iq.LPIPS(net, full, lin)
    assert iq.lpips(x, y, m2)["per_item"] == pytest.approx(d, rel=1e-6)
    with pytest.raises(Exception, match="lin"):
        iq.LPIPS(net, None, {"foo": torch.zeros(1)})


PYTORCH_FID_KEYS = {  # names and shapes of pt_inception-2015-12-05-6726825d.pth
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
}


def test_inception_fid_layout_and_fid(tmp_path) -> None:  # noqa: ANN001
    ref = iq.InceptionV3FID()
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    for k, s in PYTORCH_FID_KEYS.items():
        assert shapes[k] == s
    torch.manual_seed(0)
    sd = {}
    for k, v in ref.state_dict().items():
        if k.endswith("conv.weight"):
            sd[k] = torch.randn_like(v) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith(("running_var", "bn.weight")):
            sd[k] = torch.ones_like(v)
        elif k.endswith(("running_mean", "bn.bias")):
            sd[k] = torch.zeros_like(v) + (0.01 if k.endswith("bias") else 0)
        else:
            sd[k] = torch.randn_like(v) * 0.01 if v.is_floating_point() else v
    torch.save(sd, tmp_path / "pt_inception.pth")
    net = iq.InceptionV3FID.from_file(tmp_path / "pt_inception.pth", resize=False)
    imgs = torch.rand(4, 3, 75, 75)
    f = iq.fid_features(imgs, net)
    assert f.shape == (4, 2048)
    assert np.isfinite(f).all() and f.std(0).max() > 0
    r = iq.fid_from_features(f[:, :64], f[:, :64], estimator="x")  # a full 2048-d sqrtm takes seconds
    assert r["value"] == pytest.approx(0.0, abs=1e-6)
    f2 = iq.fid_features(torch.rand(3, 3, 75, 75), net)
    assert iq.fid_from_features(f[:, :64], f2[:, :64])["value"] > 0
    bad = dict(sd)
    bad.pop("fc.weight")
    with pytest.raises(Exception, match="fc.weight"):
        iq.InceptionV3FID.from_file(bad)
