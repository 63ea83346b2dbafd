#!/usr/bin/env bash
# Plan 1B — face crop + alignment: the full photo (center square crop, resized), no alignment.
# The 1B rows differ only in the training folder: RAW here, its MTCNN-aligned copy in phase1_1B_aligned.sh.
# Phase 1 holds the model fixed (plan 2.1 DCGAN: BCE, Adam 2e-4 β=(0.5, 0.999), ngf=ndf=64, z=100, BatchNorm,
# fp16, 64x64, flip) and changes one pipeline setting per experiment; --row puts the run in compare.py's
# phase1 table. Extra arguments go to train_gan.py (e.g. --epochs 50); OUT (default runs) is the run parent and
# EVAL_ARGS holds extra evaluate.py flags.
# Usage: RAW=path/to/photos scripts/phase1_1B_full.sh [extra train_gan.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${RAW:-}" ]]; then
  echo "error: set RAW to a folder of face photos (phase 1B/1D compare real photos; the synthetic faces are drawn aligned)" >&2
  exit 2
fi
accelerate launch train_gan.py \
  --loss bce --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 \
  --ngf 64 --ndf 64 --latent-dim 100 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 --resolution 64 --aug flip \
  --data "$RAW" --out "${OUT:-runs}" --name phase1-1B-full --row 1B-full "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase1-1B-full/export.safetensors" ${EVAL_ARGS:-}
