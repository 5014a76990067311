"""The personalize protocol with a DiffusionRig engine: tiny random weights written here, marked as
personalised by a ``personal.json`` (what `facerig personalize diffusionrig` stores), a tiny album of
package photos. Quality is irrelevant; the test checks that the protocol runs end to end without
training, produces its columns and reports the engines it could not run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facerig.cli import main
from facerig.errors import InvalidInput, NoFaceFound
from facerig.eval.protocols import get_protocol
from facerig.eval.runner import (
    EvalConfig,
    Evaluator,
    make_engine,
    parse_engine_spec,
    personal_info,
    run_benchmark,
    split_album,
)
from facerig.io.image import save_image


def _write_pipeline(path, personal: dict | None) -> None:  # noqa: ANN001
    from facerig.engines.diffusionrig import (
        TINY_UNET_CONFIG,
        DiffusionRigPipeline,
        DiffusionRigUNet,
        GlobalEncoder,
    )
    from facerig.morphable import load_face_model

    torch.manual_seed(0)
    fm = load_face_model("builtin")
    cfg = dict(TINY_UNET_CONFIG, face_model=fm.fingerprint())
    DiffusionRigPipeline(DiffusionRigUNet(**cfg), GlobalEncoder(latent_dim=cfg.get("latent_dim", 64))).save_pretrained(path)
    if personal is not None:
        personal = {"identity": [0.0] * fm.n_identity, "face_model": fm.fingerprint(), **personal}
        (path / "personal.json").write_text(json.dumps(personal))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("dr")
    _write_pipeline(root / "personal" / "final" / "pipeline", {"album": str(root / "album" / "P1"), "num_photos": 2})
    _write_pipeline(root / "base", None)
    return root / "personal", root / "base"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory, astronaut):  # noqa: ANN001
    """One person: two album photos (astronaut, mirrored) and one held-out photo (a 3/4 crop)."""
    root = tmp_path_factory.mktemp("people")
    p = root / "P1"
    save_image(p / "album" / "a.png", astronaut[::2, ::2])
    save_image(p / "album" / "b.png", np.ascontiguousarray(astronaut[::2, ::-2]))
    save_image(p / "heldout" / "h.png", astronaut[:384, 64:448])
    return root


def test_engine_specs_and_album_split(weights, people) -> None:  # noqa: ANN001
    personal, base = weights
    assert parse_engine_spec("warp") == ("warp", {})
    assert parse_engine_spec(f"diffusionrig:weights={personal}:steps=2:eta=0.5") == \
        ("diffusionrig", {"weights": str(personal), "steps": 2, "eta": 0.5})
    with pytest.raises(InvalidInput, match="KEY=VALUE"):
        parse_engine_spec("diffusionrig:steps")
    eng = make_engine(f"diffusionrig:weights={personal}:steps=2", only=False)
    assert eng.steps == 2 and personal_info(eng)["num_photos"] == 2
    assert personal_info(make_engine("diffusionrig", str(base))) is None
    # a global --weights goes to the engines that need weights, not to the training-free one
    assert make_engine("warp", str(base), only=False).weights is None
    with pytest.raises(InvalidInput, match="weights"):
        make_engine("diffusionrig", None)
    album, held = split_album(people / "P1")
    assert [p.name for p in album] == ["a.png", "b.png"] and [p.name for p in held] == ["h.png"]


def test_personalize_cli_with_personalised_diffusionrig(weights, people, tmp_path) -> None:  # noqa: ANN001
    personal, _ = weights
    run = tmp_path / "run"
    assert main(["benchmark", "personalize", "--data", str(people), "-o", str(run), "--no-progress",
                 "--engines", f"diffusionrig:weights={personal}:steps=2,warp", "--cases", "smile@1.0"]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["num_samples"] == 1 and rep["samples"][0]["engine"] == "diffusionrig"
    assert (run / "outputs" / "diffusionrig" / "P1_h__smile@1.0.png").is_file()
    assert not (personal / "checkpoints").exists() and not (run / "checkpoints").exists()  # nothing trained
    how = rep["run"]["personalization"]["diffusionrig"]
    assert how["mode"].startswith("pre-personalised") and how["persons"] == ["P1"] and how["num_photos"] == 2
    assert [u["engine"] for u in rep["unsupported_engines"]] == ["warp"]
    md = (run / "report.md").read_text()
    assert "**Personalisation:** diffusionrig: pre-personalised weights" in md and "training-free" in md
    (row,) = rep["table"]  # one edit type: no "all" row
    assert row["engine"] == "diffusionrig" and row["edit_type"] == "expression" and row["n"] == 1
    assert set(rep["columns"]) <= set(get_protocol("personalize").columns)
    assert "data:image/png" not in (run / "report.html").read_text().split("<h2>Plots</h2>")[0]  # no thumbnails


def test_personalize_runner_columns_and_refusals(weights, people, tmp_path, astronaut) -> None:  # noqa: ANN001
    from facerig.fit.api import fit_image
    from facerig.io.image import load_image

    personal, base = weights
    held = fit_image(load_image(people / "P1" / "heldout" / "h.png")).params

    def stub_fit(img):  # noqa: ANN001, ANN202 - any textured image "has" the held-out photo's face
        if np.asarray(img).std() < 2:
            raise NoFaceFound("image", "flat")
        return held

    stub_fit.estimator = "stub fit"
    cfg = EvalConfig(identity=False, image_quality=False)
    ev = Evaluator(cfg, fit_fn=stub_fit)
    eng = make_engine(f"diffusionrig:weights={personal}:steps=2", only=False)
    rep = run_benchmark("personalize", [people], [eng],
                        tmp_path / "run", config=cfg, evaluator=ev, progress=False)
    assert rep["num_samples"] == 3 and rep["num_failed"] == 0, rep["failures"]
    assert rep["columns"] == ["n", "num_failed", "pose_rmse_deg", "exp_rmse", "light_rmse"]
    by = {r["edit_type"]: r for r in rep["table"]}
    assert set(by) == {"expression", "pose", "light", "all"}
    for r in by.values():
        assert all(r[c] is not None and np.isfinite(r[c]) for c in ("pose_rmse_deg", "exp_rmse", "light_rmse"))
    # base (not personalised) weights: not run, with the reason
    rep2 = run_benchmark("personalize", [people], [make_engine("diffusionrig", str(base))], tmp_path / "run2",
                         config=cfg, evaluator=ev, progress=False)
    assert rep2["num_samples"] == 0 and "not personalised" in rep2["unsupported_engines"][0]["reason"]
    # personalised weights belong to one person: two person folders, none named like the album -> refused
    two = tmp_path / "two"
    for name in ("X1", "X2"):
        for i in range(3):
            save_image(two / name / f"{i}.png", astronaut[::4, ::4])
    with pytest.raises(InvalidInput, match="one person folder"):
        run_benchmark("personalize", [two], [eng], tmp_path / "run3", config=cfg, evaluator=ev, progress=False)
