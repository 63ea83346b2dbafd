#!/usr/bin/env bash
# Plan 1D — combined dataset: aligned faces + the raw photos mixed into the TRAINING set (--combined); the
# held-out FID reference stays the aligned split, so the rows are scored against the same images.
# Hypothesis (plan): combined < aligned-only, because mixing doubles the geometric variance to model.
# Phase 1 holds the model fixed (plan 2.1 DCGAN: BCE, Adam 2e-4 β=(0.5, 0.999), ngf=ndf=64, z=100, BatchNorm,
# fp16, 64x64, flip) and changes one pipeline setting per experiment; --row puts the run in compare.py's
# phase1 table. Extra arguments go to train_gan.py (e.g. --epochs 50); OUT (default runs) is the run parent and
# EVAL_ARGS holds extra evaluate.py flags.
# Usage: RAW=path/to/photos [ALIGNED=path/to/aligned] scripts/phase1_1D_combined.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${RAW:-}" ]]; then
  echo "error: set RAW to a folder of face photos (phase 1B/1D compare real photos; the synthetic faces are drawn aligned)" >&2
  exit 2
fi
# The aligned folder: ALIGNED as given, else RAW aligned now by phase1_align.sh (resumable, cached).
if [[ -z "${ALIGNED:-}" ]]; then
  if [[ -z "${RAW:-}" ]]; then
    echo "error: set ALIGNED to an align_faces.py output folder, or RAW to a folder of face photos to align (alignment is meaningless for the synthetic faces)" >&2
    exit 2
  fi
  ALIGNED=${FACEGEN_CACHE:-$HOME/.cache/facegen}/aligned/$(basename "${RAW%/}")-128px
  ALIGNED="$ALIGNED" bash scripts/phase1_align.sh
fi
accelerate launch train_gan.py \
  --loss bce --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 \
  --ngf 64 --ndf 64 --latent-dim 100 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 --resolution 64 --aug flip \
  --seed 1 --data "$ALIGNED" --combined "$RAW" --out "${OUT:-runs}" --name phase1-1D-combined --row 1D-combined "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase1-1D-combined/export.safetensors" ${EVAL_ARGS:-}
