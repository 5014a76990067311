"""Video reading and writing with PyAV (FFmpeg bundled in the ``av`` wheel).

* :func:`probe_video` -> :class:`VideoInfo` (fps as a ``Fraction``, frame count, size, audio, duration)
* :func:`iter_frames` -> RGB ``uint8 (H, W, 3)`` frames, one at a time (constant memory)
* :func:`read_video` -> ``(frames (N, H, W, 3) uint8, VideoInfo)``
* :func:`write_video` -> H.264 (libx264, ``yuv420p``, CRF) in ``.mp4``/``.mkv``/``.mov`` when the bundled
  FFmpeg has an H.264 encoder, else MPEG-4 part 2; optionally with the audio of another file (copied
  when the container accepts its codec, else re-encoded to AAC), trimmed to the video's length.

Every failure to read is a :class:`~facerig.errors.VideoUnreadable` with a one-line message: missing
file, not a video (no video stream / not a media file), no decodable frame. Packets that fail to
decode in the middle of a stream are skipped (a damaged frame is dropped, the rest is returned).

Rotation: frames of phone videos carry a display matrix; frames are returned upright (rotated by the
stream's rotation, a multiple of 90 degrees) and :class:`VideoInfo` reports the upright size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from facerig.errors import InvalidInput, VideoUnreadable

__all__ = [
    "VideoInfo",
    "available_video_encoders",
    "check_driving_video",
    "iter_frames",
    "probe_video",
    "read_video",
    "write_video",
]


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds.

    ``fps``: average frame rate (``Fraction``; e.g. ``Fraction(30000, 1001)``); ``frame_count``: number of
    video frames (from the container header, else counted by demuxing packets, no decoding);
    ``width``/``height``: upright frame size in pixels (after rotation); ``has_audio``: an audio stream
    exists; ``duration``: seconds (float; 0.0 when unknown); ``codec``: video codec name;
    ``rotation``: degrees counter-clockwise applied to decoded frames to make them upright.
    """

    fps: Fraction
    frame_count: int
    width: int
    height: int
    has_audio: bool
    duration: float
    codec: str = ""
    rotation: int = 0


def _av() -> Any:
    import av

    av.logging.set_level(av.logging.PANIC)  # ffmpeg's own stderr chatter; we raise typed errors
    return av


def _open_input(path: str | os.PathLike[str]) -> tuple[Any, Path]:
    p = Path(path)
    if not p.exists():
        raise VideoUnreadable(str(p), "an existing video file", hint="no such file")
    if not p.is_file():
        raise VideoUnreadable(str(p), "a video file", hint="not a regular file")
    av = _av()
    try:
        container = av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoUnreadable(str(p), "a readable video (mp4, mov, mkv, webm, avi, ...)",
                              _one_line(e)) from None
    if not container.streams.video:
        container.close()
        raise VideoUnreadable(str(p), "a file with a video stream", "no video stream")
    return container, p


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _rotation_of(stream: Any, frame: Any = None) -> int:
    """Counter-clockwise degrees to rotate frames by so they display upright (0/90/180/270)."""
    rot = None
    if frame is not None:
        rot = getattr(frame, "rotation", None)
    if rot is None:
        try:
            rot = float(stream.metadata.get("rotate", 0))
            rot = -rot  # the legacy 'rotate' tag is clockwise
        except (TypeError, ValueError):
            rot = 0
    return int(round(float(rot) / 90.0)) % 4 * 90


def _upright(arr: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return arr
    return np.ascontiguousarray(np.rot90(arr, k=rotation // 90))


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the header (and, when the header has no frame count, the packet index) of a video."""
    container, p = _open_input(path)
    try:
        vs = container.streams.video[0]
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = Fraction(fps) if fps else Fraction(0)
        duration = 0.0
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        count = int(vs.frames or 0)
        if count <= 0:
            count = sum(1 for pkt in container.demux(vs) if pkt.size > 0)
            if duration <= 0 and fps > 0:
                duration = count / float(fps)
        w, h = int(vs.codec_context.width), int(vs.codec_context.height)
        rot = _rotation_of(vs)
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(
            fps=fps, frame_count=count, width=w, height=h,
            has_audio=bool(container.streams.audio), duration=duration,
            codec=vs.codec_context.name or "", rotation=rot,
        )
    except VideoUnreadable:
        raise
    except Exception as e:
        raise VideoUnreadable(str(p), "a readable video header", _one_line(e)) from None
    finally:
        container.close()


#: still-image suffixes (and codecs) ffmpeg opens as a one-frame "video"
STILL_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".avif"}
STILL_CODECS = {"mjpeg", "png", "bmp", "tiff", "webp", "jpeg2000", "jpegls"}


def check_max_frames(max_frames: Any, name: str = "--max-frames") -> None:
    """None (all frames) or a positive whole number of frames."""
    if max_frames is None:
        return
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise InvalidInput(name, "a positive number of frames (or none for all)", max_frames)


def check_driving_video(path: str | os.PathLike[str], name: str = "DRIVING_VIDEO",
                        max_frames: Any = None) -> VideoInfo:
    """The probed :class:`VideoInfo` of a driving video, refusing a still image (ffmpeg opens a JPEG
    or PNG as a one-frame video, which "reenacts" nothing), a video with fewer than 2 frames and a
    ``max_frames`` that is not a positive number."""
    check_max_frames(max_frames)
    p = Path(path)
    if p.suffix.lower() in STILL_SUFFIXES:
        raise InvalidInput(name, "a video (mp4, mov, mkv, webm, ...), not a still image", str(p),
                           hint="to copy one photo's expression or pose use `facerig edit PHOTO --reference "
                                f"{p.name} --take expression,pose`")
    info = probe_video(p)
    if info.frame_count < 2 and (info.codec in STILL_CODECS or info.frame_count <= 1):
        raise InvalidInput(name, "a video with at least 2 frames", f"{p} ({info.frame_count} frame, {info.codec})",
                           hint="a still image cannot drive a reenactment; use `facerig edit --reference`")
    return info


def iter_frames(
    path: str | os.PathLike[str], max_frames: int | None = None, *, start: int = 0
) -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame: RGB ``uint8 (H, W, 3)`` arrays, upright.

    ``max_frames``: stop after this many frames; ``start``: skip this many decoded frames first.
    Raises :class:`VideoUnreadable` (when iteration starts) for a missing file or a file without
    video, and at the end when not a single frame could be decoded.
    """
    if max_frames is not None and max_frames <= 0:
        return
    av = _av()
    container, p = _open_input(path)
    n_out = 0
    n_seen = 0
    bad = 0
    try:
        vs = container.streams.video[0]
        # frame threading ("AUTO") deadlocks in avcodec_free_context when a caller stops early
        # (max_frames, closing the generator): slice threading only
        for packet in container.demux(vs):
            try:
                frames = packet.decode()
            except (av.error.InvalidDataError, av.error.FFmpegError) as e:  # damaged packet: drop it
                bad += 1
                last_error = e
                continue
            for frame in frames:
                n_seen += 1
                if n_seen <= start:
                    continue
                arr = frame.to_ndarray(format="rgb24")
                yield _upright(arr, _rotation_of(vs, frame))
                n_out += 1
                if max_frames is not None and n_out >= max_frames:
                    return
        if n_seen == 0:
            detail = f"no decodable frame ({bad} damaged packets)" if bad else "zero frames"
            if bad:
                detail += f"; last error {_one_line(last_error)}"
            raise VideoUnreadable(str(p), "a video with at least one frame", detail)
    finally:
        container.close()


def read_video(
    path: str | os.PathLike[str], max_frames: int | None = None
) -> tuple[np.ndarray, VideoInfo]:
    """All (or the first ``max_frames``) frames as one ``(N, H, W, 3) uint8`` array, plus :class:`VideoInfo`.

    ``VideoInfo.frame_count`` is the number of frames actually returned.
    """
    info = probe_video(path)
    check_max_frames(max_frames)
    frames = list(iter_frames(path, max_frames=max_frames))
    arr = np.stack(frames, axis=0)
    h, w = arr.shape[1:3]
    return arr, VideoInfo(info.fps, len(frames), w, h, info.has_audio, info.duration, info.codec,
                          info.rotation)


# --------------------------------------------------------------------------------------------
# writing


def available_video_encoders() -> dict[str, bool]:
    """Which of the encoders facerig may use exist in PyAV's bundled FFmpeg."""
    av = _av()
    out = {}
    for name in ("libx264", "h264", "libopenh264", "mpeg4", "libx265", "libvpx", "aac"):
        try:
            av.codec.Codec(name, "w")
            out[name] = True
        except Exception:
            out[name] = False
    return out


def _pick_codec(requested: str | None) -> str:
    enc = available_video_encoders()
    if requested:
        if not enc.get(requested, False):
            av = _av()
            try:
                av.codec.Codec(requested, "w")
            except Exception:
                raise InvalidInput("codec", "an encoder of the bundled FFmpeg", requested) from None
        return requested
    for name in ("libx264", "libopenh264", "mpeg4"):
        if enc.get(name):
            return name
    raise InvalidInput("codec", "an H.264 or MPEG-4 encoder in PyAV's FFmpeg", "none available")


def _to_fraction(fps: Any) -> Fraction:
    try:
        f = Fraction(fps).limit_denominator(1_000_000) if not isinstance(fps, Fraction) else fps
    except (TypeError, ValueError):
        raise InvalidInput("fps", "a positive frame rate", fps) from None
    if f <= 0 or not math.isfinite(float(f)):
        raise InvalidInput("fps", "a positive frame rate", fps)
    # common NTSC rates given as floats
    for num, den in ((24000, 1001), (30000, 1001), (60000, 1001)):
        if abs(float(f) - num / den) < 1e-3:
            return Fraction(num, den)
    return f


def _frame_to_rgb(frame: Any, index: int) -> np.ndarray:
    from facerig.io.image import _array_to_rgb, _is_tensor, from_tensor

    if _is_tensor(frame):
        return from_tensor(frame)
    a = np.asarray(frame)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        return np.ascontiguousarray(a)
    return _array_to_rgb(a, f"frames[{index}]")


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[Any],
    fps: float | Fraction,
    *,
    audio_from: str | os.PathLike[str] | None = None,
    crf: int = 18,
    codec: str | None = None,
    preset: str = "medium",
) -> Path:
    """Encode ``frames`` (an iterable of RGB ``uint8 (H, W, 3)`` arrays; gray/float/RGBA arrays and
    float tensors are converted like :func:`facerig.io.image.load_image` does) into ``path``.

    ``fps``: frame rate (float or Fraction; 29.97 and friends become 30000/1001). ``crf``: quality for
    H.264 (0 lossless .. 51, 18 is visually lossless); for MPEG-4 it is mapped to a quantiser.
    ``codec``: force an encoder (default: libx264, else mpeg4). Frames of odd width/height are padded
    by one replicated row/column (``yuv420p`` needs even sizes). All frames must share the first
    frame's size. ``audio_from``: a media file whose first audio stream is copied (re-encoded to AAC
    when the output container does not take its codec), cut at the end of the video; a file without
    audio is accepted silently. Returns the path written. Raises :class:`InvalidInput` for zero frames.
    """
    av = _av()
    rate = _to_fraction(fps)
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    name = _pick_codec(codec)

    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise InvalidInput("frames", "at least one frame", "0 frames") from None
    first_rgb = _frame_to_rgb(first, 0)
    h, w = first_rgb.shape[:2]
    pad_h, pad_w = h % 2, w % 2

    audio_in = None
    if audio_from is not None:
        audio_in = _open_input_audio(audio_from)

    try:
        out = av.open(str(out_path), mode="w")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if audio_in is not None:
            audio_in[0].close()
        raise InvalidInput("path", "a writable video path with a known container extension (.mp4, .mkv, "
                           ".mov, .avi)", f"{out_path} ({_one_line(e)})") from None
    n = 0
    try:
        vs = out.add_stream(name, rate=rate)
        vs.width, vs.height = w + pad_w, h + pad_h
        vs.pix_fmt = "yuv420p"
        frame_tb = Fraction(1) / rate
        vs.time_base = frame_tb
        vs.codec_context.time_base = frame_tb
        if name in ("libx264", "libx265"):
            vs.options = {"crf": str(int(crf)), "preset": preset}
        else:
            # MPEG-4 part 2: a fixed quantiser; crf 18 -> q 2 (best) ... crf 51 -> q 31
            q = int(np.clip(round(2 + (crf - 18) * 29 / 33), 2, 31))
            vs.codec_context.qmin = q
            vs.codec_context.qmax = q
            vs.codec_context.bit_rate = int(w * h * float(rate) * 4)  # the quantiser decides
        a_pump = None
        if audio_in is not None and audio_in[1] is not None:
            a_pump = _AudioPump(out, audio_in[0], audio_in[1])

        def encode(rgb: np.ndarray, index: int) -> None:
            if rgb.shape[:2] != (h, w):
                raise InvalidInput(f"frames[{index}]", f"a frame of size {w}x{h} like the first",
                                   f"{rgb.shape[1]}x{rgb.shape[0]}")
            if pad_h or pad_w:
                rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            vf.pts = index
            vf.time_base = frame_tb
            for pkt in vs.encode(vf):
                out.mux(pkt)
            if a_pump is not None:
                a_pump.pump_until((index + 1) / float(rate))

        encode(first_rgb, 0)
        n = 1
        for frame in it:
            encode(_frame_to_rgb(frame, n), n)
            n += 1
        for pkt in vs.encode(None):
            out.mux(pkt)
        if a_pump is not None:
            a_pump.pump_until(n / float(rate))
            a_pump.flush()
    except BaseException:
        out.close()
        if audio_in is not None:
            audio_in[0].close()
        try:
            out_path.unlink()
        except OSError:
            pass
        raise
    out.close()
    if audio_in is not None:
        audio_in[0].close()
    return out_path


def _open_input_audio(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    p = Path(path)
    if not p.is_file():
        raise InvalidInput("audio_from", "an existing media file", str(p))
    av = _av()
    try:
        c = av.open(str(p), mode="r")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InvalidInput("audio_from", "a readable media file", f"{p} ({_one_line(e)})") from None
    return c, (c.streams.audio[0] if c.streams.audio else None)


_MP4_AUDIO = {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"}


class _AudioPump:
    """Moves audio from an input stream into the output as the video advances (interleaved).

    Copies packets when the output container takes the codec, else decodes and encodes AAC.
    Stops at the video's end time.
    """

    def __init__(self, out: Any, container: Any, stream: Any) -> None:
        self.av = _av()
        self.out = out
        self.inp = stream
        self.start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        fmt = (out.format.name or "").split(",")
        codec = stream.codec_context.name
        self.copy = codec in _MP4_AUDIO if any(f in ("mp4", "mov", "ipod") for f in fmt) else (
            "matroska" in fmt or codec in _MP4_AUDIO)
        if self.copy:
            self.ostream = out.add_stream_from_template(stream)
            self.resampler = None
        else:
            rate = stream.codec_context.sample_rate or 44100
            self.ostream = out.add_stream("aac", rate=rate)
            self.ostream.layout = "stereo" if (stream.codec_context.channels or 2) >= 2 else "mono"
            self.resampler = self.av.AudioResampler(format="fltp", layout=self.ostream.layout, rate=rate,
                                                    frame_size=1024)
            self.fifo = self.av.AudioFifo()
        self.packets = container.demux(stream)
        self.pending: Any = None
        self.done = False
        self.next_pts = 0
        self.end = 0.0

    def _time(self, pkt: Any) -> float:
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        return float(ts * pkt.time_base) - self.start if ts is not None else 0.0

    def pump_until(self, t: float) -> None:
        self.end = t
        while not self.done:
            if self.pending is None:
                try:
                    self.pending = next(self.packets)
                except StopIteration:
                    self.done = True
                    break
                except self.av.error.FFmpegError:
                    continue
                if self.pending.dts is None and self.pending.size == 0:  # flush packet
                    self.pending = None
                    self.done = True
                    break
            pkt = self.pending
            pt = self._time(pkt)
            if pt >= t:
                break
            self.pending = None
            self._emit(pkt)
        if self.resampler is not None:
            self._drain(t)

    def _emit(self, pkt: Any) -> None:
        if self.copy:
            if pkt.dts is None:
                return
            off = int(round(self.start / float(pkt.time_base))) if self.start else 0
            pkt.pts = pkt.pts - off if pkt.pts is not None else None
            pkt.dts = pkt.dts - off
            pkt.stream = self.ostream
            self.out.mux(pkt)
            return
        try:
            frames = pkt.decode()
        except self.av.error.FFmpegError:
            return
        for fr in frames:
            self._encode(fr)

    def _encode(self, fr: Any) -> None:
        assert self.resampler is not None
        fr.pts = None
        for rf in self.resampler.resample(fr):
            self.fifo.write(rf)
        self._drain(self.end)

    def _drain(self, t: float, final: bool = False) -> None:
        """Encode buffered samples up to time ``t`` (seconds), so the audio never outruns the video;
        whole encoder frames only, except for the last one."""
        rate = self.ostream.codec_context.sample_rate
        fs = self.ostream.codec_context.frame_size or 1024
        while True:
            room = int(round(t * rate)) - self.next_pts
            take = min(room, self.fifo.samples, fs)
            if take <= 0 or (take < fs and not final):
                return
            rf = self.fifo.read(take)
            rf.pts = self.next_pts
            rf.time_base = Fraction(1, rate)
            self.next_pts += rf.samples
            for p in self.ostream.encode(rf):
                self.out.mux(p)

    def flush(self) -> None:
        if self.resampler is not None:
            for rf in self.resampler.resample(None):
                self.fifo.write(rf)
            self._drain(self.end, final=True)  # anything past the video's end is dropped
            for p in self.ostream.encode(None):
                self.out.mux(p)
