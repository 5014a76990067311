"""SD substrate pieces on the tiny base: latent spaces, the prompt cache, schedules, runtime options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from facerig.engines.sd import latents as L  # noqa: E402
from facerig.engines.sd.base import bundled_config, load_sd_base, write_tiny_sd_base  # noqa: E402
from facerig.engines.sd.prompt import clear_prompt_cache, encode_prompt  # noqa: E402
from facerig.engines.sd.runtime import apply_runtime, resolve_dtype  # noqa: E402
from facerig.engines.sd.schedulers import make_scheduler  # noqa: E402
from facerig.errors import InvalidInput  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return load_sd_base(write_tiny_sd_base(tmp_path_factory.mktemp("sdbase") / "sd15", seed=1))


def test_scaled_and_unscaled_latents(base, astronaut):
    img = L.image_to_tensor(np.ascontiguousarray(astronaut[::8, ::8]))  # 64x64 real photo
    assert img.shape == (1, 3, 64, 64) and img.min() >= -1 and img.max() <= 1
    with torch.no_grad():
        z = L.encode_images(base.vae, img, scaled=False)
        zs = L.encode_images(base.vae, img, scaled=True)
        assert z.shape == (1, 4, 8, 8)
        torch.testing.assert_close(zs, z * 0.18215)
        # decoding the scaled latent divides the factor out: same image as decoding the unscaled one
        torch.testing.assert_close(L.decode_latents(base.vae, zs, scaled=True),
                                   L.decode_latents(base.vae, z, scaled=False))
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        assert torch.equal(L.encode_images(base.vae, img, scaled=False, sample=True, generator=g1),
                           L.encode_images(base.vae, img, scaled=False, sample=True, generator=g2))
    back = L.tensor_to_image(img)
    assert back.dtype == np.uint8 and np.abs(back.astype(int) - astronaut[::8, ::8]).max() <= 1
    with pytest.raises(InvalidInput, match="multiples of 8"):
        L.encode_images(base.vae, torch.zeros(1, 3, 60, 64), scaled=True)
    with pytest.raises(InvalidInput, match="uint8"):
        L.image_to_tensor(astronaut.astype(np.float32))


def test_prompt_is_encoded_once(base):
    clear_prompt_cache()
    calls = []
    h = base.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        e1 = encode_prompt(base.text_encoder, base.tokenizer, "A close up of a person.")
        e2 = encode_prompt(base.text_encoder, base.tokenizer, "A close up of a person.")
        assert e1 is e2 and len(calls) == 1 and e1.shape == (1, 77, 32)
        e3 = encode_prompt(base.text_encoder, base.tokenizer, "A portrait.")
        assert len(calls) == 2 and not torch.equal(e1, e3)
        e4 = encode_prompt(base.text_encoder, base.tokenizer, "A close up of a person.", dtype=torch.bfloat16)
        assert e4.dtype == torch.bfloat16 and len(calls) == 3
    finally:
        h.remove()
    with pytest.raises(InvalidInput, match="prompt"):
        encode_prompt(base.text_encoder, base.tokenizer, None)  # type: ignore[arg-type]


def test_release_unipc_schedule():
    s = make_scheduler("unipc", bundled_config("scheduler"))
    assert s.config.solver_order == 2 and s.config.solver_type == "bh2" and s.config.predict_x0
    assert s.config.prediction_type == "epsilon" and s.config.timestep_spacing == "linspace"
    s.set_timesteps(50)
    assert s.timesteps.tolist() == [int(round(999 - 979.0 / 49 * i)) for i in range(50)]
    assert s.timesteps[:3].tolist() == [999, 979, 959] and s.timesteps[-1] == 20
    s.set_timesteps(20)
    assert len(s.timesteps) == 20 and s.timesteps[0] == 999


def test_other_schedulers_and_options():
    d = make_scheduler("ddim", None, prediction_type="v_prediction")
    assert type(d).__name__ == "DDIMScheduler" and d.config.prediction_type == "v_prediction"
    assert not d.config.clip_sample
    plain = make_scheduler("ddpm", bundled_config("scheduler"))
    z = make_scheduler("ddpm", bundled_config("scheduler"), zero_terminal_snr=True, timestep_spacing="trailing")
    assert float(z.alphas_cumprod[-1]) < 1e-6 < float(plain.alphas_cumprod[-1])
    z.set_timesteps(10)
    assert z.timesteps[0] == 999
    for bad in ({"name": "euler"}, {"name": "ddim", "prediction_type": "x"}, {"name": "ddim", "timestep_spacing": "x"}):
        with pytest.raises(InvalidInput):
            make_scheduler(**bad)


def test_dtype_resolution():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("fp32", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("fp16", "cuda") == torch.float16
    with pytest.raises(InvalidInput, match="fp16"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(InvalidInput, match="dtype"):
        resolve_dtype("int8", "cpu")


def test_apply_runtime_keeps_custom_processors_and_offloads(tmp_path):
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                layers_per_block=1, sample_size=8, attention_head_dim=4, norm_num_groups=8)

    class Custom(AttnProcessor2_0):
        pass

    name = next(n for n in unet.attn_processors if n.endswith("attn1.processor"))
    procs = dict(unet.attn_processors)
    procs[name] = Custom()
    unet.set_attn_processor(procs)
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 32)
    with torch.no_grad():
        ref = unet(x, t, c).sample
    apply_runtime({"unet": unet}, device="cpu", sdpa=False)
    kinds = {type(p) for n, p in unet.attn_processors.items() if n != name}
    assert kinds == {AttnProcessor} and type(unet.attn_processors[name]) is Custom
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, c).sample, ref, atol=1e-5, rtol=1e-5)
    rt = apply_runtime([unet], device="cpu", sdpa=True, offload="model")
    assert rt.offload == "model" and len(rt.hooks) == 1 and rt.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, c).sample, ref, atol=1e-5, rtol=1e-5)
    rt.offload_all()
    rt.remove()
    with pytest.raises(InvalidInput, match="offload"):
        apply_runtime([unet], offload="disk")
    with pytest.raises(InvalidInput, match="modules"):
        apply_runtime(["unet"])  # type: ignore[list-item]


def test_device_resolution():
    from facerig.engines.sd.runtime import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="--device cpu"):
            resolve_device("cuda")
    with pytest.raises(InvalidInput, match="device"):
        resolve_device("tpu9")
