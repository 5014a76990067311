"""`facerig edit` as a user meets it: the faithful pose range, arguments checked before the fit,
several edits per call, the fit cache, and one-line messages (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import facerig.edit as fedit
from facerig.cli import main
from facerig.engines.base import Engine, PoseRange
from facerig.errors import InvalidInput, MissingDependency
from facerig.rig.pose import (
    check_offsets,
    check_pose_range,
    check_source_pose,
    clamp_to_range,
    get_pose,
    set_pose,
)

WARP = PoseRange(yaw=20.0, pitch=12.0, roll=25.0)


def _run(args, capsys):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture()
def photo(tmp_path, astronaut) -> Path:
    p = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(p)
    return p


@pytest.fixture()
def no_fit(monkeypatch):
    """Any detection/fit fails the test: the checks must come first."""

    def boom(*a, **k):
        raise AssertionError("fitted before the arguments were checked")

    monkeypatch.setattr(fedit, "_fit_one", boom)
    monkeypatch.setattr(fedit, "_fit_landmarks", boom)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fitcache")


@pytest.fixture()
def fit_counter(monkeypatch, cache_dir, count_calls):
    monkeypatch.setenv("FACERIG_CACHE", str(cache_dir))
    return count_calls(fedit, "_fit_landmarks")


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.morphable import as_face_model

    fm = as_face_model("builtin")
    return fm, fedit._fit_one(astronaut, fm, "largest", "astronaut")


# ---- the faithful range: pure checks --------------------------------------------------------


def test_warp_engine_declares_its_range():
    from facerig.engines import _resolve

    warp = _resolve("warp").pose_range
    assert (warp.yaw, warp.pitch, warp.roll) == (20.0, 12.0, 25.0)
    assert warp != Engine.pose_range
    assert _resolve("diffusionrig").pose_range.yaw >= warp.yaw


@pytest.mark.parametrize("axis,value,limit", [("yaw", 45.0, 20), ("yaw", -90.0, 20), ("pitch", -30.0, 12),
                                              ("roll", 40.0, 25)])
def test_offsets_beyond_the_range_name_axis_range_and_value(axis, value, limit):
    kw = {"yaw": None, "pitch": None, "roll": None, axis: value}
    with pytest.raises(InvalidInput) as e:
        check_offsets(kw["yaw"], kw["pitch"], kw["roll"], WARP, engine="warp")
    msg = str(e.value)
    assert axis in msg and f"+-{limit}" in msg and f"{value:+.1f}" in msg and "--clamp" in msg
    (y, p, r), notes = check_offsets(kw["yaw"], kw["pitch"], kw["roll"], WARP, clamp=True)
    got = {"yaw": y, "pitch": p, "roll": r}[axis]
    assert got == np.sign(value) * limit and len(notes) == 1 and "clamped" in notes[0]


def test_offsets_within_the_range_pass_unchanged():
    vals, notes = check_offsets(20.0, -12.0, None, WARP)
    assert vals == [20.0, -12.0, None] and notes == []


def test_absolute_and_reference_poses_are_checked_relative_to_the_source(fitted):
    fm, p = fitted
    src_yaw = float(get_pose(p)[0, 0])
    near = set_pose(p, fm, yaw=src_yaw + 15, relative=False)
    assert check_pose_range(p, near, fm, WARP)[1] == []
    far = set_pose(p, fm, yaw=src_yaw + 35, relative=False)
    with pytest.raises(InvalidInput, match=r"--absolute yaw.*\+-20.*\+35"):
        check_pose_range(p, far, fm, WARP, what="--absolute")
    out, notes = check_pose_range(p, far, fm, WARP, clamp=True)
    assert notes and abs(float(get_pose(out)[0, 0]) - (src_yaw + 20)) < 0.05


def test_clamp_to_range_clamps_only_frames_beyond_it(fitted):
    fm, p = fitted
    y0 = float(get_pose(p)[0, 0])
    frames = [set_pose(p, fm, yaw=y0 + d, relative=False) for d in (5.0, 30.0, -40.0)]
    from facerig.types import FaceParams

    seq = FaceParams.cat(frames)
    out, n = clamp_to_range(seq, p, WARP, fm)
    assert n == 2
    yaws = get_pose(out)[:, 0] - y0
    assert torch.allclose(yaws, torch.tensor([5.0, 20.0, -20.0], dtype=yaws.dtype), atol=0.05)
    assert torch.equal(out.rotation[0], seq.rotation[0]) and torch.equal(out.camera[0], seq.camera[0])


def test_profile_source_is_refused_and_a_three_quarter_view_warned(fitted):
    fm, p = fitted
    prof = set_pose(p, fm, yaw=60.0, relative=False)
    with pytest.raises(InvalidInput, match=r"yaw \+-45.*\+60.*--force"):
        check_source_pose(prof, WARP, engine="warp")
    three_q = set_pose(p, fm, yaw=-35.0, relative=False)
    notes = check_source_pose(three_q, WARP)
    assert len(notes) == 1 and "-35" in notes[0]
    assert check_source_pose(set_pose(p, fm, yaw=5.0, relative=False), WARP) == []


def test_api_profile_source_refused_unless_check_source_false(fitted, astronaut):
    fm, p = fitted
    prof = set_pose(p, fm, yaw=60.0, relative=False)
    with pytest.raises(InvalidInput, match="profile"):
        fedit.edit(astronaut, preset="smile", params=prof, model=fm, buffers=False)
    res = fedit.edit(astronaut, preset="smile", params=prof, model=fm, buffers=False, check_source=False)
    assert res.image.shape == astronaut.shape


def test_api_reference_pose_too_far_is_refused_or_clamped(fitted, astronaut):
    fm, p = fitted
    ref = set_pose(p, fm, yaw=40.0)
    with pytest.raises(InvalidInput, match=r"--reference pose yaw"):
        fedit.edit(astronaut, take="pose", reference=ref, params=p, model=fm, buffers=False)
    res = fedit.edit(astronaut, take="pose", reference=ref, params=p, model=fm, buffers=False, clamp=True)
    assert any("clamped" in n for n in res.notes)
    assert abs(float(get_pose(res.params_after)[0, 0] - get_pose(p)[0, 0]) - 20.0) < 0.05


def test_api_like_is_a_deprecated_alias_of_reference(fitted, astronaut):
    fm, p = fitted
    with pytest.warns(DeprecationWarning, match="reference"):
        res = fedit.edit(astronaut, take="light", like=p, params=p, model=fm, buffers=False)
    assert res.image.shape == astronaut.shape


def test_an_edit_that_changes_nothing_says_so(fitted, astronaut):
    fm, p = fitted
    res = fedit.edit(astronaut, yaw=0.0, params=p, model=fm, buffers=False)
    assert any("changes nothing" in n for n in res.notes)


# ---- arguments are checked before the fit -----------------------------------------------------


@pytest.mark.parametrize("args,words", [
    (["--yaw", "45"], ["--yaw", "+-20", "+45"]),
    (["--yaw", "-90"], ["--yaw", "-90"]),
    (["--pitch", "-30"], ["--pitch", "+-12", "-30"]),
    (["--roll", "40"], ["--roll", "+-25"]),
    (["--preset", "smile", "--engine", "warpp"], ["engine", "did you mean 'warp'"]),
    (["--take", "pose"], ["--reference"]),
    (["--reference", "ref.jpg"], ["--take"]),
    (["--preset", "smiel"], ["preset", "smile"]),
    (["--light", "sunset"], ["light", "front"]),
    (["--preset", "smile", "-o", "out.gif"], ["-o/--output"]),
    (["--preset", "smile", "--preset", "sad", "-o", "out.png"], ["{name}"]),
    (["--anchor", "nose", "--preset", "smile"], ["--anchor"]),
    ([], ["at least one change"]),
    (["--preset", "smile", "--text", "happy"], ["text"]),
    (["--gaze", "2,0"], ["gaze x", "-1", "2"]),
    (["--gaze", "left"], ["gaze", "X,Y"]),
    (["--control", "wink=1"], ["--control", "wink_left"]),
    (["--control", "smile"], ["--control", "NAME=VALUE"]),
    (["--control", "smile=0"], ["at least one change"]),
])
def test_bad_arguments_fail_before_detection_in_one_line(args, words, photo, no_fit, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(["edit", photo, *args], capsys)
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("facerig: error:"), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_batch_with_command_line_edits_is_refused(photo, no_fit, tmp_path, capsys):
    b = tmp_path / "edits.json"
    b.write_text(json.dumps([{"preset": "smile"}]))
    rc, _, err = _run(["edit", photo, "--batch", b, "--yaw", "5", "-o", tmp_path / "o_{name}.png"], capsys)
    assert rc == 2 and "--batch" in err


def test_bad_batch_entry_fails_before_detection(photo, no_fit, tmp_path, capsys):
    b = tmp_path / "edits.json"
    b.write_text(json.dumps([{"preset": "smile"}, {"yaw": 50}]))
    rc, _, err = _run(["edit", photo, "--batch", b, "-o", tmp_path / "o_{name}.png"], capsys)
    assert rc == 2 and "+-20" in err


def test_missing_optional_package_names_the_extra(photo, no_fit, tmp_path, capsys, monkeypatch):
    import facerig.engines as engines

    def missing(name):
        raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers")

    monkeypatch.setattr(engines, "_resolve", missing)
    rc, _, err = _run(["edit", photo, "--preset", "smile", "--engine", "diffusionrig", "-o", tmp_path / "o.png"],
                      capsys)
    assert rc == MissingDependency.exit_code and "pip install 'facerig[diffusion]'" in err
    assert "internal error" not in err


def test_import_error_of_an_optional_package_in_any_command_names_the_extra(capsys, monkeypatch):
    import importlib

    def fake(*a, **k):
        raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers")

    cli = importlib.import_module("facerig.cli")

    monkeypatch.setattr(cli, "app", fake)
    rc, _, err = _run(["edit"], capsys)
    assert rc == MissingDependency.exit_code and "facerig[diffusion]" in err


def test_list_presets_lists_presets_lights_engines_and_blendshapes(capsys):
    rc, out, err = _run(["edit", "--list-presets"], capsys)
    assert rc == 0, err
    for w in ("smile", "surprised", "raise_brows", "light presets", "front", "rim", "warp", "diffusionrig",
              "jawOpen", "eyeBlink_L", "aaa", "look_left", "controls", "gaze_x", "wink_right"):
        assert w in out, w


def test_still_image_is_refused_as_a_driving_video(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fedit, "_fit_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted")))
    jpg = tmp_path / "driver.jpg"
    Image.open(photo).convert("RGB").save(jpg)
    rc, _, err = _run(["reenact", photo, jpg, "-o", tmp_path / "o.mp4"], capsys)
    assert rc == 2 and "not a still image" in err and "--reference" in err


def test_reenact_has_model_path(capsys):
    rc, out, _ = _run(["reenact", "--help"], capsys)
    assert rc == 0 and "--model-path" in out
    rc, out, _ = _run(["edit", "--help"], capsys)
    assert rc == 0 and "--model-path" in out and "--clamp" in out and "--reference" in out


# ---- outputs of several edits -------------------------------------------------------------------


def test_output_paths_pattern_folder_and_single(tmp_path):
    assert fedit.output_paths(tmp_path / "a.png", ["smile"], "x.jpg") == [tmp_path / "a.png"]
    assert fedit.output_paths(Path(str(tmp_path / "o_{stem}_{name}.jpg")), ["smile", "sad"], "d/p.jpg") == [
        tmp_path / "o_p_smile.jpg", tmp_path / "o_p_sad.jpg"]
    assert fedit.output_paths(tmp_path / "outs", ["smile", "sad"], "p.jpg") == [
        tmp_path / "outs" / "p_smile.png", tmp_path / "outs" / "p_sad.png"]
    with pytest.raises(InvalidInput, match="pattern"):
        fedit.output_paths(Path(str(tmp_path / "o_{nam}.png")), ["a", "b"], "p.jpg")
    with pytest.raises(InvalidInput, match="pattern"):
        fedit.output_paths(Path(str(tmp_path / "o.png")), ["a", "b"], "p.jpg")


def test_several_edits_share_one_fit_and_the_cache_skips_it_next_time(photo, tmp_path, capsys, fit_counter):
    out = str(tmp_path / "e_{name}.png")
    rc, o, err = _run(["edit", photo, "--preset", "smile", "--preset", "surprised", "-o", out], capsys)
    assert rc == 0, err
    assert fit_counter["n"] == 1
    a = np.asarray(Image.open(tmp_path / "e_smile.png"))
    b = np.asarray(Image.open(tmp_path / "e_surprised.png"))
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 20
    assert o.count("edited ") == 2
    batch = tmp_path / "edits.json"
    batch.write_text(json.dumps([{"name": "turn", "yaw": 10}, {"name": "lit", "light": "left"},
                                 {"text": "make him look surprised"}]))
    rc, o, err = _run(["edit", photo, "--batch", batch, "-o", tmp_path / "outs"], capsys)
    assert rc == 0, err
    assert fit_counter["n"] == 1  # cached: the same photo content is not fitted again
    assert (tmp_path / "outs" / "astronaut_turn.png").is_file() and (tmp_path / "outs" / "astronaut_lit.png").is_file()
    assert "text -> preset surprised" in o
    rc, _, err = _run(["edit", photo, "--preset", "sad", "--no-cache", "-o", tmp_path / "n.png"], capsys)
    assert rc == 0, err
    assert fit_counter["n"] == 2


def test_absolute_pose_beyond_the_range_is_refused_after_the_fit(photo, tmp_path, capsys, fit_counter):
    rc, _, err = _run(["edit", photo, "--pitch", "-30", "--absolute", "-o", tmp_path / "o.png"], capsys)
    assert rc == 2 and "--absolute pitch" in err and "+-12" in err
    rc, out, err = _run(["edit", photo, "--pitch", "-30", "--absolute", "--clamp", "-o", tmp_path / "o.png"],
                        capsys)
    assert rc == 0 and "clamped" in out and (tmp_path / "o.png").is_file()


def test_alpha_channel_is_kept(photo, tmp_path, capsys, fit_counter, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0
    src = tmp_path / "astronaut_rgba.png"
    Image.fromarray(rgba).save(src)
    rc, _, err = _run(["edit", src, "--preset", "smile", "-o", tmp_path / "o.png"], capsys)
    assert rc == 0, err
    out = Image.open(tmp_path / "o.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])


def test_fit_texture_is_written(photo, tmp_path, capsys):
    rc, _, err = _run(["fit", photo, "--texture", "64", "--size", "64", "-o", tmp_path / "fit"], capsys)
    assert rc == 0, err
    tex = np.asarray(Image.open(tmp_path / "fit" / "texture" / "astronaut_albedo.png"))
    mask = np.asarray(Image.open(tmp_path / "fit" / "texture" / "astronaut_mask.png"))
    mask = mask[..., 0] if mask.ndim == 3 else mask
    assert tex.shape == (64, 64, 3) and mask.shape == (64, 64)
    assert 0.1 < (mask > 0).mean() < 1.0 and tex[mask > 0].std() > 5


def test_max_frames_zero_is_refused_before_the_fit(photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fedit, "_fit_one", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted")))
    from facerig.io.video import write_video

    clip = tmp_path / "clip.mp4"
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(3)]
    write_video(clip, iter(frames), fps=10)
    rc, _, err = _run(["reenact", photo, clip, "--max-frames", "0", "-o", tmp_path / "o.mp4"], capsys)
    assert rc == 2 and "--max-frames" in err and "got 0" in err


def test_read_video_max_frames_zero_is_a_typed_error(tmp_path):
    from facerig.io.video import read_video, write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, iter([np.zeros((32, 32, 3), np.uint8)] * 2), fps=10)
    with pytest.raises(InvalidInput, match="max-frames"):
        read_video(clip, max_frames=0)


def test_source_warning_is_logged_once_per_call(fitted, astronaut, caplog):
    fm, p = fitted
    three_q = set_pose(p, fm, yaw=-35.0, relative=False)
    with caplog.at_level("WARNING", logger="facerig.edit"):
        rs = fedit.edit_many(astronaut, ["smile", "sad"], params=three_q, model=fm, buffers=False)
    assert [r.message for r in caplog.records].count(rs[0].notes[0]) == 1
    assert all("-35" in r.notes[0] for r in rs)


@pytest.mark.shared_data
def test_real_near_profile_photo_is_refused_and_force_edits_it(tmp_path, capsys):
    from facerig.io.assets import shared_path

    photo = shared_path("data", "portraits", "human", "stock-models-14.jpg")  # fitted at yaw about +50
    if photo is None:
        pytest.skip("stock-models-14.jpg absent from the shared data")
    rc, _, err = _run(["edit", photo, "--preset", "smile", "-o", tmp_path / "o.png"], capsys)
    assert rc == 2 and "near profile" in err and "--force" in err
    assert not (tmp_path / "o.png").exists()
    rc, _, err = _run(["edit", photo, "--preset", "smile", "--force", "-o", tmp_path / "o.png"], capsys)
    assert rc == 0, err
    assert (tmp_path / "o.png").is_file()
