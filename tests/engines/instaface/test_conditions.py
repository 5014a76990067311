"""3D Fusion Controller and identity embeddings on tiny random networks (CPU, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from facerig.engines.instaface.conditions import FusionController, IdentityEncoder, buffer_images
from facerig.errors import AssetMissing, InvalidInput


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16),
                         layers_per_block=1, norm_num_groups=4, sample_size=64, scaling_factor=0.18215).eval()


def _buffers(b: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n = torch.nn.functional.normalize(torch.randn(b, 3, size, size, generator=g), dim=1)
    return {"albedo": torch.rand(b, 3, size, size, generator=g), "normal": n,
            "render": torch.rand(b, 3, size, size, generator=g) * 1.5}


def test_fusion_controller_concatenates_the_three_scaled_latents():
    vae = _vae()
    buf = _buffers()
    z = FusionController(vae)(buf)
    assert z.shape == (2, 12, 8, 8)
    imgs = buffer_images(buf)
    assert imgs["render"].max() <= 1 and imgs["albedo"].min() >= -1
    with torch.no_grad():
        for i, name in enumerate(("albedo", "normal", "render")):
            one = vae.encode(imgs[name]).latent_dist.mean * 0.18215
            assert torch.allclose(z[:, 4 * i:4 * i + 4], one, atol=1e-5), name
    with pytest.raises(InvalidInput, match="buffers.normal"):
        FusionController(vae)({"albedo": buf["albedo"], "render": buf["render"]})


def _tiny_clip(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, projection_dim=16, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8)
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    return tmp_path / "clip"


def _points(b: int, size: int = 128) -> np.ndarray:
    # a plausible dlib 5-point layout (eye corners, nose base) on a size x size face crop
    p = np.array([[0.70, 0.40], [0.58, 0.41], [0.30, 0.40], [0.42, 0.41], [0.50, 0.62]]) * size
    return np.repeat(p[None], b, 0)


def test_identity_encoder_clip_and_face_embeddings(tmp_path):
    from facerig.eval.dlib_port import DlibResNet

    torch.manual_seed(0)
    enc = IdentityEncoder(_tiny_clip(tmp_path), face_net=DlibResNet())
    assert enc.clip_dim == 16
    imgs = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    face, clip = enc(imgs, _points(2))
    assert face.shape == (2, 128) and clip is not None and clip.shape == (2, 16)
    assert torch.isfinite(face).all() and torch.isfinite(clip).all()
    assert not torch.allclose(face[0], face[1]) and not torch.allclose(clip[0], clip[1])


def test_identity_encoder_without_clip_runs_on_face_tokens_only(caplog):
    from facerig.eval.dlib_port import DlibResNet

    with caplog.at_level("INFO"):
        enc = IdentityEncoder(None, face_net=DlibResNet())
    assert "face-recognition tokens only" in caplog.text
    assert enc.clip_dim == 0
    face, clip = enc(torch.rand(1, 3, 128, 128), _points(1))
    assert clip is None and face.shape == (1, 128)


def test_identity_encoder_missing_clip_folder_is_one_typed_error(tmp_path):
    with pytest.raises(AssetMissing, match="CLIP vision model"):
        IdentityEncoder(tmp_path / "nowhere")
