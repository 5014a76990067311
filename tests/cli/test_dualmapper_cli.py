"""`facerig train dualmapper` on a folder with one package photo (a few steps, offline objective),
then `facerig edit --engine dualmapper --mapper RUN`; and the one-line messages of bad calls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")


def test_train_then_edit(tmp_path, astronaut, run_cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "astronaut.png")
    run = tmp_path / "raise"
    rc, so, se = run_cli(["train", "dualmapper", "--data", photos, "--text", "a person who is raising brow",
                       "--max-steps", "3", "-o", run])
    assert rc == 0, se
    assert "trained ->" in so
    log = json.loads((run / "train_log.json").read_text())
    assert log["target"] == "raise_brows" and log["objective"].startswith("offline") and log["hold_others"] == 30
    assert len(log["history"]["total"]) == 3
    assert (run / "losses.png").is_file() and (run / "preview.png").is_file()
    out = tmp_path / "out.png"
    rc, so, se = run_cli(["edit", photos / "astronaut.png", "--engine", "dualmapper", "--mapper", run, "-o", out])
    assert rc == 0, se
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape == astronaut.shape


@pytest.mark.parametrize("args, needle", [
    (["edit", "PHOTO", "--mapper", "m"], "--mapper: expected --engine dualmapper"),
    (["edit", "PHOTO", "--engine", "dualmapper"], "--mapper: expected a mapper folder"),
    (["edit", "PHOTO", "--engine", "dualmapper", "--mapper", "nowhere"], "--mapper: expected a mapper folder"),
    (["train", "dualmapper", "-o", "OUT"], "--data: expected a folder of portraits"),
    (["train", "dualmapper", "--data", "PHOTO", "-o", "OUT"], "--text: expected a description"),
])
def test_messages(args, needle, tmp_path, astronaut, run_cli):
    photo = tmp_path / "a.png"
    Image.fromarray(astronaut).save(photo)
    args = [str(photo) if a == "PHOTO" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    rc, so, se = run_cli(args)
    assert rc != 0
    assert needle in se and len(se.strip().splitlines()) == 1, se
