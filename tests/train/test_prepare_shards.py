"""`facerig prepare`: shards + index with the right counts, resume, and the rank split."""

from __future__ import annotations

import json
import tarfile

import cv2
import numpy as np
import pytest
from PIL import Image

from facerig.train.prepare import PrepareOptions, plan_groups, plan_shards, prepare_dataset, rank_from_env

OPTS = PrepareOptions(size=64, shard_size=2, buffers=True, album_by_folder=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, astronaut, grace_hopper):
    root = tmp_path_factory.mktemp("in")
    (root / "album").mkdir()
    Image.fromarray(astronaut).save(root / "astronaut.png")
    Image.fromarray(grace_hopper).save(root / "grace.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "album" / "astro_flip.png")
    Image.fromarray(cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)).save(root / "album" / "astro_small.png")
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "wall.png")
    return root


@pytest.fixture(scope="module")
def prepared(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    idx = prepare_dataset(inputs, out, OPTS)
    return out, idx


def _members(out):
    keys = {}
    for f in sorted(out.glob("shard-*.tar")):
        with tarfile.open(f) as t:
            for n in t.getnames():
                k, _, ext = n.partition(".")
                keys.setdefault(k, set()).add(ext)
    return keys


def test_counts_and_members(prepared):
    out, idx = prepared
    # 4 groups (album of 2, astronaut, grace, wall) -> shards of <= 2 items: [album], [astronaut, grace], [wall]
    assert idx["num_shards"] == 3 and idx["complete"]
    assert idx["samples"] == 4 and idx["identities"] == 3 and idx["items"] == 5
    assert idx["skipped"] == 1 and idx["skipped_reasons"] == {"no face": 1}
    assert idx["skipped_items"][0]["source"].endswith("wall.png")
    assert idx["face_model"].startswith("builtin-")
    assert idx["throughput"]["items_per_worker_second"] > 0
    keys = _members(out)
    assert len(keys) == 4 and all(v == {"png", "params.json", "buffers.npz"} for v in keys.values())
    assert not list(out.glob("*.tmp"))
    with tarfile.open(out / "shard-000000.tar") as t:
        names = sorted(t.getnames())
        img = np.asarray(Image.open(t.extractfile(names[-1])))
        p = json.loads(t.extractfile([n for n in names if n.endswith("params.json")][0]).read())
        z = dict(np.load(t.extractfile([n for n in names if n.endswith(".npz")][0])))
    assert img.shape == (64, 64, 3)
    assert p["meta"]["identity"] == "album" and p["faces"][0]["crop"]["frame_size"] == [64, 64]
    assert z["render"].dtype == np.float16 and z["render"].shape == (3, 64, 64) and z["mask"].shape == (1, 64, 64)
    # the album shares one identity
    with tarfile.open(out / "shard-000000.tar") as t:
        ids = [json.loads(t.extractfile(n).read())["faces"][0]["identity"] for n in t.getnames() if n.endswith(".json")]
    assert ids[0] == ids[1]


def test_resume_does_nothing(prepared, inputs):
    out, idx = prepared
    mtimes = {f.name: f.stat().st_mtime_ns for f in out.glob("shard-*.tar")}
    (out / "shard-000001.tar.tmp").write_bytes(b"partial")  # a leftover of an interrupted run
    again = prepare_dataset(inputs, out, OPTS)
    assert again["run"]["shards_done"] == 0 and again["run"]["shards_already_done"] == 3
    assert {f.name: f.stat().st_mtime_ns for f in out.glob("shard-*.tar")} == mtimes
    assert again["samples"] == idx["samples"] and not list(out.glob("*.tmp"))


def test_ranks_split_without_overlap(prepared, inputs, tmp_path):
    out_all, _ = prepared
    out = tmp_path / "ranked"
    r0 = prepare_dataset(inputs, out, OPTS, rank=0, world_size=2)
    shards0 = {f.name for f in out.glob("shard-*.tar")}
    assert r0["run"]["shards_done"] == 2 and not r0["complete"]
    r1 = prepare_dataset(inputs, out, OPTS, rank=1, world_size=2)
    shards1 = {f.name for f in out.glob("shard-*.tar")} - shards0
    assert shards0 == {"shard-000000.tar", "shard-000002.tar"} and shards1 == {"shard-000001.tar"}
    assert r1["complete"] and r1["samples"] == 4
    assert set(_members(out)) == set(_members(out_all))


def test_plan_and_env(inputs, monkeypatch):
    groups = plan_groups([inputs], OPTS)
    assert [g.name for g in groups] == ["album", "astronaut", "grace", "wall"]
    assert [len(s) for s in plan_shards(groups, 2)] == [1, 2, 1]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert rank_from_env(None, None) == (1, 3)
    assert rank_from_env(0, 2) == (0, 2)


def test_clip_crop_keeps_one_crop_per_video(astronaut, tmp_path):
    """A video whose face slides right: per-frame crops keep the face in place, ``clip_crop`` keeps
    one crop so the face slides inside it (by the video's shift times the crop's scale)."""
    from facerig.io.video import write_video

    base = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    frames = [np.ascontiguousarray(np.roll(base, 8 * k, axis=1)) for k in range(3)]
    src = tmp_path / "in"
    src.mkdir()
    write_video(src / "slide.mp4", frames, fps=10)
    shift = {}
    for clip in (False, True):
        out = tmp_path / f"out{int(clip)}"
        prepare_dataset([src], out, PrepareOptions(size=64, shard_size=10, frame_stride=1, clip_crop=clip,
                                                   photometric=False))
        imgs, metas = {}, {}
        for f in sorted(out.glob("shard-*.tar")):
            with tarfile.open(f) as t:
                for n in t.getnames():
                    data = t.extractfile(n).read()
                    k = n.split(".")[0]
                    if n.endswith(".png"):
                        imgs[k] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)
                    elif n.endswith(".params.json"):
                        metas[k] = json.loads(data)["meta"]
        keys = sorted(imgs)
        assert len(keys) == 3 and all(metas[k]["clip_crop"] == clip for k in keys)
        (dx, _), _ = cv2.phaseCorrelate(imgs[keys[0]], imgs[keys[2]])
        shift[clip] = dx
    assert abs(shift[False]) < 1.5
    assert shift[True] > 5.0          # 16 px in the video, 16 x 64 / (crop side) in the crop: 11.7 measured
