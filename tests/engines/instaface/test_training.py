"""InstaFace training on tiny configs (CPU, seeded): which networks learn per stage, stage-1 steps
on facerig's Trainer lower the loss (and resume), the stage-2 single-image fine-tune lowers the
reconstruction error of that image."""

from __future__ import annotations

import torch

from facerig.engines.instaface.pipeline import sample_latents
from facerig.engines.instaface.training import (
    InstaFaceTrainModule,
    LatentFaceDataset,
    finetune_single_image,
    set_stage,
    train_stage1,
)
from facerig.engines.sd.latents import decode_latents
from facerig.train.config import TrainConfig

from .conftest import CLIP_DIM, tiny_inputs, tiny_model
from .test_conditions import _vae


def _batch(n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"target_latent": torch.randn(n, 4, 8, 8, generator=g), "condition_latents": torch.randn(n, 12, 8, 8, generator=g),
            "face_embedding": torch.randn(n, 128, generator=g), "clip_embedding": torch.randn(n, CLIP_DIM, generator=g)}


def _fixed_loss(module: InstaFaceTrainModule, batch) -> float:
    g = torch.Generator().manual_seed(123)
    n = batch["target_latent"].shape[0]
    t = torch.tensor([100, 300, 600, 900])[:n]
    noise = torch.randn(batch["target_latent"].shape, generator=g)
    with torch.no_grad():
        return float(module.loss(batch, timesteps=t, noise=noise))


def test_stages_set_the_trainable_networks():
    m = tiny_model()
    frozen = set_stage(m, 1)
    assert frozen and all(not n.startswith("down_blocks") for n in frozen)  # only the tail after the last attn1
    mod = InstaFaceTrainModule(m, stage=1)
    mod(_batch(2)).backward()
    for name, net in (("guidance", m.guidance_unet), ("diffusion", m.diffusion_unet), ("projection", m.projection)):
        no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
        assert not no_grad, f"{name}: trainable parameters without a gradient {no_grad[:3]}"
    set_stage(m, 2)
    assert not any(p.requires_grad for p in m.guidance_unet.parameters())
    assert all(p.requires_grad for p in m.diffusion_unet.parameters())
    assert all(p.requires_grad for p in m.projection.parameters())


def test_stage1_trainer_steps_lower_the_loss_and_resume(tmp_path):
    m = tiny_model()
    batch = _batch(4)
    before = _fixed_loss(InstaFaceTrainModule(m, stage=1), batch)
    ds = LatentFaceDataset(batch)
    cfg = TrainConfig(max_steps=8, batch_size=4, lr=1e-3, weight_decay=1e-2, save_every=4, log_every=4, logger="csv")
    final = train_stage1(m, ds, tmp_path / "run", cfg)
    assert (final / "instaface.json").is_file()
    from facerig.engines.instaface.model import InstaFaceModel

    trained = InstaFaceModel.from_pretrained(final)
    after = _fixed_loss(InstaFaceTrainModule(trained, stage=1), batch)
    assert after < 0.9 * before, (before, after)
    # resumable: a longer run continues from the saved step-8 checkpoint
    cfg2 = TrainConfig(max_steps=10, batch_size=4, lr=1e-3, weight_decay=1e-2, save_every=10, log_every=5, logger="csv")
    final2 = train_stage1(tiny_model(), ds, tmp_path / "run", cfg2, resume=True)
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000010"
    resumed = _fixed_loss(InstaFaceTrainModule(InstaFaceModel.from_pretrained(final2), stage=1), batch)
    assert resumed < 0.9 * before, (before, after, resumed)  # it went on from the trained weights, not fresh ones


def test_stage2_finetune_lowers_the_reconstruction_error_of_the_image():
    vae = _vae()
    m = tiny_model().eval()
    d = tiny_inputs()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = torch.stack([xx, yy, (xx * yy)], 0)[None] * 0.8  # a smooth (1, 3, 64, 64) image in [-1, 1]
    with torch.no_grad():
        x0 = vae.encode(image).latent_dist.mean * vae.config.scaling_factor
        # the tiny random VAE cannot reproduce the image itself: its own round trip is the reference
        reference = decode_latents(vae, x0)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))

    def error(model) -> tuple[float, float]:
        tok = model.identity_tokens(d["face"], d["clip"])
        z = sample_latents(model, d["cond"], tok, d["text"], noise=noise)
        with torch.no_grad():
            out = decode_latents(vae, z)
        return float(((z - x0) ** 2).mean()), float(((out - reference) ** 2).mean())

    before = error(m)
    ft, losses = finetune_single_image(m, x0, d["cond"], d["face"], d["clip"], d["text"], steps=10, lr=3e-3,
                                       generator=torch.Generator().manual_seed(0))
    after = error(ft)
    # latent reconstruction error (the space the fine-tune works in; the VAE is frozen) drops ~2x;
    # through this random tiny decoder (saturated by the far-off latents) the image error barely moves
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] < before[1], (before, after)
    assert sum(losses[-3:]) < sum(losses[:3])
    # the original model is untouched (a copy was tuned) and the guidance network did not move
    assert error(m) == before
    for a, b in zip(m.guidance_unet.parameters(), ft.guidance_unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_train_instaface_on_prepared_shards(tmp_path, astronaut):
    """Stage 1 end to end on `facerig prepare` shards: images -> frozen VAE / identity encoders ->
    latents and embeddings inside the train module; the final folder loads."""
    import numpy as np
    from PIL import Image

    from facerig.engines.instaface.model import TINY_UNET_CONFIG, InstaFaceModel
    from facerig.engines.instaface.training import ShardFaceDataset, train_instaface
    from facerig.engines.sd.base import write_tiny_sd_base
    from facerig.eval.dlib_port import DlibResNet
    from facerig.train.data import ShardDataset
    from facerig.train.prepare import PrepareOptions, prepare_dataset

    root = tmp_path / "photos"
    (root / "astro").mkdir(parents=True)
    Image.fromarray(astronaut).save(root / "astro" / "a.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(root / "astro" / "b.png")
    shards = tmp_path / "shards"
    prepare_dataset(root, shards, PrepareOptions(size=64, buffers=True, album_by_folder=True, photometric=False))
    torch.set_num_threads(1)  # prepare leaves torch on all cores
    item = ShardFaceDataset(ShardDataset(shards, size=64))[0]
    assert item["image"].shape == (3, 64, 64) and item["points5"].shape == (5, 2)
    p5 = item["points5"].numpy()
    assert (p5 > 8).all() and (p5 < 56).all() and p5[0, 0] > p5[2, 0]  # inside the crop, eye order as dlib's
    base = write_tiny_sd_base(tmp_path / "sd")
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-4, weight_decay=1e-2, save_every=2, log_every=1, logger="csv")
    final = train_instaface(shards, tmp_path / "run", base=base, config=cfg, size=64, unet_config=TINY_UNET_CONFIG,
                            face_net=DlibResNet())
    m = InstaFaceModel.from_pretrained(final)
    assert m.meta["size"] == 64 and not m.projection.uses_clip


def test_stage2_on_a_bf16_model_tunes_and_keeps_an_fp32_copy():
    m = tiny_model().to(torch.bfloat16).eval()
    d = tiny_inputs()
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    ft, _ = finetune_single_image(m, x0, d["cond"], d["face"], d["clip"], d["text"], steps=1, lr=1e-5,
                                  generator=torch.Generator().manual_seed(0))
    assert ft.dtype == torch.float32 and m.dtype == torch.bfloat16
    a = torch.cat([p.float().flatten() for p in m.diffusion_unet.parameters()])
    b = torch.cat([p.flatten() for p in ft.diffusion_unet.parameters()])
    assert (a != b).float().mean() > 0.9  # the 1e-5 step is kept in (nearly) every weight
    tok = ft.identity_tokens(d["face"], d["clip"])
    assert ft.predict_noise(d["noisy"].bfloat16(), 10, d["cond"], tok, d["text"]).dtype == torch.float32
