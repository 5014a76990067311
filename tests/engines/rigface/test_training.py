"""RigFace training on tiny models (CPU, seeded): the loss falls, one pair is overfitted (and
sampled back), resume continues exactly, and `facerig train rigface` runs on prepared photos."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from facerig.engines.rigface.model import TINY_UNET_CONFIG, RigFaceUNets, load_rigface_weights
from facerig.engines.rigface.training import (
    RigFaceTrainModule,
    paint_grey,
    sd_alphas_cumprod,
    training_person_mask,
    use_adam8bit,
)
from facerig.errors import MissingDependency
from facerig.train.config import TrainConfig
from facerig.train.trainer import Trainer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread avoids oversubscription slow-downs on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

DIM = 6


class LatentPairs(Dataset):
    """Synthetic latent pairs: smooth, structured targets that depend on the conditions."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            src = torch.randn(4, 8, 8, generator=g)
            render = torch.randn(4, 8, 8, generator=g)
            expr = torch.rand(DIM, generator=g)
            target = 0.5 * src + 0.5 * render + expr[:4, None, None]
            self.items.append({"source_latent": src, "background_latent": src * 0.5, "render_latent": render,
                               "target_latent": target, "expression": expr})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _module(seed: int = 0) -> RigFaceTrainModule:
    unets = RigFaceUNets.from_config(TINY_UNET_CONFIG, expression_kind="facerig", expression_dim=DIM, seed=seed)
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(11))
    return RigFaceTrainModule(unets.train(), text)


def _eval_loss(module: RigFaceTrainModule, ds: Dataset, n_t: int = 8) -> float:
    """Mean loss over the dataset at fixed timesteps and noise (comparable across weights)."""
    g = torch.Generator().manual_seed(123)
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    total = 0.0
    with torch.no_grad():
        for t in torch.linspace(50, 950, n_t).long():
            noise = torch.randn(batch["target_latent"].shape, generator=g)
            total += module.loss(batch, timesteps=t.repeat(len(ds)), noise=noise).item()
    return total / n_t


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=10, batch_size=2, lr=1e-3, log_every=5, save_every=1000, logger="csv", grad_clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


def test_dead_tail_is_frozen_and_still_saved():
    m = _module()
    assert "conv_out.weight" in m.frozen and "conv_norm_out.weight" in m.frozen
    assert any(n.startswith("up_blocks.3.attentions.2.transformer_blocks.0.") for n in m.frozen)
    assert not any(n.startswith("down_blocks.") or n.startswith("mid_block.") for n in m.frozen)
    assert "unets.unet_id.conv_out.weight" in m.state_dict()
    assert all(p.requires_grad for p in m.unets.unet_denoise.parameters())


def test_a_few_steps_lower_the_loss(tmp_path):
    torch.manual_seed(0)
    ds = LatentPairs(4)
    m = _module()
    before = _eval_loss(m, ds)
    Trainer(m, ds, _cfg(max_steps=30), tmp_path).run()
    after = _eval_loss(m, ds)
    assert after < 0.8 * before, (before, after)


def _sample(unets: RigFaceUNets, item: dict, text: torch.Tensor, steps: int = 20, start: int = 300) -> torch.Tensor:
    """DDIM from the target noised to ``start`` (SDEdit-style; a one-pair model this small does
    not learn the t ~ 999 end well enough to start from pure noise) down to t = 0."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                        set_alpha_to_one=False, steps_offset=1)
    sch.set_timesteps(steps)
    b = {k: v[None] for k, v in item.items()}
    ts = [t for t in sch.timesteps if t <= start]
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    x = sch.add_noise(b["target_latent"], noise, ts[0][None])
    with torch.no_grad():
        states = unets.identity_states(b["source_latent"], text)
        for t in ts:
            eps = unets.predict_noise(x, t, b["background_latent"], b["render_latent"], b["expression"], states, text)
            x = sch.step(eps, t, x).prev_sample
    return x[0]


def test_tiny_model_overfits_one_pair_and_samples_it_back(tmp_path):
    torch.manual_seed(0)
    ds = LatentPairs(1, seed=3)
    m = _module(1)
    before = _eval_loss(m, ds)
    start_sample = _sample(m.unets.eval(), ds[0], m.text_embeds)
    m.unets.train()
    Trainer(m, ds, _cfg(max_steps=150, batch_size=1, lr=2e-3, lr_schedule="cosine", warmup_steps=10), tmp_path).run()
    after = _eval_loss(m, ds)
    assert after < 0.4 * before, (before, after)
    target = ds[0]["target_latent"]
    got = _sample(m.unets.eval(), ds[0], m.text_embeds)
    err, err0 = (got - target).pow(2).mean().item(), (start_sample - target).pow(2).mean().item()
    assert err < 0.4 * err0 and err < 0.5 * target.var().item(), (err, err0, target.var().item())


def test_resume_continues_exactly(tmp_path):
    ds = LatentPairs(4, seed=5)
    straight = _module(2)
    Trainer(straight, ds, _cfg(max_steps=4, save_every=2, ema_decay=0.9), tmp_path / "a").run()
    first = _module(2)
    Trainer(first, ds, _cfg(max_steps=4, save_every=2, ema_decay=0.9), tmp_path / "b").run(stop_after=2)
    resumed = _module(2)
    Trainer(resumed, ds, _cfg(max_steps=4, save_every=2, ema_decay=0.9), tmp_path / "b").run(resume="latest")
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["unets.au_aug_mlp.weight"], _module(2).state_dict()["unets.au_aug_mlp.weight"])


def test_adam8bit_without_bitsandbytes_names_the_package(tmp_path):
    pytest.importorskip("accelerate")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes installed")
    tr = Trainer(_module(), LatentPairs(2), _cfg(max_steps=1), tmp_path)
    with pytest.raises(MissingDependency, match="bitsandbytes"):
        use_adam8bit(tr)


def test_background_paints_the_union_grey(astronaut):
    img = torch.from_numpy(astronaut[:64, :64].copy()).permute(2, 0, 1).float() / 127.5 - 1
    face = np.zeros((64, 64), np.float32)
    face[20:40, 24:40] = 1
    m = training_person_mask(astronaut[:64, :64], face, segmentation=False)
    assert m[30, 32] and m[63, 32] and m[12, 32]  # face, below it (neck/clothes), above it (hair)
    assert not m[2, 2] and not m[40, 2]
    out = paint_grey(img, m)
    assert torch.allclose(out[:, 30, 32], torch.full((3,), 127 / 127.5 - 1))
    assert torch.equal(out[:, 2, 2], img[:, 2, 2])
    assert torch.equal(sd_alphas_cumprod()[[0, -1]].float(), sd_alphas_cumprod()[[0, -1]].float())
    assert abs(sd_alphas_cumprod()[-1].item() - 0.0047) < 1e-3  # SD 1.5's final alpha-bar


# ---- the CLI on prepared photos ----------------------------------------------------------------
def write_tiny_base(root: Path) -> Path:
    """A tiny SD-1.5-layout folder (VAE, CLIP text encoder of width 32, tokenizer): the SD
    substrate's writer when present, else written here."""
    try:
        from facerig.engines.sd.base import write_tiny_sd_base  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        return write_tiny_sd_base(root, seed=0)
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                  block_out_channels=[8, 8, 16, 16], latent_channels=4, norm_num_groups=4, layers_per_block=1,
                  sample_size=64).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                 vocab_size=100, max_position_embeddings=77)).save_pretrained(root / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + ".,":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tmp = root / "_tok"
    tmp.mkdir(parents=True)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"))
    tok.model_max_length = 77
    tok.save_pretrained(root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def prepared_album(tmp_path_factory, astronaut):
    import cv2
    from PIL import Image

    from facerig.train.prepare import PrepareOptions, prepare_dataset

    root = tmp_path_factory.mktemp("album_in")
    (root / "astro").mkdir()
    Image.fromarray(astronaut).save(root / "astro" / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "astro" / "b.png")
    Image.fromarray(cv2.resize(astronaut, (400, 400), interpolation=cv2.INTER_AREA)).save(root / "astro" / "c.png")
    out = tmp_path_factory.mktemp("album_shards")
    prepare_dataset(root, out, PrepareOptions(size=64, buffers=True, album_by_folder=True, photometric=False))
    return out


def test_pair_dataset_conditions_come_from_the_target(prepared_album):
    from facerig.engines.rigface.training import RigFacePairDataset
    from facerig.train.data import ShardDataset

    shards = ShardDataset(prepared_album, size=64)
    ds = RigFacePairDataset(shards, pairs_per_source=2, min_frame_gap=1, segmentation=False)
    assert len(ds) == 2 * len(shards)
    item = ds[0]
    s, t = ds.pairs[0]
    assert s != t
    assert torch.equal(item["target"], shards[t]["image"]) and torch.equal(item["source"], shards[s]["image"])
    assert torch.equal(item["expression"], shards.params(t).expression[0].float())
    assert item["render"].min() >= -1 and item["render"].max() <= 1
    grey = (item["background"] - (127 / 127.5 - 1)).abs().amax(0) < 1e-6
    assert 0.05 < grey.float().mean() < 0.95  # the person is grey, the rest is the source


def test_cli_train_rigface_on_prepared_photos(prepared_album, tmp_path):
    from typer.testing import CliRunner

    from facerig.cli.app import app

    base = write_tiny_base(tmp_path / "base")
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "rigface", "--data", str(prepared_album), "-o", str(run),
                                   "--config", "tiny_cpu", "--base", str(base), "--max-steps", "2"])
    assert res.exit_code == 0, res.output
    assert (run / "final" / "rigface.json").is_file()
    assert (run / "checkpoints" / "latest").is_file()
    m = load_rigface_weights(run)
    assert m.expression_kind == "facerig" and m.num_states == 16
    # the crop the shards were prepared with is recorded, so inference frames faces as in training
    assert m.meta["crop"] == "ffhq"
    res = CliRunner().invoke(app, ["train", "rigface", "--data", str(prepared_album), "-o", str(tmp_path / "r2"),
                                   "--config", "tiny_cpu", "--base", str(tmp_path / "nowhere"), "--max-steps", "1"])
    assert res.exit_code != 0


def test_gradient_checkpointing_through_the_trainer_matches_plain_training(tmp_path):
    ds = LatentPairs(2, seed=8)
    runs = []
    for ckpt in (False, True):
        m = _module(4)
        Trainer(m, ds, _cfg(max_steps=2, gradient_checkpointing=ckpt), tmp_path / str(ckpt)).run()
        runs.append(m.state_dict())
        if ckpt:
            assert m.unets.unet_id.is_gradient_checkpointing and m.unets.unet_denoise.is_gradient_checkpointing
    a, b = runs
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert not torch.equal(a["unets.unet_denoise.conv_in.weight"], _module(4).state_dict()["unets.unet_denoise.conv_in.weight"])


@pytest.mark.shared_data
def test_pairs_from_a_prepared_video_are_frames_of_that_clip_apart(tmp_path):
    """`facerig train rigface` trains on frame pairs of one person from prepared videos: pairs come
    from the same clip, at least min_frame_gap frames apart, conditions from the target frame."""
    from facerig.engines.rigface.training import RigFacePairDataset
    from facerig.io.assets import shared_dir
    from facerig.train.data import ShardDataset
    from facerig.train.prepare import PrepareOptions, prepare_dataset

    root = shared_dir()
    assert root is not None
    clip = root / "data" / "videos" / "mead" / "M030_front_happy_level3_001.mp4"
    prepare_dataset([clip], tmp_path / "shards",
                    PrepareOptions(size=64, buffers=True, frame_stride=10, max_frames=5, photometric=False))
    shards = ShardDataset(tmp_path / "shards", size=64)
    assert len(shards) >= 4
    ds = RigFacePairDataset(shards, min_frame_gap=20, segmentation=False)
    assert len(ds) > 0
    for s, t in ds.pairs:
        a, b = shards[s], shards[t]
        assert a["identity"] == b["identity"] and abs(int(a["frame"]) - int(b["frame"])) >= 20
    s, t = ds.pairs[0]
    item = ds[0]
    assert torch.equal(item["target"], shards[t]["image"])
    assert torch.equal(item["expression"], shards.params(t).expression[0].float())
