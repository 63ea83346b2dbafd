#!/usr/bin/env bash
# StyleGAN-lite (docs/plan.md, s002): 4-layer mapping MLP z→w (z=w=128), constant 4x4 input, AdaIN styles
# (Karras et al. 2019), bilinear resize-conv upsampling; DCGAN critic with WGAN-GP (lambda 10, n_critic 2,
# Adam 1e-4 beta=(0, 0.9), InstanceNorm critic), 64x64.  StyleGAN2 weight demodulation: add --style-mode modulated.
# Env: DATA (default synthetic), OUT (run parent, default runs), EVAL_ARGS (extra evaluate.py flags).
# Extra arguments go to train_gan.py.  Then explore Z vs W: python explore_latent.py --ckpt OUT/stylegan-lite/export.safetensors --out OUT/stylegan-lite/explore --space w
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
OUT=${OUT:-runs}
accelerate launch train_gan.py --data "$DATA" --out "$OUT" \
  --arch stylegan-lite --style-mode adain --mapping-layers 4 --upsample bilinear \
  --loss wgan-gp --gp-lambda 10 --n-critic 2 --optimizer adam --lr-g 1e-4 --lr-d 1e-4 --beta1 0 --beta2 0.9 \
  --ngf 64 --ndf 64 --latent-dim 128 --resolution 64 --d-norm instance \
  --mixed-precision fp16 \
  --name stylegan-lite --row s002-stylegan-lite "$@"
python evaluate.py --ckpt "$OUT/stylegan-lite/export.safetensors" ${EVAL_ARGS:-}
