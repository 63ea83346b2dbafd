#!/usr/bin/env bash
# Plan 1B preprocessing: MTCNN-detect and similarity-align the photos in RAW into 128x128 PNGs with the plan's
# reference landmarks. Resumable and cached: a re-run only processes photos it has not seen.
# Output: ALIGNED if set, else $FACEGEN_CACHE/aligned/<RAW folder name>-128px (default cache ~/.cache/facegen).
# Usage: RAW=path/to/photos scripts/phase1_align.sh [extra align_faces.py flags, e.g. --device cuda --limit 100]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${RAW:-}" ]]; then
  echo "error: set RAW to a folder of face photos (phase 1B/1D need real photos; the synthetic faces are drawn aligned)" >&2
  exit 2
fi
ALIGNED=${ALIGNED:-${FACEGEN_CACHE:-$HOME/.cache/facegen}/aligned/$(basename "${RAW%/}")-128px}
python align_faces.py --input "$RAW" --output "$ALIGNED" --size 128 --template plan "$@"
