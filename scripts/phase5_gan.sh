#!/usr/bin/env bash
# Plan 5 — best GAN (row 2.4's model: WGAN-GP λ=10, n_critic 2, Adam 1e-4 β=(0, 0.9), z=128, GroupNorm generator,
# spectral-norm critic, self-attention at 16x16 (and 32x32 at 128 px)), 200 epochs.
# Phase 5 retrains the best of each family for 200 epochs at ONE resolution on ONE pipeline, so the three
# phase5_*.sh rows differ only in the model. Env: DATA (default synthetic; the pipeline chosen in phase 1),
# RESOLUTION (default 64; the same for all three rows), OUT (run parent, default runs), EVAL_ARGS (extra
# evaluate.py flags). Extra arguments go to the trainer (e.g. --resume latest).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
RESOLUTION=${RESOLUTION:-64}
accelerate launch train_gan.py --data "$DATA" --resolution "$RESOLUTION" --epochs 200 \
  --loss wgan-gp --gp-lambda 10 --n-critic 2 --optimizer adam --lr-g 1e-4 --lr-d 1e-4 --beta1 0 --beta2 0.9 \
  --ngf 64 --ndf 64 --latent-dim 128 --g-norm group --d-norm none --sn --attn --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name phase5-gan --row 5-gan "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase5-gan/export.safetensors" ${EVAL_ARGS:-}
