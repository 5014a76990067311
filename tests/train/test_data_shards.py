"""ShardDataset (decoding, stored vs rendered buffers) and PairSampler (identity, frame gap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facerig.train.data import PairSampler, ShardDataset
from facerig.train.prepare import PrepareOptions, prepare_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory, astronaut, grace_hopper):
    root = tmp_path_factory.mktemp("in")
    (root / "album").mkdir()
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "album" / "a.png")
    Image.fromarray(astronaut).save(root / "album" / "b.png")
    Image.fromarray(grace_hopper).save(root / "grace.png")
    out = tmp_path_factory.mktemp("shards")
    prepare_dataset(root, out, PrepareOptions(size=64, shard_size=10, buffers=True, album_by_folder=True))
    return out


def test_items(shards):
    ds = ShardDataset(shards)
    assert len(ds) == 3 and ds.identities == ["album", "grace"]
    it = ds[0]
    assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.float32
    assert -1.0 <= float(it["image"].min()) < -0.5 and 0.5 < float(it["image"].max()) <= 1.0
    assert it["cond"].shape == (9, 64, 64) and it["buffers"]["mask"].shape == (1, 64, 64)
    m = it["buffers"]["mask"][0] > 0
    assert 0.1 < float(m.float().mean()) < 0.6  # the face covers a plausible part of the crop
    n = it["buffers"]["normal"][:, m]
    assert torch.allclose(n.norm(dim=0), torch.ones(()), atol=2e-2)  # unit normals (float16 stored)
    # rendering on the fly agrees with the stored buffers
    rd = ShardDataset(shards, buffers="render")[0]
    assert float((rd["buffers"]["mask"] != it["buffers"]["mask"]).float().mean()) < 0.01
    both = (rd["buffers"]["mask"][0] > 0) & m
    assert float((rd["cond"] - it["cond"])[:, both].abs().mean()) < 0.01  # silhouette pixels may differ
    # another size: image resized, buffers rendered at that size
    small = ShardDataset(shards, size=32)[2]
    assert small["image"].shape == (3, 32, 32) and small["cond"].shape == (9, 32, 32)
    assert small["identity"] == "grace" and small["frame"] == -1
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["cond"].shape == (2, 9, 64, 64)


def test_pair_sampler_identity_and_gap():
    rows = [{"identity": "v1", "frame": f} for f in (0, 10, 40, 100)] + [
        {"identity": "v2", "frame": 0}, {"identity": "v2", "frame": 5},  # too close: no pair
        {"identity": "alb", "frame": -1}, {"identity": "alb", "frame": -1}, {"identity": "solo", "frame": -1}]
    s = PairSampler(rows, min_frame_gap=30, seed=1)
    pairs = list(s)
    assert len(pairs) == len(s) == 6  # 4 frames of v1 + 2 photos of alb
    for i, j in pairs:
        assert rows[i]["identity"] == rows[j]["identity"] and i != j
        if rows[i]["frame"] >= 0:
            assert abs(rows[i]["frame"] - rows[j]["frame"]) >= 30
    assert {i for i, _ in pairs} == {0, 1, 2, 3, 6, 7}
    assert list(PairSampler(rows, 30, seed=1)) == pairs  # deterministic
    s.set_epoch(1)
    assert sorted(i for i, _ in s) == sorted(i for i, _ in pairs)


def test_pair_sampler_on_dataset(shards):
    ds = ShardDataset(shards, buffers=False)
    pairs = list(PairSampler(ds))
    assert len(pairs) == 2 and all(ds.samples[i]["identity"] == "album" == ds.samples[j]["identity"] for i, j in pairs)
