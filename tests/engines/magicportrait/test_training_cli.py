"""`facerig train magicportrait --stage 1|2` on tiny prepared photos (CPU): stage 1 then stage 2
from it, the exported pipeline folders load back (same prediction as the trained networks), the
maps come from FacerigMagicConditioner, resume continues a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def prepared_album(tmp_path_factory, astronaut):
    import cv2
    from PIL import Image

    from facerig.train.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("mp_album_in")
    (root / "astro").mkdir()
    Image.fromarray(astronaut).save(root / "astro" / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "astro" / "b.png")
    Image.fromarray(cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)).save(root / "astro" / "c.png")
    out = tmp_path_factory.mktemp("mp_album_shards")
    prepare_dataset(root, out, PrepareOptions(size=64, buffers=True, album_by_folder=True, photometric=False))
    return out


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from facerig.engines.sd.base import write_tiny_sd_base

    return write_tiny_sd_base(tmp_path_factory.mktemp("mp_sd"), seed=0)


def test_clip_dataset_maps_are_the_conditioners(prepared_album):
    from facerig.engines.magicportrait.training import MagicPortraitClipDataset
    from facerig.train.data import ShardDataset

    shards = ShardDataset(prepared_album, size=64)
    ds = MagicPortraitClipDataset(shards, frames=1, min_frame_gap=1)
    item = ds[0]
    assert item["reference"].shape == (3, 64, 64) and item["target"].shape == (1, 3, 64, 64)
    s, (t,) = ds.items[0]
    assert torch.equal(item["target"][0], shards[t]["image"]) and torch.equal(item["reference"], shards[s]["image"])
    for k in ("depth", "normal", "render"):
        assert item[k].shape == (1, 3, 64, 64) and 0 <= item[k].min() and item[k].max() <= 1
        assert item[k].std() > 0, k
    clips = MagicPortraitClipDataset(shards, frames=3)
    assert len(clips) == 1 and clips[0]["target"].shape == (3, 3, 64, 64)
    assert clips.items[0][1] == [0, 1, 2]


@pytest.mark.slow  # ~80 s on one shared CPU core (two runs, the conditioner's renders, four folder loads)
def test_cli_trains_stage1_then_stage2_and_exports_a_pipeline(prepared_album, tiny_base, tmp_path):
    from facerig.cli.app import app
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline
    from facerig.engines.magicportrait.training import load_trained

    def is_motion_param(k: str) -> bool:
        return ".motion_modules." in f".{k}"

    r1, r2 = tmp_path / "s1", tmp_path / "s2"
    res = CliRunner().invoke(app, ["train", "magicportrait", "--stage", "1", "--data", str(prepared_album),
                                   "-o", str(r1), "--base", str(tiny_base), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert (r1 / "final" / "model_index.json").is_file()
    meta = json.loads((r1 / "magicportrait_run.json").read_text())
    assert meta["stage"] == 1 and meta["frozen"]
    res = CliRunner().invoke(app, ["train", "magicportrait", "--stage", "2", "--data", str(prepared_album),
                                   "-o", str(r2), "--base", str(tiny_base), "--init", str(r1), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    m1, m2 = load_trained(r1), load_trained(r2)
    s1, s2 = m1.denoiser.state_dict(), m2.denoiser.state_dict()
    changed = {k for k in s1 if not torch.equal(s1[k], s2[k])}
    assert changed and all(is_motion_param(k) for k in changed)
    assert torch.equal(next(iter(m1.reference_unet.state_dict().values())),
                       next(iter(m2.reference_unet.state_dict().values())))
    # stage 2 also exports its temporal modules in AnimateDiff's layout, equal to the trained ones
    from facerig.engines.magicportrait.checkpoints import load_motion_adapter

    mm = r2 / "final" / "motion_module.pth"
    assert mm.is_file() and not (r1 / "final" / "motion_module.pth").exists()
    raw = torch.load(mm, weights_only=True)
    assert raw and all(".motion_modules." in k and ".temporal_transformer." in k for k in raw)
    from facerig.train.config import load_recipe

    rec = load_recipe(json.loads((r2 / "magicportrait_run.json").read_text())["recipe"], engine="magicportrait")
    adapter = load_motion_adapter(mm, m2.denoiser.config, num_attention_heads=int(rec.model.get("motion_heads", 8)),
                                  norm_num_groups=int(rec.model.get("motion_norm_groups", 32)))
    ad = adapter.state_dict()
    dm = {k: v for k, v in s2.items() if ".motion_modules." in f".{k}"}
    assert set(ad) == set(dm) and all(torch.equal(ad[k], dm[k]) for k in ad)
    # the pipeline folder loads and samples a clip
    pipe = MagicPortraitPipeline.from_pretrained(r2 / "final")
    g = torch.Generator().manual_seed(0)
    from types import SimpleNamespace

    fr = SimpleNamespace(reference=torch.rand(1, 3, 64, 64, generator=g), depth=torch.rand(2, 3, 64, 64, generator=g),
                         normal=torch.rand(2, 3, 64, 64, generator=g), render=torch.rand(2, 3, 64, 64, generator=g))
    out = pipe(fr, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8


def test_export_round_trip_gives_the_same_prediction(tmp_path, tiny_base):
    from facerig.engines.magicportrait.pipeline import MagicPortraitPipeline
    from facerig.engines.magicportrait.training import inflate, load_trained, stage1_model
    from facerig.engines.rigface.model import TINY_UNET_CONFIG
    from facerig.engines.sd.base import load_sd_base

    mc = {"init": "config", "unet": dict(TINY_UNET_CONFIG), "motion_heads": 2, "motion_norm_groups": 8,
          "guidance": {"guidance_embedding_channels": 16, "guidance_input_channels": 3,
                       "block_out_channels": (8, 32, 32, 32), "attention_num_heads": 8}}
    model = inflate(stage1_model(mc, None, 0), heads=2, norm_groups=8)
    for e in model.guidance_encoders.values():  # fresh encoders add zero: make them matter
        torch.nn.init.normal_(e.conv_out.weight, std=0.02)
    MagicPortraitPipeline.from_parts(model, load_sd_base(tiny_base)).save_pretrained(tmp_path / "final")
    back = load_trained(tmp_path)
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(1, 4, 8, 8, generator=g)
    x = torch.randn(1, 4, 2, 8, 8, generator=g)
    maps = [torch.rand(1, 3, 2, 64, 64, generator=g) for _ in range(3)]
    assert model.guidance(*maps).abs().sum() > 0
    text = torch.randn(1, 77, 32, generator=g)
    outs = []
    for m in (model, back):
        bank = m.reference_bank(ref, text)
        with torch.no_grad():
            outs.append(m.predict(x, torch.tensor([500]), text, m.guidance(*maps), bank))
    assert torch.equal(outs[0], outs[1])
