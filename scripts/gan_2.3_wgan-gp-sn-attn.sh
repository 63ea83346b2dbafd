#!/usr/bin/env bash
# Plan 2.3 — 2.2 + spectral norm on the critic (replacing its InstanceNorm) + GroupNorm generator
# + SAGAN self-attention at 16x16 in G and D, 64x64.
# Usage: DATA=path/to/aligned_faces scripts/gan_2.3_wgan-gp-sn-attn.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss wgan-gp --gp-lambda 10 --n-critic 2 --optimizer adam --lr-g 1e-4 --lr-d 1e-4 --beta1 0 --beta2 0.9 \
  --ngf 64 --ndf 64 --latent-dim 128 --resolution 64 --g-norm group --d-norm none --sn --attn --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-2.3-wgan-gp-sn-attn --row 2.3 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-2.3-wgan-gp-sn-attn/export.safetensors" ${EVAL_ARGS:-}
