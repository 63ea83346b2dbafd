#!/usr/bin/env bash
# Plan row 3.2: + VGG-16 perceptual loss (relu1_2, relu2_2, relu3_3), λ_perc = 0.1; MSE blur is a pixel-space limit.
# VGG weights: VGG_WEIGHTS=/path/vgg16.safetensors (torchvision key names), else $FACEGEN_VGG_WEIGHTS,
# else torchvision downloads its ImageNet weights once.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
VGG_ARGS=()
if [[ -n "${VGG_WEIGHTS:-}" ]]; then VGG_ARGS=(--vgg-weights "$VGG_WEIGHTS"); fi
accelerate launch train_vae.py --data "$DATA" \
  --recon mse --beta 1 --lambda-perc 0.1 --lambda-adv 0 --lr 1e-3 --latent-dim 256 \
  ${VGG_ARGS[@]+"${VGG_ARGS[@]}"} --out "${OUT:-runs}" --name vae-3.2-perceptual --row 3.2 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/vae-3.2-perceptual/export.safetensors" ${EVAL_ARGS:-}
