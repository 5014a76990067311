"""edit / reenact pipelines, Python API and CLI commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facerig.cli import main
from facerig.io.samples import sample_path


def test_import_is_light():
    code = "import facerig, sys; assert 'torch' not in sys.modules; assert callable(facerig.edit)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_spec_shortcuts():
    from facerig.edit import build_spec

    s = build_spec(smile=0.8, expression=["jawOpen=0.3"], yaw=10)
    assert s.expression == {"jawOpen": 0.3, "mouthSmile": 0.8} and s.yaw == 10
    from facerig.errors import InvalidInput

    with pytest.raises(InvalidInput):
        build_spec(expression=["jawOpen"])
    with pytest.raises(InvalidInput):
        build_spec(preset="smile", text="smile")


def test_cli_edit_writes_image_and_preview(tmp_path, capsys):
    out = tmp_path / "out.png"
    rc = main(["edit", str(sample_path("astronaut")), "--smile", "0.8", "--yaw", "5", "--preview", "-o", str(out)])
    assert rc == 0
    from facerig.io.image import load_image

    assert load_image(out).shape == (512, 512, 3)
    assert (tmp_path / "out_preview.png").exists()


@pytest.mark.parametrize("args, needle", [
    (["-e", "jawOpenn=0.5"], "jawOpen"),
    (["--text", "quarterly tax report"], "text"),
])
def test_cli_edit_one_line_errors(tmp_path, capsys, args, needle):
    rc = main(["edit", str(sample_path("astronaut")), *args, "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("facerig:")]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and lines[0].startswith("facerig: error:")


def test_cli_edit_rejects_video_source(tmp_path, capsys):
    v = tmp_path / "clip.mp4"
    v.write_bytes(b"not really")
    rc = main(["edit", str(v), "--smile", "0.5", "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not a video" in err and len(err.splitlines()) == 1


def _clip(path, n=6, fps=12):
    """A few frames of the astronaut with a synthetic head motion (shift + slight rotation)."""
    import cv2
    from skimage import data

    from facerig.io.video import write_video

    img = data.astronaut()[:384, 64:448]
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((192, 150), 2.0 * i, 1.0)
        m[0, 2] += 2 * i
        frames.append(cv2.warpAffine(img, m, (384, 384), borderMode=cv2.BORDER_REPLICATE))
    write_video(path, frames, fps=fps)
    return path


def test_reenact_preserves_frames_and_fps(tmp_path):
    import facerig
    from facerig.io.video import probe_video

    drv = _clip(tmp_path / "drv.mp4")
    out = tmp_path / "out.mp4"
    res = facerig.reenact(sample_path("grace_hopper"), drv, out, preview=True, progress=False)
    info, src = probe_video(out), probe_video(drv)
    assert info.frame_count == src.frame_count == res.frames == 6
    assert info.fps == src.fps
    assert res.preview_path is not None and probe_video(res.preview_path).frame_count == 6


@pytest.mark.shared_data
def test_reenact_shared_clip_cli(tmp_path):
    from facerig.io.assets import shared_path
    from facerig.io.video import probe_video

    vids = shared_path("data", "videos")
    clips = sorted(p for p in vids.rglob("*") if p.suffix.lower() in {".mp4", ".mov", ".webm", ".mkv"}) if vids else []
    if not clips:
        pytest.skip("no shared clip")
    out = tmp_path / "r.mp4"
    rc = main(["reenact", str(sample_path("astronaut")), str(clips[0]), "--max-frames", "8", "--no-progress",
               "-o", str(out)])
    assert rc == 0
    info = probe_video(out)
    assert info.frame_count == 8
    assert info.fps == probe_video(clips[0]).fps
