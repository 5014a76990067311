"""RigFace conditions: facerig's own (builtin fit of a real photo) and the release's (synthetic
FLAME-shaped model + DECA-layout + Deep3D-layout files written here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facerig.engines.rigface.conditions import (
    FacerigConditioner,
    ReleasedConditioner,
    RigFaceConditions,
    image_to_unit,
    render_to_unit,
    rigface_crop,
)
from facerig.errors import AssetMissing, InvalidInput

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from rigface_cond_fixture import deca_code, write_deca_with_code, write_deep3d, write_flame_texture  # noqa: E402

S = 256
GREY_UNIT = float(image_to_unit(np.full((1, 1, 3), 127, np.uint8))[0, 0, 0, 0])  # float32 127 / 127.5 - 1


def test_rigface_crop_is_the_release_box_geometry() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 300, (478, 2))
    pts[10] = [200, 90]    # forehead
    pts[152] = [205, 330]  # chin
    pts[:468, 0] = np.clip(pts[:468, 0], 120, 280)
    pts[0, 0], pts[1, 0] = 120, 280
    ct = rigface_crop(pts, 512, frame_size=(480, 640))
    from facerig.engines.rigface.conditions import MP_BOX_RAISE, MP_BOX_WIDTH

    centre = np.array([[200.0, (90 + 330) / 2 - MP_BOX_RAISE * 160]])
    np.testing.assert_allclose(ct.apply(centre), [[256, 256]], atol=1e-9)
    # the square of side 1.5 * box width (the detector-like box: the mesh's width x MP_BOX_WIDTH)
    # lands on [80, 432]
    np.testing.assert_allclose(ct.scale * 1.5 * 160 * MP_BOX_WIDTH, 352, rtol=1e-12)
    assert ct.kind == "rigface" and ct.size == 512 and np.allclose(ct.matrix[0, 1], 0)


def test_unit_mappings() -> None:
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, 2)
    x = image_to_unit(img)
    assert x.shape == (1, 3, 16, 16) and float(x.min()) == -1 and float(x.max()) == 1
    r = render_to_unit(torch.tensor([-0.5, 0.25, 1.7]).reshape(1, 3, 1, 1))
    torch.testing.assert_close(r.flatten(), torch.tensor([-1.0, -0.5, 1.0]))


# ------------------------------------------------------------------------------------------------
# facerig's own conditioning


@pytest.fixture(scope="module")
def fitted(astronaut: np.ndarray):
    from facerig.fit.api import fit_image
    from facerig.morphable import load_face_model

    m = load_face_model("builtin")
    params = fit_image(astronaut, m).params
    cond = FacerigConditioner(m, S)
    return m, params, cond, cond.source_state(astronaut, params)


def _check_background(c: RigFaceConditions) -> None:
    m = c.mask[0, 0] > 0.5
    assert torch.all(c.background[0][:, m] == GREY_UNIT)
    assert torch.equal(c.background[0][:, ~m], c.source[0][:, ~m])


def test_facerig_conditions_shapes_ranges_and_render(fitted, astronaut: np.ndarray) -> None:  # noqa: ANN001
    from facerig.detect.crops import warp_to_crop
    from facerig.train.data import render_aligned

    m, params, cond, state = fitted
    c = cond.conditions(state, params)
    for name in ("source", "background", "render"):
        t = getattr(c, name)
        assert t.shape == (1, 3, S, S) and t.dtype == torch.float32
        assert float(t.min()) >= -1 and float(t.max()) <= 1
    assert c.mask.shape == (1, 1, S, S) and set(torch.unique(c.mask).tolist()) <= {0.0, 1.0}
    assert c.expression_kind == "facerig"
    assert c.expression.shape == (1, params.expression.shape[1]) == (1, cond.expression_dim(params))
    torch.testing.assert_close(c.expression, params.expression.float())
    # the source is the aligned crop of the photo through c.crop
    ref = image_to_unit(warp_to_crop(astronaut, c.crop, border="constant"))
    torch.testing.assert_close(c.source, ref)
    # the render is facerig's lambertian render in that crop, clamped then mapped
    buf = render_aligned(m, params, S, c.crop)
    torch.testing.assert_close(c.render, buf.render.clamp(0, 1) * 2 - 1)
    assert torch.all(c.render[0][:, buf.mask[0, 0] < 0.5] == -1)
    _check_background(c)
    # the person covers the face and hair, not the whole crop
    assert 0.3 < float(c.mask.mean()) < 0.95
    assert bool((c.mask[0, 0][buf.mask[0, 0] > 0.5] > 0.5).all())


def test_pose_edit_paints_the_union(fitted) -> None:  # noqa: ANN001
    from facerig.rig.pose import set_pose

    m, params, cond, state = fitted
    same = cond.conditions(state, params)
    turned = cond.conditions(state, set_pose(params, m, yaw=30))
    a, b = same.mask[0, 0] > 0.5, turned.mask[0, 0] > 0.5
    assert bool((b | ~a).all())             # the source region is kept
    assert int(b.sum()) > int(a.sum()) + 50  # and the target's region added
    _check_background(turned)
    assert not torch.equal(turned.render, same.render)


def test_expression_edit_keeps_the_source_region_and_changes_the_vector(fitted) -> None:  # noqa: ANN001
    m, params, cond, state = fitted
    exp = params.expression.clone()
    names = list(params.expression_names)
    exp[0, names.index("jawOpen")] = 0.8
    tgt = params.replace(expression=exp)
    c = cond.conditions(state, tgt)
    torch.testing.assert_close(c.expression, exp.float())
    person = torch.from_numpy(state.person)
    mk = c.mask[0, 0] > 0.5
    assert bool(mk[person].all())
    # only the target's (dilated) face can add to it: nothing far from the face
    extra = mk & ~person
    assert int(extra.sum()) < 0.05 * S * S


def test_facerig_bad_inputs(fitted, astronaut: np.ndarray) -> None:  # noqa: ANN001
    m, params, cond, state = fitted
    with pytest.raises(InvalidInput, match="image"):
        cond.source_state(astronaut[:100], params)
    with pytest.raises(InvalidInput, match="state"):
        cond.conditions(object(), params)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="size"):
        FacerigConditioner(m, 100)
    with pytest.raises(InvalidInput, match="model"):
        FacerigConditioner(None)


def test_conditions_dataclass_validates_and_moves(fitted) -> None:  # noqa: ANN001
    m, params, cond, state = fitted
    c = cond.conditions(state, params)
    h = c.to("cpu", torch.float64)
    assert h.render.dtype == torch.float64 and h.crop is c.crop and h.size == S and h.expression_dim == c.expression_dim
    with pytest.raises(InvalidInput, match="render"):
        RigFaceConditions(c.source, c.background, c.render[:, :, :8], c.expression, "facerig", c.crop, c.mask)
    with pytest.raises(InvalidInput, match="expression_kind"):
        RigFaceConditions(c.source, c.background, c.render, c.expression, "bfm", c.crop, c.mask)


# ------------------------------------------------------------------------------------------------
# the release's conditioning


@pytest.fixture(scope="module")
def released_files(tmp_path_factory: pytest.TempPathFactory):
    from flame_fixture import write_synthetic_flame

    from facerig.io.assets import shared_path

    if shared_path("assets", "flame-aux") is None:
        pytest.skip("shared flame-aux folder absent (DECA's 68-landmark embedding is needed)")
    d = tmp_path_factory.mktemp("released")
    write_synthetic_flame(d / "generic_model.pkl")
    write_deca_with_code(d / "deca_model.tar", deca_code())
    write_deep3d(d / "d3dfr_res50_nofc.pth", "rigface")
    write_flame_texture(d / "FLAME_texture.npz")
    return d


@pytest.fixture(scope="module")
def released(released_files: Path, astronaut: np.ndarray):
    d = released_files
    rc = ReleasedConditioner(flame=d / "generic_model.pkl", deca=d / "deca_model.tar",
                             deep3d=d / "d3dfr_res50_nofc.pth", size=S, texture=d / "FLAME_texture.npz")
    return rc, rc.source_state(astronaut)


def _centre_px(lm: np.ndarray) -> np.ndarray:
    eye = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    return eye + ((lm[48] + lm[54]) / 2 - eye) * 0.1


def test_released_conditions(released) -> None:  # noqa: ANN001
    from facerig.engines.rigface.deep3d import deep3d_input

    rc, st = released
    c = rc.conditions(st)
    assert c.expression_kind == "deep3d" and c.expression.shape == (1, 64)
    with torch.no_grad():
        exp = rc.deep3d.expression(deep3d_input(st.aligned, st.points, "rigface"))
    torch.testing.assert_close(c.expression, exp)
    for name in ("source", "background", "render"):
        t = getattr(c, name)
        assert t.shape == (1, 3, S, S) and float(t.min()) >= -1 and float(t.max()) <= 1
    _check_background(c)
    render, face, _ = rc.render(st, st.codes)
    torch.testing.assert_close(c.render, render.clamp(0, 1) * 2 - 1)
    assert 0.05 < face.mean() < 0.8 and torch.all(c.render[0][:, ~torch.from_numpy(face)] == -1)
    # DECA crop at scale 1.3 of the aligned crop
    assert st.deca_crop.size == 224 and st.deca_crop.frame_size == (S, S)


def test_released_pose_delta_union_and_align_ffhq(released) -> None:  # noqa: ANN001
    rc, st = released
    same = rc.conditions(st)
    turned = rc.conditions(st, pose_delta=(25.0, 0.0, 0.0))
    a, b = same.mask[0, 0] > 0.5, turned.mask[0, 0] > 0.5
    assert bool((b | ~a).all()) and int(b.sum()) > int(a.sum())
    assert not torch.equal(turned.render, same.render)
    _check_background(turned)
    # align_ffhq: the eye-mouth centre stays where the source's is
    codes = {k: v.clone() for k, v in st.codes.items()}
    from facerig.rotations import ypr_to_axis_angle

    codes["pose"][:, :3] = ypr_to_axis_angle(torch.tensor([[25.0, 10.0, 0.0]], dtype=torch.float64)).float()
    _, _, lm_t = rc.render(st, codes)
    _, _, lm_s = rc.render(st, st.codes)
    np.testing.assert_allclose(_centre_px(lm_t), _centre_px(lm_s), atol=1e-3)
    assert np.abs(lm_t - lm_s).max() > 5  # the head did turn


def test_released_light_and_reference(released, grace_hopper: np.ndarray) -> None:  # noqa: ANN001
    rc, st = released
    base = rc.conditions(st)
    sh = st.codes["light"][0].clone() * 2.0
    bright = rc.conditions(st, light=sh)
    torch.testing.assert_close(bright.mask, base.mask)  # no pose change: same region
    face = base.render > -1
    assert float(bright.render[face].mean()) > float(base.render[face].mean())
    ref = rc.source_state(grace_hopper)
    c = rc.conditions(st, reference_image=grace_hopper, take=("expression",))
    torch.testing.assert_close(c.expression, ref.expression)
    assert not torch.allclose(c.expression, base.expression)
    kept = rc.conditions(st, reference_image=grace_hopper, take=("light",))
    torch.testing.assert_close(kept.expression, base.expression)


def test_released_refuses_presets_and_bad_options(released) -> None:  # noqa: ANN001
    rc, st = released
    with pytest.raises(InvalidInput, match="--reference"):
        rc.conditions(st, preset="smile")
    with pytest.raises(InvalidInput, match="take"):
        rc.conditions(st, take=("smile",))
    with pytest.raises(InvalidInput, match="pose_delta"):
        rc.conditions(st, pose_delta=(1.0, 2.0))
    with pytest.raises(InvalidInput, match="light"):
        rc.conditions(st, light=np.zeros((4, 3)))
    with pytest.raises(InvalidInput, match="conditions options"):
        rc.conditions(st, strength=2)


def test_released_missing_assets_are_named(released_files: Path, tmp_path: Path) -> None:
    d = released_files
    kw = {"flame": d / "generic_model.pkl", "deca": d / "deca_model.tar", "deep3d": d / "d3dfr_res50_nofc.pth"}
    for key, what in (("flame", "generic_model.pkl"), ("deca", "deca_model.tar"), ("deep3d", "Deep3DFaceRecon")):
        bad = dict(kw)
        bad[key] = tmp_path / "absent.file"
        with pytest.raises(AssetMissing, match=what) as e:
            ReleasedConditioner(**bad, size=S)
        assert "absent.file" in str(e.value)
    with pytest.raises(AssetMissing, match="FLAME_texture.npz"):
        ReleasedConditioner(**kw, size=S, texture=tmp_path / "FLAME_texture.npz")
    with pytest.raises(AssetMissing, match="deca_model.tar"):
        ReleasedConditioner(flame=kw["flame"], deep3d=kw["deep3d"], size=S)


def test_target_region_moves_the_head_and_keeps_the_body() -> None:
    from facerig.engines.rigface.conditions import estimate_target_region

    region = np.zeros((128, 128), bool)
    region[20:60, 40:80] = True    # head
    region[70:128, 20:108] = True  # body
    src = np.array([[45.0, 25.0], [75.0, 25.0], [60.0, 40.0], [50.0, 55.0], [70.0, 55.0]])
    tgt = src + np.array([15.0, 0.0])  # the head moves 15 px to the right
    out = estimate_target_region(region, src, tgt)
    assert out[20:60, 55:95].all() and not out[20:60, 40:54].any()  # the head moved
    np.testing.assert_array_equal(out[70:], region[70:])            # the body stayed
    face = np.zeros_like(region)
    face[0:5, 0:5] = True
    assert estimate_target_region(region, src, tgt, face)[2, 2]
    with pytest.raises(InvalidInput, match="target_points"):
        estimate_target_region(region, src, tgt[:3])


def test_facerig_conditioner_with_flame_uses_deca_landmarks_and_jaw(released_files: Path,
                                                                    astronaut: np.ndarray) -> None:
    from facerig.detect import FaceDetector
    from facerig.detect.crops import deca_crop
    from facerig.morphable.flame import FLAMEFaceModel
    from facerig.types import FaceParams

    flame = FLAMEFaceModel.load(released_files / "generic_model.pkl")
    lm = FaceDetector().detect_one(astronaut)
    light = torch.zeros(1, 9, 3)
    light[0, 0] = 1.0
    params = FaceParams(model="flame", identity=torch.zeros(1, 100), expression=torch.zeros(1, 50),
                        expression_names=tuple(f"e{i}" for i in range(50)), rotation=torch.zeros(1, 3),
                        camera=torch.tensor([[9.0, 0.0, 0.0]]), light=light,
                        jaw_pose=torch.tensor([[0.2, 0.0, 0.0]]), crop=[deca_crop(lm)])
    cond = FacerigConditioner(flame, S)
    st = cond.source_state(astronaut, params)
    c = cond.conditions(st, params)
    assert c.expression.shape == (1, 53) == (1, cond.expression_dim(params))
    torch.testing.assert_close(c.expression[:, 50:], params.jaw_pose)
    # the crop is centred on the rendered face (the box of DECA's 68 landmarks), not on (0, 0)
    face = c.render[0, 0] > -1
    ys, xs = np.nonzero(face.numpy())
    assert abs(xs.mean() - S / 2) < S / 8 and abs(ys.mean() - S / 2) < S / 5


def test_model_albedo_option_drops_the_photo_texture(fitted) -> None:  # noqa: ANN001
    from facerig.train.data import render_aligned

    m, params, cond, state = fitted
    smooth = FacerigConditioner(m, S, albedo="model")
    c = smooth.conditions(state, params)
    ref = render_aligned(m, params.replace(albedo=None, texture=None, texture_mask=None), S, c.crop)
    torch.testing.assert_close(c.render, ref.render.clamp(0, 1) * 2 - 1)
    assert not torch.allclose(c.render, cond.conditions(state, params).render)
    with pytest.raises(InvalidInput, match="albedo"):
        FacerigConditioner(m, S, albedo="photo")


def test_released_no_face_is_typed(released) -> None:  # noqa: ANN001
    from facerig.errors import NoFaceFound

    rc, st = released
    with pytest.raises(NoFaceFound, match="reference_image"):
        rc.conditions(st, reference_image=np.full((128, 128, 3), 200, np.uint8))


@pytest.mark.shared_data
def test_facerig_pose_edit_on_a_turned_shared_portrait() -> None:
    from facerig.fit.api import fit_image
    from facerig.io.assets import shared_path
    from facerig.io.image import load_image
    from facerig.morphable import load_face_model
    from facerig.rig.pose import set_pose

    p = shared_path("data", "portraits", "pexels-unsplash", "pexels-andrea-piacquadio-733872.jpg")
    if p is None:
        pytest.skip("portrait absent")
    img = load_image(p)
    m = load_face_model("builtin")
    params = fit_image(img, m).params
    cond = FacerigConditioner(m, S)
    st = cond.source_state(img, params)
    c = cond.conditions(st, set_pose(params, m, yaw=20))  # the portrait is at yaw -30: turn it to -10
    _check_background(c)
    face = c.render[0, 0] > -1
    assert bool((c.mask[0, 0][face] > 0.5).all())
    assert 0.3 < float(c.mask.mean()) < 0.95
    ys, xs = np.nonzero(face.numpy())
    assert abs(xs.mean() - S / 2) < S / 6 and abs(ys.mean() - S / 2) < S / 5


def test_prepared_shard_crops_frame_the_face_as_facerig_prepare(fitted, astronaut: np.ndarray) -> None:  # noqa: ANN001
    """Weights trained on prepared shards record their crop; the conditioner then frames the face
    with the same crop function as ``facerig prepare`` (reflect border), not the release's box."""
    from facerig.detect.crops import ffhq_crop, warp_to_crop

    m, params, _, _ = fitted
    cond = FacerigConditioner(m, S, crop="ffhq")
    st = cond.source_state(astronaut, params)
    lm = cond._crop_points(params, cond._points(params))
    ref = ffhq_crop(lm, S, frame_size=astronaut.shape[:2])
    np.testing.assert_allclose(st.crop.matrix, ref.matrix, atol=1e-9)
    np.testing.assert_array_equal(st.aligned, warp_to_crop(astronaut, ref, border="reflect", interpolation="cubic"))
    rel = cond.conditions(st, params)
    _check_background(rel)
    with pytest.raises(InvalidInput, match="crop"):
        FacerigConditioner(m, S, crop="insightface")


_AUTHORS = Path(os.environ.get("FACERIG_RIGFACE_SNAPSHOT", "/nonexistent"))


@pytest.mark.skipif(not (_AUTHORS / "utils" / "test_images").is_dir(),
                    reason="set FACERIG_RIGFACE_SNAPSHOT to an extracted weimengting/RigFace snapshot")
def test_crop_and_person_mask_reproduce_the_release_test_images() -> None:
    """On the release's own aligned crops, cropping again is (nearly) the identity, and the person
    region matches the grey region of the release's background images (BiSeNet there)."""
    from PIL import Image

    from facerig.detect import FaceDetector

    det = FaceDetector()
    for idn, bg in (("id1", "bg_pose+exp.png"), ("id2", "bg_light.png")):
        d = _AUTHORS / "utils" / "test_images" / idn
        sor = np.asarray(Image.open(d / "sor.png").convert("RGB"))
        ct = rigface_crop(np.asarray(det.detect_one(sor).points)[:, :2], 512, frame_size=sor.shape[:2])
        corners = ct.apply(np.array([[0.0, 0.0], [511.0, 511.0]]))
        assert np.abs(corners - [[0, 0], [511, 511]]).max() < 15, corners
        theirs = np.abs(np.asarray(Image.open(d / bg).convert("RGB")).astype(int) - 127).max(-1) <= 2
        from facerig.engines.rigface.person import person_mask

        ours = person_mask(sor)
        assert (theirs & ours).sum() / (theirs | ours).sum() > 0.9
