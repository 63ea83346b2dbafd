#!/usr/bin/env bash
# Plan row 3.1: vanilla VAE, MSE reconstruction, β = 1 (plain ELBO), Adam 1e-3, latent 256. Expect blur.
# Extra flags are passed through, e.g. --resolution 128 --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_vae.py --data "$DATA" \
  --recon mse --beta 1 --lambda-perc 0 --lambda-adv 0 --lr 1e-3 --latent-dim 256 \
  --out "${OUT:-runs}" --name vae-3.1-mse --row 3.1 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/vae-3.1-mse/export.safetensors" ${EVAL_ARGS:-}
