"""Reports: JSON schema fields, Markdown, self-contained HTML (no external URL), plots, estimators named."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from facerig.eval.report import REPORT_SCHEMA, build_report, write_reports
from facerig.eval.runner import EvalConfig, estimators_used, summarize
from facerig.io.image import save_image


def _records(tmp_path):
    """Synthetic per-sample records as the runner writes them (two sources, three edit types, one failure)."""
    rng = np.random.default_rng(0)
    src = []
    for k in range(2):
        p = tmp_path / f"src{k}.png"
        save_image(p, (rng.random((64, 64, 3)) * 255).astype(np.uint8))
        src.append({"record": "source", "source": str(p), "dlib_found": True,
                    "dlib_embedding": (rng.normal(size=128) * 0.1).tolist()})
    recs = []
    cases = [("expression", "smile@1.0", "aed", 0.1), ("pose", "yaw+10", "apd_deg", 10.0), ("light", "light=left", "ald", 0.3)]
    for k, s in enumerate(src):
        for et, case, _key, strength in cases:
            out = tmp_path / f"out{k}_{et}.png"
            save_image(out, (rng.random((64, 64, 3)) * 255).astype(np.uint8))
            emb = np.asarray(s["dlib_embedding"]) + rng.normal(size=128) * 0.01
            m = {"id_distance": float(rng.uniform(0.1, 0.5)), "same_person": True, "csim_dlib": 0.95, "ssim": 0.9,
                 "psnr": 30.0, "ssim_bg": 0.99, "psnr_bg": 45.0, "apd_deg": 2.0, "aed": 0.05, "ald": 0.1,
                 "pose_rmse_deg": 2.5, "exp_rmse": 0.08, "light_rmse": 0.12}
            recs.append({"record": "sample", "id": f"warp/src{k}/{case}", "source": s["source"], "output": str(out),
                         "engine": "warp", "edit_type": et, "case": case, "status": "ok", "failures": [],
                         "metrics": m, "dlib_embedding": emb.tolist(),
                         "strength": {"value": strength * (1 + k)}})
    recs.append({"record": "sample", "id": "warp/src9/yaw+10", "source": str(tmp_path / "src9.png"), "output": None,
                 "engine": "warp", "edit_type": "pose", "case": "yaw+10", "status": "failed",
                 "failures": ["generation: no face in source (fit)"], "metrics": {}})
    return recs, src


@pytest.fixture()
def report_dir(tmp_path):
    recs, src = _records(tmp_path)
    cfg = EvalConfig()
    summary = summarize(recs, src, protocol="edit", config=cfg)
    rep = build_report("edit", summary, recs, cfg, run_info={"engines": ["warp"], "out": str(tmp_path)})
    out = tmp_path / "report"
    write_reports(rep, recs, out, thumbnails=True)
    return out, rep, recs


def test_report_files_and_json_schema(report_dir):
    out, rep, _ = report_dir
    for f in ("report.json", "report.md", "report.html", "plots/error_vs_strength.png", "plots/id_distance_hist.png"):
        assert (out / f).is_file(), f
    d = json.loads((out / "report.json").read_text())
    assert d["schema"] == REPORT_SCHEMA
    for key in ("protocol", "columns", "metrics", "estimators", "table", "cases", "failures", "num_samples",
                "num_failed", "not_computed", "samples", "plots", "versions", "config", "run"):
        assert key in d, key
    assert d["protocol"]["name"] == "edit" and d["protocol"]["reference"].startswith("RigFace")
    assert d["num_samples"] == 7 and d["num_failed"] == 1
    assert d["failures"] == {"generation: no face in source (fit)": 1}
    pose = next(r for r in d["table"] if r["edit_type"] == "pose")
    assert pose["n"] == 3 and pose["num_failed"] == 1 and pose["apd_deg_n"] == 2
    assert pose["reid"] == pytest.approx(2 / 3)  # the failed sample counts as a wrong re-identification
    assert {r["edit_type"] for r in d["table"]} == {"expression", "pose", "light", "all"}
    for col in d["columns"]:
        if col not in ("n", "num_failed"):
            assert d["metrics"][col]["estimator"], col
    assert {nc["metric"] for nc in d["not_computed"]} >= {"lpips", "fid", "kid"}
    assert all(not str(s.get("source", "")).startswith("/") for s in d["samples"]), "absolute paths in the report"


def test_html_is_self_contained_and_names_estimators(report_dir):
    out, rep, _ = report_dir
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page), "external URL in report.html"
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert page.count("data:image/png;base64,") == 2 and "data:image/jpeg;base64," in page  # plots + thumbnails
    assert not re.search(r'<link|<script|href="(?!#)', page)
    md = (out / "report.md").read_text()
    for text in (md, page):
        for eid in ("dlib", "ssim", "psnr", "refit", "lpips", "inception"):
            assert rep["estimators"][eid].split(";")[0].split("(")[0].strip() in text.replace("&#x27;", "'"), eid
    assert "![error_vs_strength](plots/error_vs_strength.png)" in md


def test_thumbnails_are_off_by_default(tmp_path):
    recs, src = _records(tmp_path)
    cfg = EvalConfig()
    rep = build_report("edit", summarize(recs, src, config=cfg), recs, cfg)
    write_reports(rep, recs, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "data:image/jpeg" not in page and "Worst and best" not in page
    assert json.loads((tmp_path / "r" / "report.json").read_text())["thumbnails"] is False


def test_estimators_name_user_weights():
    est = estimators_used(EvalConfig(lpips_weights="/x/alexnet.pth", lpips_heads="/x/alex.pth",
                                     inception_weights="/x/pt_inception.pth"))
    assert "alexnet.pth" in est["lpips"] and "pt_inception.pth" in est["inception"]
    assert "not computed" in estimators_used(EvalConfig())["lpips"]
