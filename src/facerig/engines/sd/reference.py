"""Reference-feature banks: record the transformer-block tokens of one UNet, read them in another.

Two SD-based engines fuse the features of a *reference* UNet (run once on the source image) into the
self-attention of the *denoising* UNet, block by block in execution order (down blocks, mid block,
up blocks; 16 blocks for SD 1.5):

* :class:`ReferenceRecorder` -- forward pre-hooks on the reference UNet's ``BasicTransformerBlock``s
  that store, into slot ``i`` of a :class:`ReferenceBank`, either the block's INPUT tokens (before
  ``norm1``; ``point="block_input"``, RigFace) or the tokens its ``attn1`` sees (after ``norm1``;
  ``point="post_norm1"``, MagicPortrait). Slots are fixed per block, and the hooks only write while
  a capture is running, so a gradient-checkpointing recompute never overwrites or appends a state.
* Readers: attention processors on the denoiser blocks' ``attn1``, each with a FIXED role and slot:

  - ``concat_keep_half`` (:class:`ConcatKeepHalfProcessor`, RigFace's FaceFusion): the released
    block joins ``[own ; reference]`` on the token axis, applies its ``norm1`` to all, runs
    self-attention over all 2N tokens, adds the residual to the joined tokens and keeps the first
    half. Because ``norm1`` is a per-token LayerNorm and the kept rows only need the queries of the
    own tokens, this equals: queries from ``norm1(own)`` (what the stock block hands ``attn1``),
    keys/values from ``[norm1(own) ; norm1(reference)]`` with the DENOISER block's ``norm1``, the
    stock residual on the own tokens. The processor holds a reference to that ``norm1``.
  - ``kv_extend`` (:class:`KVExtendProcessor`, MagicPortrait as released): queries from the own
    post-norm1 tokens, keys/values from ``[own ; reference]`` with the reference tokens recorded
    after the reference block's own ``norm1``.

  With the bank inactive (:meth:`ReferenceBank.disable`) a reader is plain self-attention (e.g.
  MagicPortrait's unconditional guidance half).

Video denoisers (``UNetMotionModel``, MagicPortrait): their spatial blocks see ``(B * F, N, C)``
tokens, batch-major. ``bank.frames = F`` repeats a state of batch ``B`` over the frames
(``repeat_interleave``); :meth:`ReferenceBank.set_drop` drops the reference for chosen rows of a
batch (classifier-free guidance's unconditional half in ONE batched call: those rows attend to their
own tokens only); ``bank.round_to`` rounds the states to a dtype before use (MagicPortrait's release
hands the readers fp16 states even in an fp32 run). The temporal modules' transformer blocks (under
``motion_modules``) are neither recorded nor read (:func:`transformer_blocks` skips them).

Everything works on stock diffusers models: no block is replaced, only ``attn1``'s processor and
hooks. Readers compute attention with ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).
A later ``unet.set_attn_processor(...)`` / ``set_default_attn_processor()`` removes the readers:
install them again afterwards (:func:`install_reference_readers`), as after ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facerig.errors import InvalidInput

__all__ = [
    "ROLES",
    "ConcatKeepHalfProcessor",
    "KVExtendProcessor",
    "ReferenceBank",
    "ReferenceRecorder",
    "install_reference_readers",
    "install_reference_recorder",
    "reference_readers",
    "remove_reference_readers",
    "remove_reference_recorder",
    "strip_reference_hooks",
    "transformer_blocks",
]

ROLES = ("concat_keep_half", "kv_extend")
POINTS = ("block_input", "post_norm1")


def transformer_blocks(unet: nn.Module) -> list[Any]:
    """The ``BasicTransformerBlock``s of a ``UNet2DConditionModel`` in EXECUTION order: down blocks,
    mid block, up blocks (``named_modules`` lists the up blocks before the mid block)."""
    from diffusers.models.attention import BasicTransformerBlock

    parts: list[nn.Module] = []
    for name in ("down_blocks", "mid_block", "up_blocks"):
        part = getattr(unet, name, None)
        if part is None:
            continue
        parts.extend(part if isinstance(part, nn.ModuleList) else [part])
    if not parts:
        raise InvalidInput("unet", "a UNet2DConditionModel (down_blocks / mid_block / up_blocks)", type(unet).__name__)
    blocks: list[Any] = [m for p in parts for name, m in p.named_modules()
                         if isinstance(m, BasicTransformerBlock) and not _in_motion_module(name)]
    return blocks


def _in_motion_module(name: str) -> bool:
    """True for a module under a ``motion_modules`` list (temporal transformers of a UNetMotionModel)."""
    return ".motion_modules." in f".{name}."


class ReferenceBank:
    """Fixed slots of reference states, one per transformer block (see the module docstring).

    ``states[i]`` is ``(B, N_i, C_i)`` or None. A state of batch 1 is broadcast over a larger batch.
    """

    def __init__(self, num_slots: int):
        if int(num_slots) < 1:
            raise InvalidInput("num_slots", "at least 1 transformer block", num_slots)
        self.num_slots = int(num_slots)
        self.states: list[torch.Tensor | None] = [None] * self.num_slots
        self.active = True
        #: frames per sample of a video denoiser: a state of batch B serves (B * frames) token rows
        self.frames = 1
        #: dtype the states are rounded to before use (None: used as stored)
        self.round_to: torch.dtype | None = None
        self.drop: torch.Tensor | None = None

    def set_drop(self, drop: torch.Tensor | Sequence[bool] | None) -> None:
        """Rows of the denoiser batch (per sample, before the frame repeat) whose readers ignore the
        reference (``True``) -- e.g. ``[True, False]`` for a batched ``[uncond, cond]`` call. None: none."""
        if drop is None:
            self.drop = None
            return
        d = torch.as_tensor(drop, dtype=torch.bool).flatten()
        if d.numel() < 1:
            raise InvalidInput("drop", "one flag per batch row", tuple(d.shape))
        self.drop = d

    def drop_rows(self, rows: int) -> torch.Tensor | None:
        """The drop flags for ``rows`` token rows (repeated over the frames), or None."""
        if self.drop is None:
            return None
        d = self.drop
        if d.numel() * self.frames == rows:
            return d.repeat_interleave(self.frames)
        if d.numel() == rows:
            return d
        raise InvalidInput("drop", f"{rows} or {rows // max(self.frames, 1)} flags (one per batch row)", d.numel())

    def set(self, states: Sequence[torch.Tensor]) -> None:
        """Use these states (kept until the next ``set``/``clear``, so a gradient-checkpointing
        recompute during backward reads the very same tensors)."""
        states = list(states)
        if len(states) != self.num_slots:
            raise InvalidInput(
                "identity_states",
                f"{self.num_slots} reference states (one per transformer block, execution order)",
                f"{len(states)} states",
            )
        for i, s in enumerate(states):
            if not isinstance(s, torch.Tensor) or s.ndim != 3:
                raise InvalidInput(f"identity_states[{i}]", "a (B, N, C) tensor", getattr(s, "shape", type(s)))
        self.states = states  # type: ignore[assignment]  # list[Tensor] into list[Tensor | None]
        self.active = True

    def clear(self) -> None:
        self.states = [None] * self.num_slots

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Readers act as plain self-attention inside this context."""
        was = self.active
        self.active = False
        try:
            yield
        finally:
            self.active = was

    def disable(self) -> None:
        self.active = False

    def enable(self) -> None:
        self.active = True

    def get(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """State ``index`` shaped for tokens ``like`` (B, N, C): batch broadcast, dtype/device of ``like``."""
        s = self.states[index]
        if s is None:
            raise InvalidInput(
                f"reference state {index}",
                "states recorded by the reference UNet (or given to the model) before the denoiser runs",
                None,
            )
        b, _, c = like.shape
        if s.shape[-1] != c:
            raise InvalidInput(f"reference state {index}", f"{c} channels (the denoiser block's width)", tuple(s.shape))
        if s.shape[0] != b:
            if self.frames > 1 and s.shape[0] * self.frames == b:
                s = s.repeat_interleave(self.frames, dim=0)
            elif s.shape[0] == 1:
                s = s.expand(b, -1, -1)
            else:
                raise InvalidInput(f"reference state {index}", f"batch 1 or {b}" + (
                    f" or {b // self.frames} (x {self.frames} frames)" if self.frames > 1 else ""), tuple(s.shape))
        if self.round_to is not None:
            s = s.to(self.round_to)
        return s.to(device=like.device, dtype=like.dtype)


class _StopForward(Exception):
    """Raised by the last recording hook to skip the reference UNet's dead tail."""


class ReferenceRecorder:
    """Forward pre-hooks recording the reference UNet's transformer-block tokens into ``bank``.

    ``point``: ``"block_input"`` (the block's input, before norm1) or ``"post_norm1"`` (the input
    of ``attn1``). Use :meth:`capture` to run the UNet and collect the states.
    """

    def __init__(self, unet: nn.Module, point: str = "block_input", bank: ReferenceBank | None = None):
        if point not in POINTS:
            raise InvalidInput("point", f"one of {POINTS}", point)
        self.unet = unet
        self.point = point
        self.blocks = transformer_blocks(unet)
        if not self.blocks:
            raise InvalidInput("unet", "a UNet with transformer blocks (cross-attention blocks)", type(unet).__name__)
        self.bank = bank if bank is not None else ReferenceBank(len(self.blocks))
        if self.bank.num_slots != len(self.blocks):
            raise InvalidInput("bank", f"{len(self.blocks)} slots (the UNet's transformer blocks)", self.bank.num_slots)
        self.recording = False
        self.stop_after_last = False
        self.calls: list[int] = []  # slot order of the last capture (execution-order check)
        self._handles: list[Any] = []
        for i, blk in enumerate(self.blocks):
            target = blk if point == "block_input" else blk.attn1
            self._handles.append(target.register_forward_pre_hook(self._hook(i)))

    def _hook(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not self.recording:
                return
            if not args or not isinstance(args[0], torch.Tensor):
                raise InvalidInput("reference block input", "hidden states as the first positional argument", None)
            self.bank.states[index] = args[0]
            self.calls.append(index)
            if self.stop_after_last and index == len(self.blocks) - 1:
                raise _StopForward

        hook._facerig_reference = True  # type: ignore[attr-defined]  # tag: strip_reference_hooks finds it
        return hook

    def capture(self, forward: Callable[[], Any], *, stop_early: bool = True) -> list[torch.Tensor]:
        """Run ``forward()`` (a call of the reference UNet) and return the recorded states in
        execution order. With ``stop_early`` the UNet stops right after the last block's input is
        recorded: the layers after it cannot change any recorded state (they are dead weights
        for the states; the UNet's output is then not computed)."""
        self.bank.clear()
        self.calls = []
        self.recording = True
        self.stop_after_last = bool(stop_early)
        try:
            forward()
        except _StopForward:
            pass
        finally:
            self.recording = False
            self.stop_after_last = False
        missing = [i for i, s in enumerate(self.bank.states) if s is None]
        if missing:
            raise InvalidInput("reference UNet", f"all {len(self.blocks)} transformer blocks to run", f"slots {missing} not run")
        return [s for s in self.bank.states if s is not None]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _check_block(block: nn.Module, role: str) -> None:
    attn = block.attn1
    bad = []
    if getattr(block, "norm_type", "layer_norm") != "layer_norm":
        bad.append(f"norm_type={block.norm_type}")
    if getattr(block, "pos_embed", None) is not None:
        bad.append("positional embeddings")
    if getattr(block, "only_cross_attention", False):
        bad.append("only_cross_attention")
    if getattr(attn, "spatial_norm", None) is not None or getattr(attn, "group_norm", None) is not None:
        bad.append("attn1 spatial/group norm")
    if bad:
        raise InvalidInput("unet", f"SD-style transformer blocks for the {role} reader", ", ".join(bad))


def _attend(attn: Any, query_in: torch.Tensor, kv_in: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn``'s projections + SDPA with queries from ``query_in`` and keys/values from ``kv_in``
    (the stock AttnProcessor2_0 computation; ``mask``: optional boolean (B, 1, 1, N_kv), True = attend)."""
    b = query_in.shape[0]
    query = attn.to_q(query_in)
    key = attn.to_k(kv_in)
    value = attn.to_v(kv_in)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
    out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
    out = attn.to_out[0](out)
    out = attn.to_out[1](out)
    if getattr(attn, "residual_connection", False):
        out = out + query_in
    return out / attn.rescale_output_factor


class _Reader(ABC):
    """Base of the readers: each subclass says which reference tokens join its block's attention."""

    role = ""

    def __init__(self, bank: ReferenceBank, index: int):
        self.bank = bank
        self.index = int(index)

    @abstractmethod
    def _reference(self, own: torch.Tensor) -> torch.Tensor:
        """The (B, M, C) tokens this block's attention reads beside its own ``own`` tokens."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise InvalidInput("attn1", "a self-attention layer for a reference reader", "cross-attention input")
        if attention_mask is not None:
            raise InvalidInput("attention_mask", "None (reference readers extend the keys)", tuple(attention_mask.shape))
        if hidden_states.ndim != 3:
            raise InvalidInput("hidden_states", "(B, N, C) tokens", tuple(hidden_states.shape))
        if not self.bank.active:
            return _attend(attn, hidden_states, hidden_states)
        drop = self.bank.drop_rows(hidden_states.shape[0])
        if drop is not None and bool(drop.all()):
            return _attend(attn, hidden_states, hidden_states)
        ref = self._reference(hidden_states)
        mask = None
        if drop is not None and bool(drop.any()):
            # dropped rows attend to their own tokens only: the reference keys are masked out
            n, m = hidden_states.shape[1], ref.shape[1]
            keep = torch.ones(hidden_states.shape[0], n + m, dtype=torch.bool, device=hidden_states.device)
            keep[drop.to(hidden_states.device), n:] = False
            mask = keep[:, None, None, :]
        return _attend(attn, hidden_states, torch.cat([hidden_states, ref], dim=1), mask)


class ConcatKeepHalfProcessor(_Reader):
    """RigFace FaceFusion reader (see the module docstring): keys/values from
    ``[norm1(own) ; norm1(reference)]`` with the denoiser block's own ``norm1``."""

    role = "concat_keep_half"

    def __init__(self, bank: ReferenceBank, index: int, norm: nn.Module):
        super().__init__(bank, index)
        self.norm = norm

    def _reference(self, own: torch.Tensor) -> torch.Tensor:
        return self.norm(self.bank.get(self.index, own))


class KVExtendProcessor(_Reader):
    """MagicPortrait reader: keys/values from ``[own ; reference]`` (reference already post-norm1)."""

    role = "kv_extend"

    def _reference(self, own: torch.Tensor) -> torch.Tensor:
        return self.bank.get(self.index, own)


def strip_reference_hooks(unet: nn.Module) -> int:
    """Remove every recorder hook facerig put on ``unet`` (also those a ``copy.deepcopy`` carried
    over, which would still write into the original's bank); returns how many."""
    n = 0
    for m in unet.modules():
        for key, fn in list(m._forward_pre_hooks.items()):
            if getattr(fn, "_facerig_reference", False):
                del m._forward_pre_hooks[key]
                n += 1
    return n


def install_reference_recorder(unet: nn.Module, point: str = "block_input") -> ReferenceRecorder:
    """Hooks on ``unet``'s transformer blocks; ``recorder.capture(lambda: unet(...))`` -> states."""
    return ReferenceRecorder(unet, point=point)


def remove_reference_recorder(recorder: ReferenceRecorder) -> None:
    recorder.remove()


def install_reference_readers(unet: nn.Module, role: str, bank: ReferenceBank | None = None) -> ReferenceBank:
    """Set a reader of ``role`` on ``attn1`` of every transformer block of ``unet`` (block ``i``
    reads slot ``i``); returns the bank they read (a new one unless given)."""
    if role not in ROLES:
        raise InvalidInput("role", f"one of {ROLES}", role)
    blocks = transformer_blocks(unet)
    if not blocks:
        raise InvalidInput("unet", "a UNet with transformer blocks", type(unet).__name__)
    bank = bank if bank is not None else ReferenceBank(len(blocks))
    if bank.num_slots != len(blocks):
        raise InvalidInput("bank", f"{len(blocks)} slots (the UNet's transformer blocks)", bank.num_slots)
    for i, blk in enumerate(blocks):
        _check_block(blk, role)
        proc: _Reader = (
            ConcatKeepHalfProcessor(bank, i, blk.norm1) if role == "concat_keep_half" else KVExtendProcessor(bank, i)
        )
        blk.attn1.set_processor(proc)
    return bank


def reference_readers(unet: nn.Module) -> list[_Reader]:
    """The readers installed on ``unet`` (execution order); empty when none."""
    out = []
    for blk in transformer_blocks(unet):
        p = blk.attn1.processor
        if isinstance(p, _Reader):
            out.append(p)
    return out


def remove_reference_readers(unet: nn.Module) -> None:
    """Back to the stock SDPA processor on every ``attn1`` that holds a reader."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for blk in transformer_blocks(unet):
        if isinstance(blk.attn1.processor, _Reader):
            blk.attn1.set_processor(AttnProcessor2_0())
