#!/usr/bin/env bash
# Quickstart: set up, then run facerig's main job on a bundled public-domain portrait
# (scikit-image's "astronaut", NASA, public domain). Outputs go to outputs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-outputs/quickstart}
.venv/bin/facerig fit --demo astronaut -o "$OUT/fit"
.venv/bin/facerig render "$OUT/fit/params.json" -o "$OUT/render"
echo "facerig quickstart: outputs in $OUT/ (fit/preview.png shows the fitted mesh over the photo)"
