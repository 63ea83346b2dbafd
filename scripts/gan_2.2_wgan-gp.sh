#!/usr/bin/env bash
# Plan 2.2 — WGAN-GP: Wasserstein loss + gradient penalty (lambda 10, fp32), Adam beta=(0, 0.9), lr 1e-4 for G and D,
# z=128, n_critic 2, InstanceNorm critic (no BatchNorm with a per-sample penalty), 64x64.
# Usage: DATA=path/to/aligned_faces scripts/gan_2.2_wgan-gp.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss wgan-gp --gp-lambda 10 --n-critic 2 --optimizer adam --lr-g 1e-4 --lr-d 1e-4 --beta1 0 --beta2 0.9 \
  --ngf 64 --ndf 64 --latent-dim 128 --resolution 64 --g-norm batch --d-norm instance --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-2.2-wgan-gp --row 2.2 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-2.2-wgan-gp/export.safetensors" ${EVAL_ARGS:-}
