"""Fit accuracy on real photos: landmark reprojection error (median / 90th percentile, % of the
inter-ocular distance) and photometric error, per photo and summarised. Uses the package photos
(astronaut, grace_hopper) and every portrait under $FACERIG_SHARED/data/portraits when present.

Usage: .venv/bin/python benchmarks/fit_accuracy.py [--model builtin] [--markdown docs/fit-accuracy.md]
The Markdown report has numbers only (no third-party images).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from facerig.errors import FacerigError
    from facerig.fit.api import fit_image
    from facerig.io.assets import shared_path
    from facerig.io.samples import sample_path
    from facerig.morphable import load_face_model

    model = load_face_model(args.model)
    items = [("package/astronaut", sample_path("astronaut")), ("package/grace_hopper", sample_path("grace_hopper"))]
    root = shared_path("data", "portraits")
    if root is not None:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
        items += [(str(p.relative_to(root)), p) for p in files]
    if args.limit:
        items = items[: args.limit]
    rows, failures = [], []
    for name, path in items:
        try:
            r = fit_image(str(path), model)
        except FacerigError as e:
            failures.append((name, str(e)))
            continue
        le = r.report["per_image"][0]
        ph = r.report.get("photometric", {}).get("per_image", [{}])[0]
        rows.append((name, le["median_pct_iod"], le["p90_pct_iod"], ph.get("mae_vertex_albedo_255", np.nan),
                     ph.get("mae_const_albedo_255", np.nan), ph.get("shading_r2", np.nan)))
    med = np.array([r[1] for r in rows])
    p90 = np.array([r[2] for r in rows])
    mae_v = np.array([r[3] for r in rows])
    mae_c = np.array([r[4] for r in rows])
    r2 = np.array([r[5] for r in rows])
    lines = [
        f"# Fit accuracy on real photos ({args.model} model)",
        "",
        f"{len(rows)} photos fitted, {len(failures)} not fitted (listed below).",
        "Landmark error: distance between the fitted model's projected landmarks and MediaPipe's 478 "
        "detections, in % of the inter-ocular (outer eye corner) distance. Photometric error: mean "
        "absolute difference (0-255) over visible skin between the photo and the lambertian render with "
        "the fitted per-vertex albedo, and with one constant skin albedo (lighting only); shading R^2: "
        "share of the skin's luminance variance explained by the fitted SH light with constant albedo.",
        "",
        "The fit also uses MediaPipe's relative depth (since 2026-11-23, `LandmarkFitConfig.depth_weight` 0.3): the 2D reprojection error went up (median 0.50 -> 0.59 % IOD, p90 1.32 -> 1.53) in exchange for poses that match ground truth (true 3D turns of rendered heads: yaw -20/+20 read -19.8/+20.5 instead of -24.1/+21.7; docs/pose-truth.md). The 2D error alone does not tell a good fit: a 2D-only fit explains some of a turn by the shape.",
        "",
        "| statistic over photos | landmark median %IOD | landmark p90 %IOD | photometric MAE (vertex albedo) | photometric MAE (constant albedo) | shading R^2 |",
        "|---|---|---|---|---|---|",
    ]
    for label, fn in (("median", np.nanmedian), ("90th percentile", lambda a: np.nanpercentile(a, 90)), ("max", np.nanmax)):
        lines.append(f"| {label} | {fn(med):.2f} | {fn(p90):.2f} | {fn(mae_v):.1f} | {fn(mae_c):.1f} | {fn(r2):.2f} |")
    lines += ["", "## Per photo", "", "| photo | median %IOD | p90 %IOD | MAE vertex | MAE const | R^2 |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.2f} |")
    if failures:
        lines += ["", "## Not fitted", ""] + [f"- {n}: {e}" for n, e in failures]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
