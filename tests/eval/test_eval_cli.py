"""`facerig evaluate` / `facerig benchmark`: one-line errors and a small evaluate run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facerig.cli import main
from facerig.io.image import save_image


def _one_line_error(capsys, rc, needle, code=2):
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("facerig:") and needle in lines[0], err


@pytest.mark.parametrize("args, needle", [
    (["benchmark", "edti", "--data", "."], "did you mean 'edit'"),
    (["benchmark", "edit", "--data", ".", "--engines", "wrap"], "did you mean 'warp'"),
    (["benchmark", "edit", "--data", "/nonexistent/photos"], "--data"),
    (["benchmark", "edit", "--data", ".", "--metrics", "speed"], "--metrics"),
    (["evaluate", "/nonexistent/run"], "DATA"),
    (["evaluate", ".", "--lpips-net", "squeeze"], "--lpips-net"),
])
def test_cli_one_line_errors(capsys, args, needle):
    _one_line_error(capsys, main(args), needle)


def test_cli_benchmark_missing_data_option(capsys):
    rc = main(["benchmark", "edit"])
    err = capsys.readouterr().err
    assert rc == 2 and "--data" in err and len(err.strip().splitlines()) == 1


def test_cli_benchmark_unknown_case(tmp_path, capsys, astronaut):
    save_image(tmp_path / "a.png", astronaut)
    _one_line_error(capsys, main(["benchmark", "edit", "--data", str(tmp_path / "a.png"), "--cases", "frown@9",
                                  "-o", str(tmp_path / "run"), "--no-progress"]), "--cases")


def test_cli_evaluate_folder_layout(tmp_path, capsys, astronaut):
    """source/ + output/ folders; an output without a face is reported as a failure, not skipped."""
    root = tmp_path / "data"
    img = np.ascontiguousarray(astronaut[:320, 96:416])
    save_image(root / "source" / "astro.png", img)
    m = cv2.getRotationMatrix2D((160, 160), 3, 1.0)
    save_image(root / "output" / "astro__roll.png", cv2.warpAffine(img, m, (320, 320), borderMode=cv2.BORDER_REFLECT))
    save_image(root / "output" / "astro__blank.png", np.full_like(img, 128))
    rc = main(["evaluate", str(root), "-o", str(tmp_path / "rep"), "--metrics", "identity,quality", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "evaluated 2 samples (1 with failures)" in out
    d = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert d["protocol"]["name"] == "evaluate" and d["num_samples"] == 2 and d["num_failed"] == 1
    by = {s["id"]: s for s in d["samples"]}
    assert by["astro__roll"]["status"] == "ok" and by["astro__roll"]["metrics"]["id_distance"] < 0.6
    assert "no face in output (dlib)" in by["astro__blank"]["failures"]
    assert (tmp_path / "rep" / "report.html").is_file() and (tmp_path / "rep" / "report.md").is_file()
    # re-running reuses every cached sample
    assert main(["evaluate", str(root), "-o", str(tmp_path / "rep"), "--metrics", "identity,quality",
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["run"]["counts"] == {"evaluated": 0, "cached": 2}
