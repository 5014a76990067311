"""`facerig train dualmapper`'s glue: which coefficients a mapper may move with the offline objective,
the target from the text, the photo list."""

from __future__ import annotations

import pytest

from facerig.errors import InvalidInput


def test_free_coefficients_names_and_antagonists():
    from facerig.morphable import load_face_model
    from facerig.train.dualmapper import free_coefficients

    names = load_face_model("builtin").expression_names
    named, anta = free_coefficients("close_eyes", names)
    assert named == {"eyeBlink_L", "eyeBlink_R"} and anta == {"eyeWide_L", "eyeWide_R"}
    named, anta = free_coefficients("sad", names)
    assert {"mouthFrown_L", "browInnerUp"} <= named and {"mouthSmile_L", "mouthSmile_R"} <= anta
    assert "jawOpen" not in named | anta  # held: the probe read a dropped jaw as raised brows
    named, anta = free_coefficients("raise_brows", names)
    assert "browDown_L" in anta and "jawOpen" not in named | anta


def test_target_from_text_and_photo_list(tmp_path, astronaut):
    from PIL import Image

    from facerig.train.dualmapper import list_photos, target_for_text

    assert target_for_text("a person who is raising brow")[0] == "raise_brows"
    assert target_for_text("whatever", target="close-eyes")[0] == "close_eyes"
    with pytest.raises(InvalidInput, match="--target"):
        target_for_text("", target="nope")
    with pytest.raises(InvalidInput, match="--text"):
        target_for_text("  ")
    (tmp_path / "a").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("not a photo")
    assert [p.name for p in list_photos(tmp_path)] == ["x.png"]
    with pytest.raises(InvalidInput, match="--data"):
        list_photos(tmp_path / "missing")


def test_bad_options_are_reported_before_the_fits(tmp_path, astronaut, monkeypatch):
    """A bad ``texture_weight`` or objective option fails before minutes of fitting the photos."""
    from PIL import Image

    import facerig.train.dualmapper as glue

    Image.fromarray(astronaut).save(tmp_path / "x.png")

    def no_fit(*a, **k):
        raise AssertionError("fitted before the options were checked")

    monkeypatch.setattr(glue, "_fit_all", no_fit)
    with pytest.raises(InvalidInput, match="texture_weight"):
        glue.train_dualmapper(tmp_path, tmp_path / "run", text="smile", texture_weight=-1.0, progress=False)
    with pytest.raises(InvalidInput, match="compare"):
        glue.train_dualmapper(tmp_path, tmp_path / "run", text="smile", objective_options={"compare": "x"},
                              progress=False)
