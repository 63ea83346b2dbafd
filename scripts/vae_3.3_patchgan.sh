#!/usr/bin/env bash
# Plan row 3.3 (VQGAN-lite): + PatchGAN discriminator, λ_adv = 0.1, λ_perc = 0.1, β = 1e-4.
# The discriminator starts after 10 epochs, once reconstructions are reasonable (VQGAN's disc_start), so it
# does not overpower the untrained decoder.  VGG weights as in vae_3.2_perceptual.sh.
# λ_adv is VQGAN's adaptive weight (Esser et al. 2021, eq. 7: λ_adv·‖∇L_rec‖/‖∇L_adv‖ at the decoder's last conv).
# With a fixed 0.1 the BatchNorm PatchGAN collapsed this row at 32² aligned CelebA, λ_perc 0: held-out MSE
# 0.033 → 0.30 in the 200 steps after --disc-start; adaptive: 0.027.  No --disc-sn / --adv-ramp: on 32² raw CelebA
# neither prevented the collapse under a fixed weight (MSE 0.041 → SN 0.15, 100-step ramp 0.28, plain 0.25) nor
# changed the adaptive run (0.034 with each, and without a discriminator), so the row keeps VQGAN's BatchNorm
# PatchGAN, switched on at once.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
VGG_ARGS=()
if [[ -n "${VGG_WEIGHTS:-}" ]]; then VGG_ARGS=(--vgg-weights "$VGG_WEIGHTS"); fi
accelerate launch train_vae.py --data "$DATA" \
  --recon mse --beta 1e-4 --lambda-perc 0.1 --lambda-adv 0.1 --lr 1e-3 --latent-dim 256 \
  --disc-loss hinge --disc-start 10ep --disc-layers 3 --adv-weight adaptive \
  ${VGG_ARGS[@]+"${VGG_ARGS[@]}"} --out "${OUT:-runs}" --name vae-3.3-patchgan --row 3.3 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/vae-3.3-patchgan/export.safetensors" ${EVAL_ARGS:-}
