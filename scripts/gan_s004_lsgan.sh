#!/usr/bin/env bash
# docs/plan.md, s004 — LSGAN (Mao et al. 2017): least-squares loss, otherwise the DCGAN row's settings.
# Usage: DATA=path/to/aligned_faces scripts/gan_s004_lsgan.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss lsgan --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 --n-critic 1 \
  --ngf 64 --ndf 64 --latent-dim 100 --resolution 64 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-s004-lsgan --row s004-lsgan "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-s004-lsgan/export.safetensors" ${EVAL_ARGS:-}
