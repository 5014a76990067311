"""MagicPortraitEngine on a tiny seeded pipeline (64 px) and the astronaut photo: chunking of long
clips, equality with one pipeline call, paste-back, options and errors, the registry, and
`facerig reenact --engine magicportrait` keeping frame count, fps and audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from facerig.engines.magicportrait.engine import RELEASED_FILES, MagicPortraitEngine, clip_chunks  # noqa: E402
from facerig.errors import AssetMissing, InvalidInput  # noqa: E402


def test_clip_chunks():
    assert clip_chunks(5, 48, 4) == [(0, 5)]
    assert clip_chunks(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert clip_chunks(7, 4, 2) == [(0, 4), (2, 6), (4, 7)]
    for n, m, o in ((100, 48, 4), (49, 48, 4), (13, 5, 0)):
        ch = clip_chunks(n, m, o)
        assert ch[0][0] == 0 and ch[-1][1] == n and all(b - a <= m for a, b in ch)
        assert all(ch[i + 1][0] == ch[i][1] - o for i in range(len(ch) - 1))
    with pytest.raises(InvalidInput, match="chunk_overlap"):
        clip_chunks(10, 4, 4)
    with pytest.raises(InvalidInput):
        clip_chunks(0, 4, 1)


@pytest.fixture(scope="module")
def pipe(layout, tmp_path_factory):
    return layout.tiny_pipeline(tmp_path_factory.mktemp("mp_engine"))


@pytest.fixture(scope="module")
def fitted(astronaut):
    from facerig.edit import _fit_one
    from facerig.morphable import as_face_model

    fm = as_face_model("builtin")
    return fm, _fit_one(astronaut, fm, "largest", "astronaut")


def _targets(params, n):
    """n targets: the source with growing jaw opening / expression (structured alignment's shape)."""
    out = []
    for i in range(n):
        e = params.expression.clone()
        e[..., : min(3, e.shape[-1])] += 0.5 * i
        out.append(params.replace(expression=e))
    return out


def _engine(pipe, **kw):
    return MagicPortraitEngine(pipeline=pipe, steps=2, progress=False, **kw)


def test_one_chunk_is_one_pipeline_call(pipe, fitted, astronaut):
    fm, params = fitted
    eng = _engine(pipe)
    crops: list[np.ndarray] = []
    eng._paste = lambda state, crop_img, mask, crop: crops.append(crop_img) or crop_img  # type: ignore[method-assign]
    state = eng.prepare(astronaut, params, fm)
    tg = _targets(params, 3)
    got = list(eng.generate(state, tg))
    frames = state.conditioner.frames(state.source, tg)
    ref = pipe(frames, 2, latents=eng._noise(3, None), output_type="np")
    assert len(got) == 3
    np.testing.assert_array_equal(np.stack(crops), ref)


def test_chunks_cover_the_clip_and_blend_the_overlap(pipe, fitted, astronaut):
    fm, params = fitted
    tg = _targets(params, 5)
    whole = _engine(pipe, context_frames=2)
    crops_whole: list[np.ndarray] = []
    whole._paste = lambda s, c, m, cr: crops_whole.append(c) or c  # type: ignore[method-assign]
    list(whole.generate(whole.prepare(astronaut, params, fm), tg))
    chunked = _engine(pipe, context_frames=2, max_chunk=3, chunk_overlap=1)
    crops: list[np.ndarray] = []
    chunked._paste = lambda s, c, m, cr: crops.append(c) or c  # type: ignore[method-assign]
    calls = []
    orig = chunked._sample

    def spy(frames, bank, noise, progress):
        calls.append(frames.num_frames)
        return orig(frames, bank, noise, progress)

    chunked._sample = spy  # type: ignore[method-assign]
    out = list(chunked.generate(chunked.prepare(astronaut, params, fm), tg))
    assert len(out) == 5 and calls == [3, 3]
    # frames before the overlap of the first chunk come from a 3-frame clip with the same noise
    assert crops[0].shape == crops_whole[0].shape
    assert not np.array_equal(np.stack(crops), np.stack(crops_whole))  # chunking changes the windows


def test_reenact_pastes_back_inside_the_crop_only(pipe, fitted, astronaut):
    from facerig.detect.crops import paste_back

    fm, params = fitted
    eng = _engine(pipe)
    out = list(eng.reenact(astronaut, params, _targets(params, 2), fm))
    assert len(out) == 2 and all(o.shape == astronaut.shape and o.dtype == np.uint8 for o in out)
    state = eng.prepare(astronaut, params, fm)
    s = eng.pipe.image_size
    foot = paste_back(np.zeros_like(astronaut), np.full((s, s, 3), 255, np.uint8), state.source.crop,
                      np.ones((s, s), np.float32), feather_px=0.0)[..., 0] > 0
    changed = np.abs(out[0].astype(int) - astronaut).sum(2) > 0
    assert changed.any() and not (changed & ~foot).any()
    face = _engine(pipe, paste="face")
    fo = next(iter(face.reenact(astronaut, params, _targets(params, 1), fm)))
    ch2 = np.abs(fo.astype(int) - astronaut).sum(2) > 0
    assert ch2.any() and ch2.sum() < changed.sum()


def test_render_frame_is_a_one_frame_clip(pipe, fitted, astronaut):
    fm, params = fitted
    eng = _engine(pipe, seed=5)
    a = eng.edit(astronaut, params, _targets(params, 2)[1], fm)
    b = eng.edit(astronaut, params, _targets(params, 2)[1], fm)
    assert a.shape == astronaut.shape
    np.testing.assert_array_equal(a, b)
    c = eng.edit(astronaut, params, _targets(params, 2)[1], fm, generator=6)
    assert not np.array_equal(a, c)


def test_options_errors_and_registry(pipe, layout, tmp_path, monkeypatch):
    from facerig.engines import available_engines, get_engine
    from facerig.engines.sd.base import write_tiny_sd_base

    info = available_engines()["magicportrait"]
    assert info["requires_weights"] is True and "MagicPortrait" in info["description"]
    with pytest.raises(InvalidInput, match="--weights"):
        get_engine("magicportrait")
    with pytest.raises(AssetMissing, match="MagicPortrait weights"):
        get_engine("magicportrait", weights=str(tmp_path / "none"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "denoising_unet.pth").write_bytes(b"")
    with pytest.raises(AssetMissing, match="motion_module.pth"):
        get_engine("magicportrait", weights=str(tmp_path / "half"))
    for bad in ({"steps": 0}, {"guidance_scale": "x"}, {"paste": "all"}, {"max_chunk": 4, "chunk_overlap": 4},
                {"stepz": 2}, {"conditioning": "deca"}):
        with pytest.raises(InvalidInput):
            MagicPortraitEngine(pipeline=pipe, **bad)
    # the released layout selects the released conditioning, which names its missing assets
    rel = layout.write_release8(tmp_path / "ckpts")
    assert sorted(p.name for p in rel.iterdir()) == sorted(RELEASED_FILES)
    base = write_tiny_sd_base(tmp_path / "sd")
    for env in ("FACERIG_FLAME", "FACERIG_DECA", "FACERIG_SMIRK"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr("facerig.engines.magicportrait.pipeline.MagicPortraitPipeline.from_released",
                        classmethod(lambda cls, *a, **k: pipe))
    with pytest.raises(AssetMissing, match="flame=.*FACERIG_FLAME") as e:
        get_engine("magicportrait", weights=str(rel), base=str(base))
    assert "\n" not in str(e.value)
    fake = tmp_path / "generic_model.pkl"
    fake.write_bytes(b"x")
    monkeypatch.setenv("FACERIG_FLAME", str(fake))
    with pytest.raises(AssetMissing, match="smirk=.*FACERIG_SMIRK"):
        get_engine("magicportrait", weights=str(rel), base=str(base), deca=str(fake))
    # released conditioning without a driving image: a clear message
    eng = MagicPortraitEngine(pipeline=pipe, conditioning="released", conditioner=_NoCond(), progress=False)
    st = eng.prepare(np.zeros((64, 64, 3), np.uint8), None, None)
    with pytest.raises(InvalidInput, match="driving"):
        eng.render_frame(st, None)


class _NoCond:
    def source_state(self, image):
        return object()


def _clip_with_audio(path, frames, fps=10):
    import av

    c = av.open(str(path), "w")
    vs = c.add_stream("mpeg4", rate=fps)
    vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
    a = c.add_stream("aac", rate=22050)
    a.layout = "mono"
    for f in frames:
        for p in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    t = np.arange(int(22050 * len(frames) / fps)) / 22050
    fr = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                                    layout="mono")
    fr.sample_rate, fr.pts = 22050, 0
    for p in [*a.encode(fr), *a.encode(None), *vs.encode(None)]:
        c.mux(p)
    c.close()
    return path


def test_cli_reenact_keeps_frames_fps_and_audio(pipe, tmp_path, capsys):
    import cv2
    from skimage import data

    from facerig.cli import main
    from facerig.io.samples import sample_path
    from facerig.io.video import probe_video

    saved = pipe.save_pretrained(tmp_path / "mp_pipe")
    img = data.astronaut()[:384, 64:448]
    frames = [cv2.warpAffine(img, cv2.getRotationMatrix2D((192, 150), 2.0 * i, 1.0), (384, 384),
                             borderMode=cv2.BORDER_REPLICATE) for i in range(3)]
    drv = _clip_with_audio(tmp_path / "drv.mp4", frames)
    out = tmp_path / "re.mp4"
    rc = main([str(a) for a in ["reenact", sample_path("grace_hopper"), drv, "-o", out, "--no-progress", "--engine",
                                "magicportrait", "--weights", saved, "--steps", "1"]])
    so, se = capsys.readouterr()
    assert rc == 0, se
    info = probe_video(out)
    assert info.frame_count == 3 and float(info.fps) == pytest.approx(10.0) and info.has_audio
    rc = main(["reenact", str(sample_path("grace_hopper")), str(drv), "-o", str(tmp_path / "x.mp4"), "--no-progress",
               "--engine", "magicportrait", "--weights", str(tmp_path / "missing")])
    se = capsys.readouterr().err
    assert rc != 0 and "MagicPortrait weights" in se and len([ln for ln in se.splitlines() if ln.strip()]) == 1


def test_bf16_pipeline_runs(pipe, fitted, astronaut, tmp_path):
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline

    saved = pipe.save_pretrained(tmp_path / "p")
    p16 = MagicPortraitPipeline.from_pretrained(saved, device="cpu", dtype=torch.bfloat16)
    fm, params = fitted
    eng = MagicPortraitEngine(pipeline=p16, steps=1, progress=False)
    out = eng.edit(astronaut, params, params, fm)
    assert out.shape == astronaut.shape
