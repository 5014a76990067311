"""`facerig evaluate --clip-model DIR`'s CLIP wrapper on a tiny random transformers CLIP folder the test
writes (tokenizer + image processor + model): transformers 5 returns an output object from
get_image_features / get_text_features, which clip_score could not turn into a tensor."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from facerig.engines.sd.base import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_score_through_the_local_clip_wrapper(clip_dir):
    from facerig.eval.edit_accuracy import clip_score
    from facerig.eval.runner import _HFClip

    c = _HFClip(str(clip_dir))
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    assert tuple(c.encode_image(x).shape) == (2, 16)  # the projected features
    assert tuple(c.encode_text(["a smile", "a frown"]).shape) == (2, 16)
    r = clip_score(x, ["a smile", "a frown"], c)
    assert 0 <= r["value"] <= 100 and len(r["per_item"]) == 2
