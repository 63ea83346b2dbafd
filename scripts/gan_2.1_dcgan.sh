#!/usr/bin/env bash
# Plan 2.1 — DCGAN baseline: BCE, Adam beta=(0.5, 0.999), lr 2e-4, ngf=ndf=64, z=100, 64x64, BatchNorm G and D.
# Plan standard settings come from train_gan.py's defaults (batch 64, EMA 0.9999, FID every 25 epochs on 5000
# held-out images, 100 epochs); fp16 + GradScaler is set here.
# Usage: DATA=path/to/aligned_faces scripts/gan_2.1_dcgan.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss bce --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 \
  --ngf 64 --ndf 64 --latent-dim 100 --resolution 64 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-2.1-dcgan --row 2.1 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-2.1-dcgan/export.safetensors" ${EVAL_ARGS:-}
