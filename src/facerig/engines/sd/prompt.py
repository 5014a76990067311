"""The fixed prompt's CLIP text embedding, computed once and cached.

SD engines such as RigFace condition every UNet call on one fixed prompt ("A close up of a
person."): encoding it each step (or each edit) wastes time, so the embedding is cached per
(text encoder instance, prompt, device, dtype). The cache holds the encoder weakly.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from facerig.errors import InvalidInput

__all__ = ["clear_prompt_cache", "encode_prompt"]

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], torch.Tensor]] = weakref.WeakKeyDictionary()


def encode_prompt(text_encoder: Any, tokenizer: Any, prompt: str, *, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(1, L, D)`` last hidden state of ``prompt``, padded to the tokenizer's max length (77 for SD).

    Cached: a second call with the same encoder, prompt, device and dtype returns the same tensor
    without running the encoder. Inference only (no gradient)."""
    if not isinstance(prompt, str):
        raise InvalidInput("prompt", "a string", type(prompt).__name__)
    p = next(text_encoder.parameters())
    dev = torch.device(device) if device is not None else p.device
    dt = dtype if dtype is not None else p.dtype
    key = (prompt, str(dev), str(dt), id(tokenizer))
    per = _CACHE.setdefault(text_encoder, {})
    if key in per:
        return per[key]
    max_len = int(getattr(tokenizer, "model_max_length", 77))
    if max_len > 10_000:  # tokenizers without a configured length
        max_len = int(text_encoder.config.max_position_embeddings)
    ids = tokenizer(prompt, padding="max_length", max_length=max_len, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        out = text_encoder(ids.to(p.device)).last_hidden_state
    emb = out.to(device=dev, dtype=dt)
    per[key] = emb
    return emb


def clear_prompt_cache() -> None:
    _CACHE.clear()
