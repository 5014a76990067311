"""`facerig evaluate --clip-model DIR`'s CLIP wrapper on a tiny random transformers CLIP folder the test
writes (tokenizer + image processor + model): transformers 5 returns an output object from
get_image_features / get_text_features, which clip_score could not turn into a tensor."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from facerig.engines.sd.base import _bytes_to_unicode

    out = tmp_path_factory.mktemp("clip")
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for t in alphabet + [a + "</w>" for a in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[t] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    transformers.CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"),
                               model_max_length=77).save_pretrained(str(out))
    transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                    crop_size={"height": 32, "width": 32}).save_pretrained(str(out))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                       projection_dim=16)).save_pretrained(str(out))
    return out


def test_clip_score_through_the_local_clip_wrapper(clip_dir):
    from facerig.eval.edit_accuracy import clip_score
    from facerig.eval.runner import _HFClip

    c = _HFClip(str(clip_dir))
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert tuple(c.encode_image(x).shape) == (2, 16)  # the projected features
    assert tuple(c.encode_text(["a smile", "a frown"]).shape) == (2, 16)
    r = clip_score(x, ["a smile", "a frown"], c)
    assert 0 <= r["value"] <= 100 and len(r["per_item"]) == 2
