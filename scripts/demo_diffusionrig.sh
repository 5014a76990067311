#!/usr/bin/env bash
# Issue 5: CPU demonstration run of the DiffusionRig engine (docs/diffusionrig-demo.md).
# Everything is written under $DEMO (default /tmp/dr_demo), never into the repository: the
# aligned crops, sample grids and edited frames show real people.
#   bash scripts/demo_diffusionrig.sh            # all steps
#   STAGE1_STEPS=300 STAGE2_STEPS=100 bash scripts/demo_diffusionrig.sh   # a quicker, weaker run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FR=${FR:-.venv/bin/facerig}
DEMO=${DEMO:-/tmp/dr_demo}
SH=${FACERIG_SHARED:-$($PY -c "from facerig.io.assets import shared_dir; print(shared_dir())")}/data
STAGE1_STEPS=${STAGE1_STEPS:-1500}
STAGE2_STEPS=${STAGE2_STEPS:-450}
mkdir -p "$DEMO"
# One torch thread: on the shared 2-core machine (other jobs running) two threads made a UNet
# step ~15x slower (spin-waiting), one thread measured 0.5 s vs 8-10 s per fwd+bwd of batch 8.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

if [ -z "${SKIP_PREPARE:-}" ]; then  # SKIP_PREPARE=1: the shards of an earlier run are in $DEMO
# 1a. stage-1 data: 64 px shards with stored buffers, every 6th frame of the liveportrait, misc and
#     MEAD M030 clips (MEAD W009 is kept out: it is the stage-2 person).
$FR prepare $(ls "$SH"/videos/liveportrait/*.mp4 "$SH"/videos/misc/*.mp4 "$SH"/videos/mead/M030*.mp4) \
    -o "$DEMO/shards_videos" --size 64 --buffers --frame-stride 6 --shard-size 300 --workers 2 --no-progress
# 1b. the shared portraits (one identity per photo)
$FR prepare "$SH/portraits" -o "$DEMO/shards_portraits" --size 64 --buffers --shard-size 100 --workers 2 --no-progress
# 1c. one training folder: links to both sets of shards (ShardDataset globs shard-*.tar) and the
#     videos' index.json (same face model fingerprint)
mkdir -p "$DEMO/shards_stage1"
for f in "$DEMO"/shards_videos/shard-*.tar; do ln -sf "$f" "$DEMO/shards_stage1/$(basename "$f")"; done
for f in "$DEMO"/shards_portraits/shard-*.tar; do b=$(basename "$f" .tar); ln -sf "$f" "$DEMO/shards_stage1/shard-1${b#shard-}.tar"; done
cp "$DEMO/shards_videos/index.json" "$DEMO/shards_stage1/index.json"

# 1d. stage-2 album: every 5th frame of the seven W009 clips other than "neutral" as PNGs in one
#     folder (= one identity); two frames of W009_front_neutral are held out for the edits.
$PY - "$SH/videos/mead" "$DEMO" <<'PYEOF'
import cv2, glob, os, sys
src, demo = sys.argv[1], sys.argv[2]
os.makedirs(f"{demo}/w009_album/W009", exist_ok=True); os.makedirs(f"{demo}/heldout", exist_ok=True)
for f in sorted(glob.glob(src + "/W009_*.mp4")):
    c = cv2.VideoCapture(f); i = 0; base = os.path.basename(f)[:-4]
    while True:
        ok, fr = c.read()
        if not ok:
            break
        if "neutral" in base:
            if i in (30, 60):
                cv2.imwrite(f"{demo}/heldout/{base}_f{i:04d}.png", fr)
        elif i % 5 == 0:
            cv2.imwrite(f"{demo}/w009_album/W009/{base}_f{i:04d}.png", fr)
        i += 1
PYEOF
$FR prepare "$DEMO/w009_album" -o "$DEMO/shards_w009" --album-by-folder --size 64 --buffers --workers 1 --no-progress
fi

# 2. stage 1 (generic prior), reduced-width recipe
$FR train diffusionrig --config configs/diffusionrig/demo_cpu_stage1.yaml --data "$DEMO/shards_stage1" \
    -o "$DEMO/run_stage1" --max-steps "$STAGE1_STEPS"

# 3. stage 2 (personalisation on W009's frames; encoder frozen)
$FR personalize diffusionrig --album "$DEMO/shards_w009" --base "$DEMO/run_stage1" -o "$DEMO/run_stage2" \
    --config configs/diffusionrig/demo_cpu_stage2.yaml --max-steps "$STAGE2_STEPS"

# 4. edits of the two held-out frames + re-fitting accuracy (diffusionrig vs warp), sample grids;
#    first with the stage-1 model, then with the personalised one
$PY benchmarks/demo_refit.py --weights "$DEMO/run_stage1/final/pipeline" --frames "$DEMO"/heldout/*.png \
    --out "$DEMO/refit2f_s1.json" --images "$DEMO/images2f_s1" --grid-shards "$DEMO/shards_videos"
$PY benchmarks/demo_refit.py --weights "$DEMO/run_stage2/final/pipeline" --frames "$DEMO"/heldout/*.png \
    --out "$DEMO/refit2f.json" --images "$DEMO/images2f" --grid-shards "$DEMO/shards_w009"

# 5. loss curves -> docs/images/diffusionrig_demo_loss.png
$PY benchmarks/demo_refit.py --plot-runs "$DEMO/run_stage1" "$DEMO/run_stage2" \
    --plot-out docs/images/diffusionrig_demo_loss.png
