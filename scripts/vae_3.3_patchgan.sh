#!/usr/bin/env bash
# Plan row 3.3 (VQGAN-lite): + PatchGAN discriminator, λ_adv = 0.1, λ_perc = 0.1, β = 1e-4.
# The discriminator starts after 10 epochs, once reconstructions are reasonable (VQGAN's disc_start), so it
# does not overpower the untrained decoder.  VGG weights as in vae_3.2_perceptual.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
VGG_ARGS=()
if [[ -n "${VGG_WEIGHTS:-}" ]]; then VGG_ARGS=(--vgg-weights "$VGG_WEIGHTS"); fi
accelerate launch train_vae.py --data "$DATA" \
  --recon mse --beta 1e-4 --lambda-perc 0.1 --lambda-adv 0.1 --lr 1e-3 --latent-dim 256 \
  --disc-loss hinge --disc-start 10ep --disc-layers 3 \
  ${VGG_ARGS[@]+"${VGG_ARGS[@]}"} --out "${OUT:-runs}" --name vae-3.3-patchgan "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/vae-3.3-patchgan/export.safetensors" ${EVAL_ARGS:-}
