#!/usr/bin/env bash
# docs/plan.md, s004 — WGAN with weight clipping (Arjovsky et al. 2017): RMSProp 5e-5, clip 0.01, n_critic 5 with
# the original WGAN code's schedule (20 critic steps for the first 50 G steps and every 500th), same DCGAN nets (BatchNorm critic).
# Usage: DATA=path/to/aligned_faces scripts/gan_s004_wgan-clip.sh [extra train_gan.py flags, e.g. --max-steps 20 --resolution 32]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_gan.py --data "$DATA" \
  --loss wgan-clip --clip 0.01 --optimizer rmsprop --lr-g 5e-5 --lr-d 5e-5 --n-critic 5 --n-critic-schedule wgan \
  --ngf 64 --ndf 64 --latent-dim 100 --resolution 64 --g-norm batch --d-norm batch --upsample transposed \
  --mixed-precision fp16 \
  --out "${OUT:-runs}" --name gan-s004-wgan-clip --row s004-wgan-clip "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/gan-s004-wgan-clip/export.safetensors" ${EVAL_ARGS:-}
