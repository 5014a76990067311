#!/usr/bin/env bash
# Set up the environment and run the test suite (what CI runs). Extra args go to pytest.
# Heavy checks are skipped unless enabled: FACERIG_SLOW=1, FACERIG_GPU=1, FACERIG_FLAME=/path.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "no tests collected"; exit 1; fi
exit $rc
