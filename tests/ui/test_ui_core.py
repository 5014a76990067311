"""The web UI's work without a browser (facerig.ui.core): uploads, limits, cached fits, faces,
engine availability, edits, downloads and reenactment."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import facerig.edit as fedit
from facerig.errors import InvalidInput
from facerig.ui.core import EditValues, EngineChoice, Studio, engine_status, error_message


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return Studio(work_dir=tmp_path_factory.mktemp("ui"), max_upload_mb=2, max_upload_pixels=3_000_000)


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory, astronaut):
    p = tmp_path_factory.mktemp("in") / "astronaut.png"
    Image.fromarray(astronaut).save(p)
    return p


def test_upload_limits_are_checked_before_decoding(studio, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (3 * 1024 * 1024))
    with pytest.raises(InvalidInput, match="at most 2 MB"):
        studio.load(big)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (4000, 1000)).save(wide)  # 4 MP, small file: refused from the header
    with pytest.raises(InvalidInput, match="wide.png"):
        studio.load(wide)
    junk = tmp_path / "x.png"
    junk.write_bytes(b"not an image" * 10)
    with pytest.raises(InvalidInput, match=r"readable image.*mine\.png"):
        studio.load(junk, name="mine.png")
    with pytest.raises(InvalidInput, match="uploaded image"):
        studio.load(tmp_path / "missing.png")
    from facerig.errors import NoFaceFound

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 400, 3), 180, np.uint8)).save(blank)
    with pytest.raises(NoFaceFound, match="no face"):
        studio.load(blank)
    assert "no face" in error_message(NoFaceFound("the photo", "none"))


def test_one_fit_per_upload_and_slider_edits_render_only(studio, photo_path, count_calls):
    calls = count_calls(fedit, "_fit_landmarks", key="fit")
    photo = studio.load(photo_path)
    assert studio.load(photo_path) is photo and len(photo.faces) == 1
    plain = studio.render(photo.key, EditValues())
    assert np.array_equal(plain.image, photo.image)  # nothing moved: the photo itself
    a = studio.render(photo.key, EditValues(controls={"smile": 0.8}))
    b = studio.render(photo.key, EditValues(controls={"smile": 0.8, "blink": 1.0}, yaw=8, light="left"))
    t = studio.render(photo.key, EditValues(text="make her look surprised", preset="smile"))
    assert calls["fit"] == 1
    assert not np.array_equal(a.image, photo.image) and not np.array_equal(a.image, b.image)
    assert t.mapped == ("surprised", 0.8) and "preset **surprised**" in t.message  # the text wins over the preset
    assert a.before.shape == a.after.shape and a.image.shape == photo.image.shape
    with pytest.raises(InvalidInput, match="yaw"):
        studio.render(photo.key, EditValues(yaw=35))  # beyond the warp engine's faithful range
    with pytest.raises(InvalidInput, match="face index"):
        studio.render(photo.key, EditValues(controls={"smile": 0.5}), face=3)
    bufs = studio.render(photo.key, EditValues(controls={"aaa": 1.0}), buffers=True).buffers
    assert [lab for _, lab in bufs][:2] == ["render before", "render after"] and len(bufs) == 10
    out = studio.save(a)
    assert out.suffix == ".png" and np.array_equal(np.asarray(Image.open(out).convert("RGB")), a.image)


def test_download_keeps_the_photos_transparency(studio, tmp_path, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner
    p = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(p)
    photo = studio.load(p)
    out = studio.save(studio.render(photo.key, EditValues(controls={"smile": 0.7})))
    back = np.asarray(Image.open(out))
    assert back.shape == rgba.shape and (back[:40, :40, 3] == 0).all() and (back[100:, 100:, 3] == 255).all()


def test_several_faces_are_listed_and_each_edited_alone(studio, tmp_path, grace_hopper):
    import cv2

    g = cv2.resize(grace_hopper, (int(grace_hopper.shape[1] * 512 / grace_hopper.shape[0]), 512))
    both = np.ascontiguousarray(np.concatenate([g, g[:, ::-1]], axis=1))  # two faces side by side
    p = tmp_path / "two.png"
    Image.fromarray(both).save(p)
    photo = studio.load(p)
    assert len(photo.faces) == 2
    from facerig.ui.core import face_thumbnails

    assert [t.shape for t in face_thumbnails(photo.image, photo.faces)] == [(96, 96, 3)] * 2
    for i in (0, 1):
        r = studio.render(photo.key, EditValues(controls={"mouth_open": 1.0}), face=i)
        changed = np.abs(r.image.astype(int) - both.astype(int)).max(-1) > 20
        x0, _, x1, _ = photo.faces[i].box
        cols = np.nonzero(changed.any(0))[0]
        assert cols.size and cols.min() >= x0 - 0.5 * (x1 - x0) and cols.max() <= x1 + 0.5 * (x1 - x0), i


def test_engines_are_disabled_with_a_reason(tmp_path, monkeypatch):
    assert engine_status(EngineChoice())[0]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "diffusers" else real(n, *a))
    ok, why = engine_status(EngineChoice("rigface", str(tmp_path), str(tmp_path)))
    assert not ok and "facerig[diffusion]" in why
    monkeypatch.setattr(importlib.util, "find_spec", real)
    ok, why = engine_status(EngineChoice("rigface"))
    assert not ok and "weights" in why
    ok, why = engine_status(EngineChoice("magicportrait", str(tmp_path / "nope")))
    assert not ok and "no weights at" in why
    monkeypatch.delenv("FACERIG_SD15", raising=False)
    ok, why = engine_status(EngineChoice("rigface", str(tmp_path)))
    assert not ok and "Stable Diffusion" in why
    with pytest.raises(InvalidInput, match="disabled"):
        Studio(work_dir=tmp_path).session("k", 0, EngineChoice("diffusionrig"))


def test_a_neural_engine_renders_through_the_ui_path(studio, photo_path, tmp_path_factory, astronaut):
    """The rigface engine from tiny weights the test writes (the released layout), chosen like the
    UI's engine selector does: the edit changes the person and keeps the photo's corners."""
    pytest.importorskip("diffusers")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
    from rigface_tiny import write_tiny_rigface

    base, weights = write_tiny_rigface(tmp_path_factory.mktemp("rf"))
    choice = EngineChoice("rigface", str(weights), str(base), steps=2)
    assert engine_status(choice)[0]
    photo = studio.load(photo_path)
    r = studio.render(photo.key, EditValues(controls={"smile": 0.8}), engine=choice)
    assert r.result.engine == "rigface" and r.image.shape == astronaut.shape
    changed = np.abs(r.image.astype(int) - astronaut).sum(2) > 0
    assert changed.any() and not changed[:, :80].any() and not changed[-60:].any()
    # the warp session of the same photo reuses the fit: same params
    assert studio.session(photo.key).params is studio.session(photo.key, 0, choice).params


def test_error_messages_are_one_line_and_name_the_extra():
    assert error_message(InvalidInput("photo", "x", "y")) == "photo: expected x, got y"
    msg = error_message(ModuleNotFoundError("No module named 'diffusers'", name="diffusers"))
    assert "facerig[diffusion]" in msg
    assert error_message(RuntimeError("boom")).startswith("internal error: RuntimeError")


def test_reference_photo_is_fitted_once_and_taken_from(studio, photo_path, tmp_path, grace_hopper, count_calls):
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    photo = studio.load(photo_path)
    calls = count_calls(fedit, "_fit_one", key="fit")
    a = studio.render(photo.key, EditValues(reference=str(ref), take=("expression",)))
    b = studio.render(photo.key, EditValues(reference=str(ref), take=("expression", "light")))
    assert calls["fit"] == 1  # the reference once; the photo was fitted at upload
    s = studio.session(photo.key)
    assert not np.allclose(a.result.params_after.expression, s.params.expression)
    assert not np.allclose(b.result.params_after.light, s.params.light)
    plain = studio.render(photo.key, EditValues(reference=str(ref)))  # no take: the reference is unused
    assert np.array_equal(plain.image, photo.image)


def _tone(path, seconds=1.0, rate=16000):
    import wave

    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_reenact_writes_a_video_with_progress_and_the_drivers_audio(studio, photo_path, tmp_path, astronaut):
    from facerig.io.video import probe_video, write_video

    frames = [np.roll(astronaut, 3 * i, axis=1) for i in range(3)]
    clip = tmp_path / "drive.mp4"
    write_video(clip, frames, fps=10, audio_from=_tone(tmp_path / "tone.wav"))
    assert probe_video(clip).has_audio
    seen = []
    res = studio.reenact(photo_path, clip, motion="absolute", max_frames=3, progress=lambda i, n: seen.append((i, n)))
    assert res.path.exists() and res.frames == 3 and res.path.parent == studio.work_dir
    assert seen and seen[-1][0] == seen[-1][1]
    assert res.has_audio and probe_video(res.path).has_audio
    with pytest.raises(InvalidInput, match="driving video"):
        studio.reenact(photo_path, tmp_path / "none.mp4")


def test_serve_command_checks_port_host_and_extra(capsys, monkeypatch):
    from facerig.cli import main
    from facerig.ui.app import is_local_host

    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("::1")
    assert not is_local_host("0.0.0.0") and not is_local_host("192.168.1.4")
    rc = main(["serve", "--port", "70000"])
    err = capsys.readouterr().err
    assert rc == 2 and "--port" in err and "Traceback" not in err
    import builtins

    real_import = builtins.__import__

    def no_gradio(name, *a, **k):
        if name == "gradio" or name.startswith("gradio."):
            raise ModuleNotFoundError("No module named 'gradio'", name="gradio")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_gradio)
    rc = main(["serve", "--port", "7999"])
    err = capsys.readouterr().err
    assert rc == 5 and "pip install 'facerig[ui]'" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("facerig: error")]) == 1


def test_non_local_host_is_warned(monkeypatch, caplog):
    import facerig.ui.app as app

    monkeypatch.setattr(app, "build_app", lambda studio: type("B", (), {"launch": lambda self, **k: None})())
    monkeypatch.setattr(app, "_warm_up", lambda: None)
    with caplog.at_level("WARNING", logger="facerig.ui.app"):
        app.serve("0.0.0.0", 7999, block=False)
    assert any("anyone who can reach" in r.message for r in caplog.records)
