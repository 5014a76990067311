"""Reference-feature banks on tiny stock UNets (CPU, seeded): recording order, FaceFusion and
K/V-extension readers, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from facerig.engines.rigface.model import SD15_UNET_CONFIG, TINY_UNET_CONFIG
from facerig.engines.sd.reference import (
    ReferenceBank,
    ReferenceRecorder,
    install_reference_readers,
    reference_readers,
    remove_reference_readers,
    strip_reference_hooks,
    transformer_blocks,
)
from facerig.errors import InvalidInput


def _unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY_UNET_CONFIG).eval()


def _inputs(seed: int = 1, batch: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=g), torch.randn(batch, 77, 32, generator=g)


def test_sd15_layout_has_16_blocks_recorded_in_execution_order():
    with torch.device("meta"):
        sd15 = UNet2DConditionModel(**SD15_UNET_CONFIG)
    assert len(transformer_blocks(sd15)) == 16
    unet = _unet()
    assert len(transformer_blocks(unet)) == 16  # same block types on the tiny config
    rec = ReferenceRecorder(unet)
    x, text = _inputs()
    with torch.no_grad():
        states = rec.capture(lambda: unet(x, 0, encoder_hidden_states=text), stop_early=False)
    assert rec.calls == list(range(16))  # the static order is the execution order (mid before up)
    widths = [s.shape[-1] for s in states]
    assert widths == [16, 16, 16, 16, 32, 32, 32, 32, 32, 32, 16, 16, 16, 16, 16, 16]
    assert states[6].shape[1] == 1  # mid block at the 1x1 level


def test_stop_early_records_the_same_states():
    unet = _unet()
    rec = ReferenceRecorder(unet)
    x, text = _inputs()
    with torch.no_grad():
        full = rec.capture(lambda: unet(x, 0, encoder_hidden_states=text), stop_early=False)
        early = rec.capture(lambda: unet(x, 0, encoder_hidden_states=text), stop_early=True)
    assert all(torch.equal(a, b) for a, b in zip(full, early, strict=True))


@pytest.mark.parametrize(("role", "point"), [("concat_keep_half", "block_input"), ("kv_extend", "post_norm1")])
def test_reader_with_own_tokens_equals_plain_self_attention(role, point):
    unet = _unet()
    x, text = _inputs()
    with torch.no_grad():
        plain = unet(x, 500, encoder_hidden_states=text).sample
        rec = ReferenceRecorder(unet, point=point)
        own = rec.capture(lambda: unet(x, 500, encoder_hidden_states=text), stop_early=False)
        rec.remove()
        bank = install_reference_readers(unet, role)
        bank.set(own)
        fused = unet(x, 500, encoder_hidden_states=text).sample
        # a different reference must change the output (the test can fail)
        bank.set([torch.randn_like(s) for s in own])
        other = unet(x, 500, encoder_hidden_states=text).sample
        with bank.disabled():
            off = unet(x, 500, encoder_hidden_states=text).sample
    assert (fused - plain).abs().max().item() < 1e-6
    assert (other - plain).abs().max().item() > 1e-3
    assert (off - plain).abs().max().item() < 1e-6
    assert [p.role for p in reference_readers(unet)] == [role] * 16
    remove_reference_readers(unet)
    assert all(isinstance(b.attn1.processor, AttnProcessor2_0) for b in transformer_blocks(unet))


def test_concat_keep_half_equals_the_released_block_computation():
    """The release: [own ; id] -> norm1 on all -> self-attention over 2N tokens -> residual on the
    joined tokens -> keep the own half -> cross-attention and feed-forward on own tokens."""
    unet = _unet(3)
    blk = transformer_blocks(unet)[1]
    bank = install_reference_readers(unet, "concat_keep_half")
    g = torch.Generator().manual_seed(5)
    own = torch.randn(2, 64, 16, generator=g)
    ident = torch.randn(2, 64, 16, generator=g) * 2 + 0.5
    ctx = torch.randn(2, 77, 32, generator=g)
    states = [torch.zeros(1, 1, blk.norm1.normalized_shape[0])] * 16
    states[1] = ident
    bank.set(states)
    with torch.no_grad():
        got = blk(own, encoder_hidden_states=ctx)
        h = torch.cat([own, ident], 1)
        a = AttnProcessor2_0()(blk.attn1, blk.norm1(h))
        h = (a + h)[:, :64]
        h = blk.attn2(blk.norm2(h), encoder_hidden_states=ctx) + h
        want = blk.ff(blk.norm3(h)) + h
    assert (got - want).abs().max().item() < 1e-5


def test_batch_one_reference_is_broadcast():
    unet = _unet()
    x, text = _inputs(batch=1)
    rec = ReferenceRecorder(unet)
    with torch.no_grad():
        states = rec.capture(lambda: unet(x, 0, encoder_hidden_states=text))
    bank = install_reference_readers(unet, "concat_keep_half")
    x2 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        bank.set(states)
        a = unet(x2, 10, encoder_hidden_states=text.expand(2, -1, -1)).sample
        bank.set([s.expand(2, -1, -1).clone() for s in states])
        b = unet(x2, 10, encoder_hidden_states=text.expand(2, -1, -1)).sample
    assert torch.allclose(a, b, atol=1e-6)


def _pair_loss(ref: UNet2DConditionModel, den: UNet2DConditionModel, rec: ReferenceRecorder, bank: ReferenceBank):
    x, text = _inputs(2, batch=2)
    states = rec.capture(lambda: ref(x, 0, encoder_hidden_states=text))
    bank.set(states)
    out = den(x * 0.5, 300, encoder_hidden_states=text).sample
    return (out**2).mean()


def test_backward_with_gradient_checkpointing_matches_plain_backward():
    grads = []
    for ckpt in (False, True):
        ref, den = _unet(0).train(), _unet(1).train()
        rec = ReferenceRecorder(ref)
        bank = install_reference_readers(den, "concat_keep_half")
        if ckpt:
            ref.enable_gradient_checkpointing()
            den.enable_gradient_checkpointing()
        loss = _pair_loss(ref, den, rec, bank)
        loss.backward()
        assert rec.calls == list(range(16))  # recompute during backward recorded nothing
        grads.append(
            [p.grad.clone() for p in [*ref.parameters(), *den.parameters()] if p.grad is not None]
        )
    plain, ckpt = grads
    n_ref = sum(1 for _ in ref.parameters())
    assert len(plain) == len(ckpt) and len(plain) > n_ref  # the reference UNet gets gradients too
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(plain, ckpt, strict=True))
    assert any(a.abs().sum() > 0 for a in plain[:10])


def test_bank_errors_name_the_problem():
    unet = _unet()
    bank = install_reference_readers(unet, "kv_extend")
    with pytest.raises(InvalidInput, match="16 reference states"):
        bank.set([torch.zeros(1, 4, 16)] * 3)
    bank.set([torch.zeros(1, 4, 7)] * 16)
    x, text = _inputs()
    with pytest.raises(InvalidInput, match="channels"), torch.no_grad():
        unet(x, 1, encoder_hidden_states=text)
    with pytest.raises(InvalidInput, match="role"):
        install_reference_readers(unet, "add")


def test_strip_reference_hooks_removes_copied_hooks():
    import copy

    unet = _unet()
    ReferenceRecorder(unet)
    twin = copy.deepcopy(unet)
    assert strip_reference_hooks(twin) == 16
    assert strip_reference_hooks(twin) == 0
