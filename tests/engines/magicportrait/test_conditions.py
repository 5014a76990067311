"""MagicPortrait conditions from facerig's fit: a synthetic frontal builtin head with known geometry
(no photo fit), the release's map conventions, structured alignment and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facerig.engines.magicportrait.conditions import (
    FacerigMagicConditioner,
    MagicPortraitFrames,
    release_maps,
)
from facerig.errors import IncompatibleModel, InvalidInput
from facerig.types import CropTransform, FaceParams

S = 128
FRAME = 320
NOSE_TIP, CHEEK_L, CHEEK_R, FOREHEAD, CHIN = 1, 234, 454, 151, 152


@pytest.fixture(scope="module")
def model():
    from facerig.morphable import load_face_model

    return load_face_model("builtin")


def _params(model, **values: float) -> FaceParams:  # noqa: ANN001
    light = torch.zeros(1, 9, 3)
    light[:, 0] = math.sqrt(4 * math.pi)  # shading 1 everywhere
    half = FRAME / 2.0
    crop = CropTransform(np.array([[1.0, 0, 0], [0, 1.0, 0]]), FRAME, (FRAME, FRAME), "deca")
    return FaceParams(model=model.name, identity=torch.zeros(1, model.n_identity),
                      expression=model.expression_vector(values) if values else torch.zeros(1, model.n_expression),
                      expression_names=model.expression_names, rotation=torch.zeros(1, 3),
                      camera=torch.tensor([[0.08 * 160 / half, 0.0, 0.0]]), light=light, crop=[crop])


@pytest.fixture(scope="module")
def frontal(model):  # noqa: ANN001
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (FRAME, FRAME, 3), dtype=np.uint8)
    src = _params(model)
    cond = FacerigMagicConditioner(model, S)
    st = cond.source_state(image, src)
    return cond, st, src, image


def _crop_landmarks(cond, st, params) -> np.ndarray:  # noqa: ANN001
    return st.crop.apply(cond._rig._points(params))


def _at(t: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    x, y = int(round(p[0])), int(round(p[1]))
    return t[..., y, x]


def test_shapes_ranges_dtypes_and_reference(frontal, model) -> None:  # noqa: ANN001
    cond, st, src, image = frontal
    fr = cond.frames(st, [src, src, src])
    assert isinstance(fr, MagicPortraitFrames) and fr.num_frames == 3 and fr.size == S and len(fr) == 3
    for name in ("depth", "normal", "render"):
        t = getattr(fr, name)
        assert t.shape == (3, 3, S, S) and t.dtype == torch.float32
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert fr.mask.shape == (3, 1, S, S) and set(torch.unique(fr.mask).tolist()) <= {0.0, 1.0}
    assert torch.equal(fr.depth[:, 0], fr.depth[:, 1]) and torch.equal(fr.depth[:, 0], fr.depth[:, 2])
    from facerig.detect.crops import warp_to_crop

    ref = warp_to_crop(image, st.crop, border="constant", interpolation="cubic")
    torch.testing.assert_close(fr.reference, torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255)
    assert fr.crop is st.crop
    # slicing keeps the reference and the crop
    one = fr[1]
    assert one.num_frames == 1 and one.reference is fr.reference and torch.equal(one.depth[0], fr.depth[1])
    assert fr[0:2].num_frames == 2 and fr[[2, 0]].num_frames == 2
    d, n, r = fr.maps()
    assert d.shape == (1, 3, 3, S, S) and torch.equal(n[0, :, 2], fr.normal[2])


def test_synthetic_frontal_head_ground_truth(frontal) -> None:  # noqa: ANN001
    cond, st, src, _ = frontal
    fr = cond.frames(st, [src])
    lm = _crop_landmarks(cond, st, src)
    covered = fr.render[0].sum(0) > 0
    # background black in every map
    for t in (fr.depth, fr.normal, fr.render):
        assert float(t[0][:, ~covered].abs().max()) == 0.0
    # depth: near = bright, nose nearer than cheeks and chin; the face is in the upper part of the range
    nose = float(_at(fr.depth[0, 0], lm[NOSE_TIP]))
    for k in (CHEEK_L, CHEEK_R, CHIN):
        p = lm[k] + (lm[NOSE_TIP] - lm[k]) * 0.1  # a little inside the contour
        assert nose > float(_at(fr.depth[0, 0], p)) + 0.02
    assert nose > 0.9
    # released normal colours = clamp(n, 0, 1): the forehead faces the camera -> ~ (0, 0, 1)
    n = _at(fr.normal[0], lm[FOREHEAD] + (lm[NOSE_TIP] - lm[FOREHEAD]) * 0.15)
    assert float(n[2]) > 0.9 and float(n[0]) < 0.25 and float(n[1]) < 0.35
    # the face's image-right side faces +x (red), the image-left side is clamped to 0 red
    right = _at(fr.normal[0], lm[CHEEK_R] + (lm[NOSE_TIP] - lm[CHEEK_R]) * 0.05)
    left = _at(fr.normal[0], lm[CHEEK_L] + (lm[NOSE_TIP] - lm[CHEEK_L]) * 0.05)
    assert float(right[0]) > 0.3 and float(left[0]) == 0.0
    # mask covers the render (dilated)
    assert bool((fr.mask[0, 0][covered] == 1).all()) and float(fr.mask[0, 0].sum()) > float(covered.sum())
    # render: neutral light -> render = albedo, in (0, 1]
    assert float(fr.render[0][:, covered].min()) > 0.0


def test_signed_normals(model, frontal) -> None:  # noqa: ANN001
    _, _, src, image = frontal
    cond = FacerigMagicConditioner(model, S, normals="signed")
    st = cond.source_state(image, src)
    fr = cond.frames(st, [src])
    clamp = frontal[0].frames(frontal[1], [src])
    lm = _crop_landmarks(cond, st, src)
    n = _at(fr.normal[0], lm[FOREHEAD] + (lm[NOSE_TIP] - lm[FOREHEAD]) * 0.15)
    torch.testing.assert_close(n, torch.tensor([0.5, 0.5, 1.0]), atol=0.15, rtol=0)
    covered = fr.render[0].sum(0) > 0
    # signed = (n + 1) / 2 of the same normals whose positive part the clamp keeps
    nn_ = fr.normal[0][:, covered] * 2 - 1
    torch.testing.assert_close(nn_.clamp(0, 1), clamp.normal[0][:, covered], atol=1e-5, rtol=0)
    assert float(fr.normal[0][:, ~covered].abs().max()) == 0.0
    assert float(nn_.min()) < -0.3  # negative components survive


def test_release_maps_depth_is_normalised_over_all_vertices() -> None:
    # one triangle seen by a 4x4 raster; the vertex depth range includes a vertex (index 3) that
    # no pixel sees: the covered pixels do NOT span [0, 1] (the release normalises over vertices)
    from facerig.render.raster import rasterize

    screen = torch.tensor([[[0.0, 0.0, 5.0], [4.0, 0.0, 5.0], [0.0, 4.0, 5.0], [9.0, 9.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(screen, faces, 4, 4)
    world = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, -1.0, 1.0], [0.0, 0.0, -1.0]]])
    zv = torch.tensor([[3.0, 3.0, 3.0, 1.0]])
    d, n, r = release_maps(world, faces, zv, frags, torch.full((1, 3, 4, 4), 2.0))
    cov = frags.face_index[0] >= 0
    torch.testing.assert_close(d[0, 0][cov], torch.ones(int(cov.sum())))
    zv2 = torch.tensor([[2.0, 2.0, 2.0, 1.0]]) + 0.0
    zv2[0, 3] = 0.0
    d2, _, _ = release_maps(world, faces, zv2, frags, torch.zeros(1, 3, 4, 4))
    assert float(d2[0, 0][cov].max()) == pytest.approx(1.0)
    assert float(r.max()) == 1.0
    with pytest.raises(InvalidInput, match="normals"):
        release_maps(world, faces, zv, frags, r, normals="raw")


def test_structured_alignment_keeps_identity_and_uses_driver_expression(model, frontal) -> None:  # noqa: ANN001
    from facerig.rig.sequence import align_sequence

    cond, st, src, _ = frontal
    g = torch.Generator().manual_seed(0)
    other = _params(model)
    other = other.replace(identity=0.8 * torch.randn(1, model.n_identity, generator=g))
    drv = FaceParams.cat([other, other.replace(expression=model.expression_vector({"jawOpen": 1.0}))])
    aligned = align_sequence(src, drv, model, motion="absolute")
    fr = cond.frames(st, [aligned[0], aligned[1]])
    # frame 0: driver neutral -> the source's own face (its identity, not the driver's)
    own = cond.frames(st, [src])
    torch.testing.assert_close(fr.depth[0], own.depth[0], atol=2e-3, rtol=0)
    drv_face = cond.frames(st, [other])
    assert float((drv_face.depth[0] - own.depth[0]).abs().max()) > 0.05
    # frame 1: the driver's open jaw: the chin moves down, the forehead stays
    lm = _crop_landmarks(cond, st, src)
    lm1 = _crop_landmarks(cond, st, aligned[1])
    assert lm1[CHIN, 1] > lm[CHIN, 1] + 1.0
    rows = slice(0, int(lm[FOREHEAD, 1]))
    torch.testing.assert_close(fr.normal[1][:, rows], own.normal[0][:, rows], atol=1e-2, rtol=0)
    # a FaceParams of F frames works like the list
    both = cond.frames(st, aligned)
    torch.testing.assert_close(both.render, fr.render)


def test_input_errors(model, frontal) -> None:  # noqa: ANN001
    cond, st, src, image = frontal
    with pytest.raises(InvalidInput, match="size"):
        FacerigMagicConditioner(model, 100)
    with pytest.raises(InvalidInput, match="normals"):
        FacerigMagicConditioner(model, S, normals="raw")
    with pytest.raises(InvalidInput, match="model"):
        FacerigMagicConditioner(None, S)
    with pytest.raises(InvalidInput, match="image"):
        cond.source_state(image[..., :2], src)
    with pytest.raises(InvalidInput, match="image"):
        cond.source_state(image[:100], src)
    with pytest.raises(InvalidInput, match="params"):
        cond.source_state(image, FaceParams.cat([src, src]))
    with pytest.raises(InvalidInput, match="state"):
        cond.frames("nope", [src])
    with pytest.raises(InvalidInput, match="target_params_list"):
        cond.frames(st, [])
    with pytest.raises(InvalidInput, match=r"target_params_list\[1\]"):
        cond.frames(st, [src, "x"])
    with pytest.raises(IncompatibleModel):
        cond.frames(st, [src.replace(model="flame")])
    fr = cond.frames(st, [src])
    with pytest.raises(InvalidInput, match="idx"):
        fr[3]
    with pytest.raises(InvalidInput, match="depth"):
        MagicPortraitFrames(fr.reference, fr.depth[:, :1], fr.normal, fr.render, fr.mask, fr.crop)
    with pytest.raises(InvalidInput, match="mask"):
        MagicPortraitFrames(fr.reference, fr.depth, fr.normal, fr.render, fr.mask[:, :, :4], fr.crop)
