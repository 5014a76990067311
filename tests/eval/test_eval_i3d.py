"""FVD from a user I3D TorchScript path: a tiny TorchScript module with the StyleGAN-V call signature
stands in for ``i3d_torchscript.pt``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from facerig.errors import AssetMissing, InvalidInput
from facerig.eval import i3d
from facerig.eval.video import fvd, fvd_from_features


class StubI3D(torch.nn.Module):
    """Same signature as the StyleGAN-V I3D; features 0..6 report what it was given, the rest are a
    fixed projection of per-frame channel means (so different clips give different features)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("proj", torch.randn(3 * 16, 393, generator=g))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        is_u8 = float(x.dtype == torch.uint8)
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        b = x.shape[0]
        info = torch.tensor([is_u8, float(return_features), float(x.shape[2]), float(x.shape[3]), float(x.shape[4])])
        rng = torch.stack([x.amin((1, 2, 3, 4)), x.amax((1, 2, 3, 4))], 1)
        feat = x.mean((3, 4)).reshape(b, -1)[:, : 3 * 16]
        feat = F.pad(feat, (0, 3 * 16 - feat.shape[1])) @ self.proj
        return torch.cat([info.expand(b, 5), rng, feat], 1)


@pytest.fixture(scope="module")
def i3d_path(tmp_path_factory: pytest.TempPathFactory):
    p = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(StubI3D()), str(p))
    return p


def clips(n: int, seed: int, t: int = 20, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_preprocessing_follows_the_stylegan_v_convention(i3d_path) -> None:  # noqa: ANN001
    ext = i3d.I3DFeatures(i3d_path)
    c = clips(3, 0)
    c[0][:] = 0
    c[0][:, 0, 0] = 255  # one white pixel: the full 0..255 range reaches the module as uint8
    f = ext(c)
    assert f.shape == (3, 400) and f.dtype == np.float64
    assert (f[:, 0] == 1).all() and (f[:, 1] == 1).all()  # uint8 input, return_features=True
    assert (f[:, 2] == 16).all() and (f[:, 3] == 224).all() and (f[:, 4] == 224).all()  # 16 frames, resized
    assert f[0, 5] == pytest.approx(-1.0) and f[0, 6] > -1.0  # rescaled to [-1, 1]
    # float [0, 1] clips and (T, 3, H, W) tensors give the same features as the uint8 frames
    cf = [x.astype(np.float32) / 255 for x in c]
    ct = [torch.from_numpy(x).permute(0, 3, 1, 2) for x in c]
    np.testing.assert_allclose(ext(cf), f, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ext(ct), f, rtol=1e-6, atol=1e-6)
    # only the first num_frames frames are used; too-short clips are refused
    longer = [np.concatenate([x, np.zeros_like(x)]) for x in c]
    np.testing.assert_allclose(ext(longer), f)
    with pytest.raises(InvalidInput, match="16 frames"):
        ext(clips(1, 1, t=8))
    # mixed sizes are batched separately
    mixed = ext(clips(2, 2) + clips(1, 3, size=48))
    assert mixed.shape == (3, 400)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 6 samples in 400-d: singular covariances
def test_fvd_from_path_zero_and_reference(i3d_path) -> None:  # noqa: ANN001
    real, gen = clips(6, 10), clips(6, 11)
    same = fvd(real, real, str(i3d_path))
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and "i3d_torchscript.pt" in same["estimator"]
    r = fvd(real, gen, i3d_path)
    fa, fb = i3d.I3DFeatures(i3d_path)(real), i3d.I3DFeatures(i3d_path)(gen)
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert r["value"] == pytest.approx(ref, rel=1e-4, abs=1e-6)
    assert r["value"] == pytest.approx(fvd_from_features(fa, fb)["value"])
    assert r["n_real"] == 6 and r["n_generated"] == 6


def test_missing_or_bad_file(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(AssetMissing):
        i3d.load_i3d_torchscript(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(InvalidInput, match="TorchScript"):
        i3d.load_i3d_torchscript(bad)
