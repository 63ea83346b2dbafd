#!/usr/bin/env bash
# Plan 5 — best VAE (row 3.3's model, VQGAN-lite: MSE + VGG perceptual λ=0.1 + PatchGAN hinge λ=0.1 from epoch 10,
# β=1e-4, Adam 1e-3, latent 256), 200 epochs. VGG weights: VGG_WEIGHTS=/path/vgg16.safetensors, else
# $FACEGEN_VGG_WEIGHTS, else torchvision's ImageNet download.  λ_adv is VQGAN's adaptive weight (Esser et al. 2021,
# eq. 7), BatchNorm PatchGAN, no ramp: the fixed weight collapsed row 3.3 (see scripts/vae_3.3_patchgan.sh for the
# measurement and why --disc-sn / --adv-ramp are not used).
# Phase 5 retrains the best of each family for 200 epochs at ONE resolution on ONE pipeline, so the three
# phase5_*.sh rows differ only in the model. Env: DATA (default synthetic; the pipeline chosen in phase 1),
# RESOLUTION (default 64; the same for all three rows), OUT (run parent, default runs), EVAL_ARGS (extra
# evaluate.py flags). Extra arguments go to the trainer (e.g. --resume latest).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
RESOLUTION=${RESOLUTION:-64}
VGG_ARGS=()
if [[ -n "${VGG_WEIGHTS:-}" ]]; then VGG_ARGS=(--vgg-weights "$VGG_WEIGHTS"); fi
accelerate launch train_vae.py --data "$DATA" --resolution "$RESOLUTION" --epochs 200 \
  --recon mse --beta 1e-4 --lambda-perc 0.1 --lambda-adv 0.1 --lr 1e-3 --latent-dim 256 \
  --disc-loss hinge --disc-start 10ep --disc-layers 3 --adv-weight adaptive \
  ${VGG_ARGS[@]+"${VGG_ARGS[@]}"} --out "${OUT:-runs}" --name phase5-vae --row 5-vae "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase5-vae/export.safetensors" ${EVAL_ARGS:-}
