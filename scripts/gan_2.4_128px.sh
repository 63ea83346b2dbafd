#!/usr/bin/env bash
# Plan 2.4 — 2.3 retrained at 128x128; --attn adds self-attention at 32x32 as well as 16x16 at this size.
# Use source images of at least 128 px (the plan's MTCNN alignment writes 128x128 crops).
# Usage: DATA=path/to/aligned_faces scripts/gan_2.4_128px.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss wgan-gp --gp-lambda 10 --n-critic 2 --optimizer adam --lr-g 1e-4 --lr-d 1e-4 --beta1 0 --beta2 0.9 \
  --ngf 64 --ndf 64 --latent-dim 128 --resolution 128 --g-norm group --d-norm none --sn --attn --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-2.4-128px --row 2.4 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-2.4-128px/export.safetensors" ${EVAL_ARGS:-}
