"""Reenactment motion modes through the pipeline and the CLI (`facerig reenact --motion/--ref-frame`)."""

from __future__ import annotations

import pytest

from facerig.cli import main
from facerig.engines.base import Engine
from facerig.errors import InvalidInput
from facerig.io.samples import sample_path


def _clip(path, n=5, fps=10):
    """A few frames of the astronaut with a small synthetic head motion."""
    import cv2
    from skimage import data

    from facerig.io.video import write_video

    img = data.astronaut()[:384, 64:448]
    frames = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((192, 150), 1.5 * i, 1.0)
        m[0, 2] += 2 * i
        frames.append(cv2.warpAffine(img, m, (384, 384), borderMode=cv2.BORDER_REPLICATE))
    write_video(path, frames, fps=fps)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _clip(tmp_path_factory.mktemp("drv") / "drv.mp4")


class SpyEngine(Engine):
    """Returns the source image; records what the pipeline hands to every frame."""

    name = "spy"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def prepare(self, source_image, source_params, model, **kw):
        return source_image

    def render_frame(self, state, target_params, *, generator=None, **kw):
        dp = kw.get("driving_params")
        self.calls.append({"image": None if kw.get("driving_image") is None else kw["driving_image"].shape,
                           "params": None if dp is None else (dp.batch_size, dp.crop is not None),
                           "jaw": float(target_params.expression[0, list(target_params.expression_names).index("jawOpen")])})
        return state


def test_reenact_passes_driving_frames_and_params(tmp_path, clip):
    import facerig

    eng = SpyEngine()
    res = facerig.reenact(sample_path("grace_hopper"), clip, tmp_path / "o.mp4", engine=eng, progress=False,
                          motion="relative", ref_frame=2)
    assert res.frames == 5 and res.motion == "relative" and res.ref_frame == 2
    assert len(eng.calls) == 5
    assert all(c["image"] == (384, 384, 3) for c in eng.calls)
    assert all(c["params"] == (1, True) for c in eng.calls)
    res = facerig.reenact(sample_path("grace_hopper"), clip, tmp_path / "a.mp4", engine=SpyEngine(),
                          progress=False, motion="absolute")
    assert res.motion == "absolute" and res.ref_frame is None


@pytest.mark.parametrize("kw, name", [
    ({"motion": "sideways"}, "motion"),
    ({"ref_frame": -1}, "ref_frame"),
    ({"ref_frame": "3"}, "ref_frame"),
    ({"motion": "absolute", "ref_frame": 0}, "ref_frame"),
    ({"max_frames": 0}, "max_frames"),
    ({"relative": "yes"}, "relative"),
])
def test_reenact_api_validation(tmp_path, clip, kw, name):
    import facerig

    with pytest.raises(InvalidInput) as e:
        facerig.reenact(sample_path("grace_hopper"), clip, tmp_path / "o.mp4", engine=SpyEngine(), progress=False, **kw)
    assert e.value.name == name


def test_reenact_ref_frame_out_of_range(tmp_path, clip):
    import facerig

    with pytest.raises(InvalidInput, match=r"0\.\.4") as e:
        facerig.reenact(sample_path("grace_hopper"), clip, tmp_path / "o.mp4", engine=SpyEngine(), progress=False,
                        ref_frame=5)
    assert e.value.name == "ref_frame"


def _one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("facerig:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--max-frames", "0"], "--max-frames"),
    (["--motion", "sideways"], "--motion"),
    (["--ref-frame", "-1"], "--ref-frame"),
    (["--motion", "absolute", "--ref-frame", "1"], "--ref-frame"),
    (["--absolute", "--motion", "relative"], "--motion"),
])
def test_cli_reenact_one_line_errors(tmp_path, clip, capsys, args, needle):
    rc = main(["reenact", str(sample_path("grace_hopper")), str(clip), "-o", str(tmp_path / "o.mp4"), "--no-progress",
               *args])
    line = _one_error_line(capsys)
    assert rc == 2 and line.startswith("facerig: error:") and needle in line
    assert not (tmp_path / "o.mp4").exists()


def test_cli_reenact_motion_modes(tmp_path, clip, capsys):
    from facerig.io.video import probe_video

    out = tmp_path / "rel.mp4"
    rc = main(["reenact", str(sample_path("grace_hopper")), str(clip), "-o", str(out), "--no-progress",
               "--motion", "relative", "--ref-frame", "2", "--max-frames", "4"])
    msg = capsys.readouterr().out
    assert rc == 0 and "motion relative, reference frame 2" in msg
    assert probe_video(out).frame_count == 4
    out = tmp_path / "abs.mp4"
    rc = main(["reenact", str(sample_path("grace_hopper")), str(clip), "-o", str(out), "--no-progress",
               "--absolute", "--max-frames", "3"])   # the older spelling of --motion absolute
    msg = capsys.readouterr().out
    assert rc == 0 and "motion absolute" in msg and "reference frame" not in msg
    frames = probe_video(out).frame_count
    assert frames == 3
    rc = main(["reenact", str(sample_path("grace_hopper")), str(clip), "-o", str(tmp_path / "x.mp4"), "--no-progress",
               "--ref-frame", "9"])
    line = _one_error_line(capsys)
    assert rc == 2 and "ref_frame" in line and "0..4" in line



class NarrowSpy(SpyEngine):
    """A spy whose declared faithful range is tiny, so the driver's motion exceeds it."""

    from facerig.engines.base import PoseRange as _PR

    pose_range = _PR(yaw=1.0, pitch=1.0, roll=1.0)

    def render_frame(self, state, target_params, *, generator=None, **kw):
        self.calls.append({"params": target_params.clone()})
        return state


def test_reenact_clamps_frames_beyond_the_engine_range(tmp_path, clip, caplog):
    import facerig
    from facerig.rig.pose import get_pose

    eng = NarrowSpy()
    with caplog.at_level("WARNING"):
        res = facerig.reenact(sample_path("grace_hopper"), clip, tmp_path / "o.mp4", engine=eng, progress=False,
                              motion="absolute")
    assert res.clamped_frames > 0
    assert sum("faithful range" in r.getMessage() for r in caplog.records) == 1  # said once, not per frame
    from facerig.edit import _fit_one, _load_source_image
    from facerig.morphable import load_face_model

    fm = load_face_model("builtin")
    sp = _fit_one(_load_source_image(sample_path("grace_hopper")), fm, "largest", "src")
    s = get_pose(sp)[0]
    for c in eng.calls:
        d = get_pose(c["params"])[0] - s
        assert float(d.abs().max()) <= 1.0 + 1e-3, d
