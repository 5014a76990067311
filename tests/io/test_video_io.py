"""facerig.io.video: PyAV round trips, audio, typed errors; a real clip from ../shared when present."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from facerig.errors import InvalidInput, VideoUnreadable
from facerig.io.assets import shared_path
from facerig.io.video import (
    VideoInfo,
    available_video_encoders,
    iter_frames,
    probe_video,
    read_video,
    write_video,
)


def _frames(n: int = 12, h: int = 48, w: int = 64) -> list[np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = (x * 4 + i * 10) % 256
        f[..., 1] = y * 5 % 256
        f[..., 2] = i * 20 % 256
        out.append(f)
    return out


def _make_av(path, n=30, fps=30, audio_codec="aac", sr=44100, layout="mono", seconds=None):
    """A small test clip with a sine (or noise) audio track, written with PyAV directly."""
    c = av.open(str(path), "w")
    vs = c.add_stream("libx264" if available_video_encoders()["libx264"] else "mpeg4", rate=fps)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    a = c.add_stream(audio_codec, rate=sr)
    a.layout = layout
    for f in _frames(n):
        for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    n_samples = int(sr * (seconds if seconds is not None else n / fps))
    t = np.arange(n_samples) / sr
    if audio_codec == "aac":
        pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        fr = av.AudioFrame.from_ndarray(pcm, format="fltp", layout=layout)
    else:
        ch = 2 if layout == "stereo" else 1
        pcm = (np.sin(2 * np.pi * 440 * np.repeat(t, ch)) * 8000).astype(np.int16)[None]
        fr = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
    fr.sample_rate, fr.pts = sr, 0
    for p in a.encode(fr):
        c.mux(p)
    for p in a.encode(None):
        c.mux(p)
    for p in vs.encode(None):
        c.mux(p)
    c.close()
    return path


def _audio_seconds(path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        n = sum(f.samples for f in c.decode(s))
        return n / s.codec_context.sample_rate


def test_encoders_available():
    enc = available_video_encoders()
    assert enc["mpeg4"]  # the fallback always exists in PyAV's wheel
    assert enc["aac"]


def test_round_trip_h264(tmp_path):
    frames = _frames(12)
    p = write_video(tmp_path / "v.mp4", frames, 25)
    info = probe_video(p)
    assert isinstance(info, VideoInfo)
    assert info.fps == Fraction(25) and info.frame_count == 12
    assert (info.width, info.height) == (64, 48) and not info.has_audio
    assert info.duration == pytest.approx(12 / 25, abs=0.05)
    if available_video_encoders()["libx264"]:
        assert info.codec == "h264"
    arr, info2 = read_video(p)
    assert arr.shape == (12, 48, 64, 3) and arr.dtype == np.uint8 and info2.frame_count == 12
    err = np.abs(arr.astype(int) - np.stack(frames)).mean()
    assert err < 4, err
    got = list(iter_frames(p, max_frames=5))
    assert len(got) == 5 and np.array_equal(got[0], arr[0])
    assert len(list(iter_frames(p, max_frames=3, start=10))) == 2


def test_mpeg4_fallback_and_ntsc_rate(tmp_path):
    p = write_video(tmp_path / "m.mp4", _frames(10), 29.97, codec="mpeg4")
    info = probe_video(p)
    assert info.codec == "mpeg4" and info.frame_count == 10
    assert info.fps == Fraction(30000, 1001)


def test_odd_size_is_padded_and_inputs_converted(tmp_path):
    frames = [f[:47, :63].astype(np.float32) / 255.0 for f in _frames(4)]
    p = write_video(tmp_path / "odd.mkv", iter(frames), 10)
    arr, info = read_video(p)
    assert arr.shape == (4, 48, 64, 3)


def test_audio_copied_and_trimmed(tmp_path):
    src = _make_av(tmp_path / "src.mp4", n=30, fps=30)  # 1 s with audio
    assert probe_video(src).has_audio
    out = write_video(tmp_path / "out.mp4", _frames(15), 30, audio_from=src)  # 0.5 s
    info = probe_video(out)
    assert info.has_audio and info.frame_count == 15
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert _audio_seconds(out) == pytest.approx(0.5, abs=0.05)


def test_audio_reencoded_when_codec_not_allowed(tmp_path):
    src = _make_av(tmp_path / "pcm.mkv", audio_codec="pcm_s16le", sr=16000, layout="stereo", seconds=2.0)
    out = write_video(tmp_path / "out.mp4", _frames(15), 30, audio_from=src)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert _audio_seconds(out) == pytest.approx(0.5, abs=0.08)


def test_audio_from_silent_file_is_fine(tmp_path):
    silent = write_video(tmp_path / "s.mp4", _frames(3), 10)
    out = write_video(tmp_path / "o.mp4", _frames(3), 10, audio_from=silent)
    assert not probe_video(out).has_audio


# ---- errors ----------------------------------------------------------------------------------


def _one_line(e: BaseException) -> bool:
    return "\n" not in str(e)


def test_missing_video(tmp_path):
    for fn in (probe_video, read_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoUnreadable) as ei:
            fn(tmp_path / "missing.mp4")
        assert "missing.mp4" in str(ei.value) and _one_line(ei.value)


def test_not_a_video(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    e = tmp_path / "empty.mp4"
    e.write_bytes(b"")
    for path in (p, e):
        with pytest.raises(VideoUnreadable) as ei:
            probe_video(path)
        assert _one_line(ei.value)
        with pytest.raises(VideoUnreadable):
            read_video(path)


def test_audio_only_file_is_not_a_video(tmp_path):
    c = av.open(str(tmp_path / "a.m4a"), "w")
    a = c.add_stream("aac", rate=16000)
    a.layout = "mono"
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
    fr.sample_rate, fr.pts = 16000, 0
    for pk in a.encode(fr):
        c.mux(pk)
    for pk in a.encode(None):
        c.mux(pk)
    c.close()
    with pytest.raises(VideoUnreadable, match="no video stream"):
        probe_video(tmp_path / "a.m4a")


def test_zero_frame_video(tmp_path):
    p = tmp_path / "zero.mp4"
    c = av.open(str(p), "w")
    vs = c.add_stream("mpeg4", rate=25)
    vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    c.close()
    with pytest.raises(VideoUnreadable) as ei:
        read_video(p)
    assert _one_line(ei.value)
    with pytest.raises(VideoUnreadable):
        list(iter_frames(p))


def test_truncated_video_keeps_the_decodable_part(tmp_path):
    p = write_video(tmp_path / "t.mkv", _frames(20), 20)  # mkv: readable without a trailing index
    data = p.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    frames = list(iter_frames(cut))
    assert 0 < len(frames) < 20


def test_write_errors(tmp_path):
    with pytest.raises(InvalidInput, match="0 frames"):
        write_video(tmp_path / "e.mp4", [], 25)
    with pytest.raises(InvalidInput, match="size"):
        write_video(tmp_path / "e.mp4", [np.zeros((48, 64, 3), np.uint8), np.zeros((50, 64, 3), np.uint8)], 25)
    assert not (tmp_path / "e.mp4").exists()
    with pytest.raises(InvalidInput):
        write_video(tmp_path / "e.mp4", _frames(2), 0)


# ---- a real clip -----------------------------------------------------------------------------


@pytest.mark.shared_data
def test_real_clip_from_shared_data():
    p = shared_path("data", "videos", "mead", "M030_front_neutral_level1_001.mp4")
    if p is None:
        pytest.skip("clip not in ../shared/data/videos/mead")
    info = probe_video(p)
    assert info.frame_count > 50 and info.fps > 0 and info.width > 0
    frames = list(iter_frames(p, max_frames=8))
    assert len(frames) == 8 and frames[0].shape == (info.height, info.width, 3)
    assert frames[0].std() > 5  # real content, not a blank frame
