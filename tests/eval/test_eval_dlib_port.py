"""The torch port of dlib's face-recognition ResNet against dlib itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")

from facerig.eval import dlib_port as dp  # noqa: E402
from facerig.eval import identity as idm  # noqa: E402


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def net() -> dp.DlibResNet:
    return dp.load_dlib_resnet()


def _dlib_reference(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    det, sp, fr = idm._dlib_models()
    rect = max(det(img, 1), key=lambda r: r.area())
    shape = sp(img, rect)
    desc = np.asarray(fr.compute_face_descriptor(img, shape, 0, 0.25))
    chip = np.asarray(dlib.get_face_chip(img, shape, 150, 0.25))
    pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    return desc, chip, pts


def test_parse_structure() -> None:
    layers = dp.parse_dlib_net()
    kinds = [lay.kind for lay in layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert layers[0].attrs["size"] == (150, 150)
    np.testing.assert_allclose(layers[0].attrs["mean_rgb"], [122.782, 117.001, 104.298], atol=1e-3)
    sd, meta = dp.convert_dlib_net(layers)
    assert meta["num_conv"] == 29 and meta["embedding_dim"] == 128
    assert tuple(meta["blocks"]) == dp.DlibResNet.BLOCKS
    assert sd["fc.weight"].shape == (128, 256)


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_port_matches_dlib_on_package_photos(name: str, net: dp.DlibResNet, request: pytest.FixtureRequest) -> None:
    img = request.getfixturevalue(name)
    desc, chip, pts = _dlib_reference(img)
    with torch.no_grad():
        e_chip = net(torch.from_numpy(chip.copy()).permute(2, 0, 1)[None].float() / 255)[0].double().numpy()
    # the network alone: dlib's own chip through the port
    assert _cos(e_chip, desc) > 0.99999
    assert np.abs(e_chip - desc).max() < 1e-4
    # our chip extraction (torch, as dlib.get_face_chip) -> within one grey level of dlib's chip
    mine = dp.extract_face_chip(img, pts).permute(1, 2, 0).numpy() * 255
    assert np.abs(mine - chip).max() <= 1.0 + 1e-4
    assert (np.abs(mine - chip) > 0.5).mean() < 0.01
    # the differentiable path (float image, no quantisation)
    timg = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        e_diff = idm.port_embed(timg[None], torch.from_numpy(pts)[None], net)[0].double().numpy()
    assert _cos(e_diff, desc) > 0.9999
    assert np.linalg.norm(e_diff - desc) < 0.01


def test_chip_geometry_matches_dlib(astronaut: np.ndarray) -> None:
    _, sp, _ = idm._dlib_models()
    det, _, _ = idm._dlib_models()
    shape = sp(astronaut, max(det(astronaut, 1), key=lambda r: r.area()))
    pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    geo = dp.face_chip_geometry(pts, astronaut.shape[:2])
    cd = dlib.get_face_chip_details(shape, 150, 0.25)
    assert abs(geo.width - cd.rect.width()) < 1e-6
    assert abs(geo.angle - cd.angle) < 1e-9
    assert np.allclose(geo.center, [(cd.rect.left() + cd.rect.right()) / 2, (cd.rect.top() + cd.rect.bottom()) / 2])


def test_pyramid_level_chip_matches_dlib(astronaut: np.ndarray) -> None:
    """A face large enough that dlib samples from a pyramid_down<2> level (odd offsets)."""
    import cv2

    big = np.ascontiguousarray(cv2.resize(astronaut, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)[5:, 3:])
    _, _, pts = _dlib_reference(astronaut)
    pts_big = pts * 3.0 + 1.0 - np.array([3.0, 5.0])
    geo = dp.face_chip_geometry(pts_big, big.shape[:2])
    assert geo.level >= 0
    det_shape = dlib.full_object_detection(
        dlib.rectangle(0, 0, 10, 10), dlib.points([dlib.point(int(x), int(y)) for x, y in pts_big.round()]))
    ref = np.asarray(dlib.get_face_chip(big, det_shape, 150, 0.25)).astype(np.float64)
    mine = dp.extract_face_chip(big, pts_big.round()).permute(1, 2, 0).numpy() * 255
    assert np.abs(mine - ref).max() <= 1.0 + 1e-4


def test_identity_loss_gradients(astronaut: np.ndarray, grace_hopper: np.ndarray, net: dp.DlibResNet) -> None:
    _, _, pa = _dlib_reference(astronaut)
    _, _, pg = _dlib_reference(grace_hopper)
    ta = torch.from_numpy(astronaut.copy()).permute(2, 0, 1)[None].float() / 255
    tg = torch.from_numpy(grace_hopper.copy()).permute(2, 0, 1)[None].float() / 255
    loss_fn = idm.IdentityLoss(mode="cosine", net=net)
    loss_fn.set_target(ta, torch.from_numpy(pa)[None])
    x = ta.clone().requires_grad_(True)
    same = loss_fn(x, torch.from_numpy(pa)[None])
    same.backward()
    assert same.item() < 1e-6
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    other = loss_fn(tg, torch.from_numpy(pg)[None])
    assert other.item() > 0.05
    l2 = idm.IdentityLoss(mode="l2", net=net)(tg, torch.from_numpy(pg)[None], target=loss_fn.target)
    assert l2.item() > 0.6  # different people


def test_cache_roundtrip(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FACERIG_HOME", str(tmp_path))
    dp._load_cached.cache_clear()
    try:
        a = dp.load_dlib_resnet()
        files = list((tmp_path / "dlib").glob("*.safetensors"))
        assert len(files) == 1
        dp._load_cached.cache_clear()
        b = dp.load_dlib_resnet()  # from the cache file
        for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(v, v2)
    finally:
        dp._load_cached.cache_clear()


def _agreement(images: list[np.ndarray], net: dp.DlibResNet) -> dict[str, float]:
    cos_chip, cos_diff, l2 = [], [], []
    for img in images:
        det, sp, fr = idm._dlib_models()
        rects = det(img, 1)
        if not rects:
            continue
        desc, chip, pts = _dlib_reference(img)
        with torch.no_grad():
            e = net(torch.from_numpy(chip.copy()).permute(2, 0, 1)[None].float() / 255)[0].double().numpy()
            timg = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
            ed = idm.port_embed(timg[None], torch.from_numpy(pts)[None], net)[0].double().numpy()
        cos_chip.append(_cos(e, desc))
        cos_diff.append(_cos(ed, desc))
        l2.append(float(np.abs(e - desc).max()))
    return {"n": len(cos_chip), "min_cos_chip": min(cos_chip), "median_cos_chip": float(np.median(cos_chip)),
            "min_cos_diff": min(cos_diff), "median_cos_diff": float(np.median(cos_diff)), "max_abs_diff": max(l2)}


@pytest.mark.shared_data
def test_port_agreement_shared_data(net: dp.DlibResNet) -> None:
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image

    imgs = []
    g = shared_path("data", "glint112")
    if g is not None:
        for d in sorted(p for p in g.iterdir() if p.is_dir())[:6]:
            for f in sorted(d.glob("*.*"))[:2]:
                im = load_image(f, min_side=8)
                import cv2

                imgs.append(np.ascontiguousarray(cv2.resize(im, (224, 224), interpolation=cv2.INTER_CUBIC)))
    p = shared_path("data", "portraits", "deepface")
    if p is not None:
        import cv2

        for f in sorted(p.glob("*.*"))[:8]:
            try:
                im = load_image(f)
            except Exception:  # noqa: BLE001
                continue
            k = 1400 / max(im.shape[:2])  # keep HOG fast; faces stay large enough for pyramid levels
            if k < 1:
                im = cv2.resize(im, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            imgs.append(np.ascontiguousarray(im))
    if not imgs:
        pytest.skip("no glint112/portraits images")
    a = _agreement(imgs, net)
    print("dlib port agreement:", a)
    assert a["n"] >= 5
    assert a["min_cos_chip"] > 0.9999
    assert a["min_cos_diff"] > 0.999
