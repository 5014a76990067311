#!/usr/bin/env bash
# Quickstart: set up, then run facerig's main jobs on bundled public-domain portraits
# (scikit-image's "astronaut" and matplotlib's "grace_hopper"; both public domain).
# Everything runs offline on the CPU. Outputs go to outputs/quickstart/ (or the folder given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-outputs/quickstart}
mkdir -p "$OUT"
PY=.venv/bin/python
FR=.venv/bin/facerig
ASTRONAUT=$($PY -c "from facerig.io.samples import sample_path; print(sample_path('astronaut'))")
HOPPER=$($PY -c "from facerig.io.samples import sample_path; print(sample_path('grace_hopper'))")

# 1. fit the 3D face model and render its physical buffers
$FR fit "$ASTRONAUT" -o "$OUT/fit"
$FR render "$OUT/fit/params.json" -o "$OUT/render"
# 2. edit expression, head pose and lighting (warp engine, no weights needed)
$FR edit "$ASTRONAUT" --preset surprised --preview -o "$OUT/edit_surprised.png"
$FR edit "$ASTRONAUT" --yaw 12 --light left --preview -o "$OUT/edit_pose_light.png"
# 3. animate a portrait from a driving clip that facerig renders itself from the astronaut
$PY scripts/make_demo_clip.py "$OUT/driving.mp4"
$FR reenact "$HOPPER" "$OUT/driving.mp4" --preview -o "$OUT/reenact.mp4"

cat <<MSG
facerig quickstart outputs in $OUT/:
  fit/preview.png            fitted mesh over the photo beside its buffers (params.json, report.json, buffers/)
  render/                    buffers rendered again from params.json
  edit_surprised.png         expression edit (+ *_preview.png: source, buffers before/after, result)
  edit_pose_light.png        head turned 12 degrees, light from the left
  reenact.mp4                grace_hopper animated by driving.mp4 (+ preview grid video)
MSG
