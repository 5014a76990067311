"""Protocols and runners of `facerig benchmark` / `facerig evaluate`: the edit protocol with the real
warp engine on the astronaut, resume, determinism, failures counted, sample loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerig.engines.base import Engine
from facerig.errors import InvalidInput, NoFaceFound
from facerig.eval.protocols import PROTOCOLS, get_protocol
from facerig.eval.runner import (
    EvalConfig,
    Evaluator,
    Sample,
    load_samples,
    run_benchmark,
    run_evaluation,
    select_cases,
)
from facerig.io.image import save_image
from facerig.io.samples import sample_path


class StubEngine(Engine):
    """Brightens the image a little; counts its calls."""

    name = "stub"
    requires_weights = False
    description = "test stub"
    calls = 0

    def prepare(self, source_image, source_params, model, **kw):
        return source_image

    def render_frame(self, state, target_params, *, generator=None, **kw):
        type(self).calls += 1
        return np.clip(state.astype(np.int16) + 6, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astro_params(astronaut):
    from facerig.fit.api import fit_image

    return fit_image(astronaut).params


@pytest.fixture()
def stub_fit(astro_params):
    """A fitter that returns the astronaut's fitted params for any image with texture (no face
    otherwise): cheap, so runner mechanics are tested without fitting every output."""

    def fit(img):
        if np.asarray(img).std() < 2:
            raise NoFaceFound("image", "flat image")
        return astro_params

    fit.estimator = "stub fit (astronaut params)"
    return fit


def test_protocol_registry():
    assert set(PROTOCOLS) == {"edit", "reenact", "personalize", "text"}
    edit = get_protocol("edit")
    assert {c.edit_type for c in edit.cases} == {"expression", "pose", "light"}
    for col in ("id_distance", "reid", "ssim", "apd_deg", "aed", "ald"):
        assert col in edit.columns
    assert {"l1", "psnr", "ssim", "id_distance", "apd_deg", "aed", "fvd"} <= set(get_protocol("reenact").columns)
    assert get_protocol("personalize").needs == "personalization"
    with pytest.raises(InvalidInput, match="did you mean 'edit'"):
        get_protocol("edti")
    sel = select_cases(edit, ["pose", "smile@1.0"])
    assert [c.name for c in sel.cases] == ["smile@1.0", "yaw+10", "yaw-20", "pitch+10"]
    with pytest.raises(InvalidInput, match="--cases"):
        select_cases(edit, ["nope"])


def test_edit_protocol_real_warp_engine(tmp_path):
    """One real edit of the astronaut with the warp engine, evaluated with every default estimator."""
    rep = run_benchmark("edit", [sample_path("astronaut")], ["warp"], tmp_path, cases=["yaw+10"], progress=False)
    assert rep["num_samples"] == 1 and rep["num_failed"] == 0
    row = next(r for r in rep["table"] if r["edit_type"] == "pose")
    assert 0 <= row["id_distance"] < 0.6 and row["same_person_rate"] == 1.0 and row["reid"] == 1.0
    assert 0.8 < row["ssim"] <= 1 and row["psnr"] > 20 and row["ssim_bg"] > row["ssim"]
    assert 0 <= row["apd_deg"] < 8 and row["aed"] is not None and row["ald"] is not None
    s = rep["samples"][0]
    assert s["strength"]["value"] == pytest.approx(10, abs=0.5)  # requested yaw change, geodesic degrees
    assert (tmp_path / "outputs" / "warp" / "astronaut__yaw+10.png").is_file()
    assert (tmp_path / "params" / "warp__astronaut__yaw+10.json").is_file()
    for f in ("manifest.json", "samples.jsonl", "sources.jsonl", "generated.jsonl", "report.json", "report.md",
              "report.html"):
        assert (tmp_path / f).is_file(), f
    # the run folder evaluates again as `facerig evaluate RUN` input (all cached)
    samples, info = load_samples(tmp_path)
    assert info["protocol"] == "edit" and [x.id for x in samples] == ["warp/astronaut/yaw+10"]


def test_resume_skips_done_samples_and_is_deterministic(tmp_path, astronaut, stub_fit):
    photo = tmp_path / "astro.png"
    save_image(photo, astronaut[::2, ::2])  # small: the runner's mechanics, not the metrics, are tested here
    cfg = EvalConfig(identity=False, refit=True)
    kw = dict(cases=["smile@1.0", "light=left"], progress=False)
    StubEngine.calls = 0
    rep1 = run_benchmark("edit", [photo], [StubEngine()], tmp_path / "run", config=cfg,
                         evaluator=Evaluator(cfg, fit_fn=stub_fit), **kw)
    assert StubEngine.calls == 2 and rep1["run"]["counts"] == {"evaluated": 2, "cached": 0}
    lines1 = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(lines1) == 2 and all(json.loads(ln)["status"] == "ok" for ln in lines1)
    rep2 = run_benchmark("edit", [photo], [StubEngine()], tmp_path / "run", config=cfg,
                         evaluator=Evaluator(cfg, fit_fn=stub_fit), **kw)
    assert StubEngine.calls == 2, "generation was not resumed"
    assert rep2["run"]["counts"] == {"evaluated": 0, "cached": 2}
    assert rep2["table"] == rep1["table"]
    # an interrupted run: a cut last line is recomputed, the first sample is not
    (tmp_path / "run" / "samples.jsonl").write_text(lines1[0] + "\n" + lines1[1][:40])
    rep3 = run_benchmark("edit", [photo], [StubEngine()], tmp_path / "run", config=cfg,
                         evaluator=Evaluator(cfg, fit_fn=stub_fit), **kw)
    assert rep3["run"]["counts"] == {"evaluated": 1, "cached": 1} and rep3["table"] == rep1["table"]
    # a fresh folder gives the same numbers (sorted inputs, fixed seeds)
    rep4 = run_benchmark("edit", [photo], [StubEngine()], tmp_path / "run2", config=cfg,
                         evaluator=Evaluator(cfg, fit_fn=stub_fit), **kw)
    assert rep4["table"] == rep1["table"]


def test_failures_are_counted_not_skipped(tmp_path, astronaut, stub_fit):
    data = tmp_path / "photos"
    save_image(data / "a_astro.png", astronaut[::2, ::2])
    save_image(data / "b_flat.png", np.full((128, 128, 3), 90, np.uint8))
    cfg = EvalConfig(image_quality=False)
    rep = run_benchmark("edit", [data], [StubEngine()], tmp_path / "run", config=cfg, cases=["yaw+10"],
                        evaluator=Evaluator(cfg, fit_fn=stub_fit), progress=False)
    assert rep["num_samples"] == 2 and rep["num_failed"] == 1
    row = rep["table"][0]
    assert row["n"] == 2 and row["num_failed"] == 1 and row["id_distance_n"] == 1
    assert any("no face in source" in k for k in rep["failures"])
    bad = next(s for s in rep["samples"] if "b_flat" in s["id"])
    assert bad["status"] == "failed" and bad["failures"]


def test_unsupported_protocol_engine_is_reported(tmp_path):
    person = tmp_path / "people" / "p1"
    for i in range(3):
        save_image(person / f"{i}.png", np.full((64, 64, 3), 10 * i, np.uint8))
    rep = run_benchmark("personalize", [tmp_path / "people"], ["warp"], tmp_path / "run", progress=False)
    assert rep["num_samples"] == 0
    assert rep["unsupported_engines"][0]["engine"] == "warp"
    assert "does not support" in (tmp_path / "run" / "report.md").read_text()


def test_load_samples_layouts(tmp_path, astronaut):
    # folder layout
    root = tmp_path / "layout"
    save_image(root / "source" / "astro.png", astronaut)
    save_image(root / "output" / "astro__yaw+10.png", astronaut)
    save_image(root / "output" / "astro__smile.png", astronaut)
    samples, _ = load_samples(root)
    assert [s.id for s in samples] == ["astro__smile", "astro__yaw+10"]
    assert [s.edit_type for s in samples] == ["expression", "pose"]
    assert samples[0].source.endswith("astro.png")
    # CSV and JSON manifests, paths relative to the manifest
    (tmp_path / "m.csv").write_text("id,source,output,edit_type\nx,layout/source/astro.png,layout/output/astro__smile.png,"
                                    "expression\n")
    s = load_samples(tmp_path / "m.csv")[0][0]
    assert s.id == "x" and s.output == str((root / "output" / "astro__smile.png").resolve())
    (tmp_path / "m.json").write_text(json.dumps({"samples": [{"source": "layout/source/astro.png",
                                                              "output": "layout/output/astro__smile.png"}]}))
    assert load_samples(tmp_path / "m.json")[0][0].id == "astro__smile"
    (tmp_path / "dup.json").write_text(json.dumps([{"id": "a", "source": "s.png"}, {"id": "a", "source": "t.png"}]))
    with pytest.raises(InvalidInput, match="unique"):
        load_samples(tmp_path / "dup.json")
    with pytest.raises(InvalidInput, match="DATA"):
        load_samples(tmp_path / "missing")
    with pytest.raises(InvalidInput, match="fields"):
        Sample.from_dict({"source": "a.png", "colour": 1})


def test_missing_output_is_a_failure(tmp_path, astronaut):
    save_image(tmp_path / "s.png", astronaut)
    cfg = EvalConfig(identity=False, image_quality=False, refit=False)
    recs, _, counts = run_evaluation([Sample(id="a", source=str(tmp_path / "s.png"), output=str(tmp_path / "none.png"))],
                                     tmp_path / "run", cfg, progress=False)
    assert recs[0]["status"] == "failed" and recs[0]["failures"] == ["output missing"]
