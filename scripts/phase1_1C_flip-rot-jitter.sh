#!/usr/bin/env bash
# Plan 1C — augmentation: horizontal flip + rotation ±5° + mild colour jitter (rows 1C differ only in --aug).
# Phase 1 holds the model fixed (plan 2.1 DCGAN: BCE, Adam 2e-4 β=(0.5, 0.999), ngf=ndf=64, z=100, BatchNorm,
# fp16) and changes one pipeline setting per experiment; --row puts the run in compare.py's phase1 table.
# Env: DATA (default synthetic; for the real study the folder chosen so far), OUT (run parent, default runs),
# EVAL_ARGS (extra evaluate.py flags). Extra arguments go to train_gan.py, e.g. --epochs 50 (plan: phase 1 may
# use 50 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss bce --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 \
  --ngf 64 --ndf 64 --latent-dim 100 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 \
  --resolution 64 --aug flip-rot-jitter \
  --out "${OUT:-runs}" --name phase1-1C-flip-rot-jitter --row 1C-flip-rot-jitter "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase1-1C-flip-rot-jitter/export.safetensors" ${EVAL_ARGS:-}
