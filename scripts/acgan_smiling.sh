#!/usr/bin/env bash
# ACGAN (docs/plan.md, s003; Odena et al. 2017) conditioned on Smiling: class-conditional DCGAN generator (label
# embedding concatenated to z=100), DCGAN discriminator with real/fake + auxiliary class heads, BCE + class CE
# (weight 1), Adam 2e-4 beta=(0.5, 0.999), 64x64.  Writes class_grid.png (rows share z, columns differ only in the
# class); evaluate.py adds per-class FID (vs the held-out real images of the class) and the attribute-classifier
# accuracy on generated images to metrics.json (num-samples / 2 images per class).
# Env: DATA (default synthetic: the built-in faces carry their own Smiling attribute), ATTR_FILE (CelebA
# list_attr_celeba.txt for an image folder), OUT (run parent, default runs), EVAL_ARGS (extra evaluate.py flags).
# Extra arguments go to train_gan.py (class conditioning is its --cond-attr option).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
OUT=${OUT:-runs}
ATTR_FILE=${ATTR_FILE:-}
accelerate launch train_gan.py --data "$DATA" --out "$OUT" --cond-attr Smiling ${ATTR_FILE:+--attr-file "$ATTR_FILE"} \
  --loss bce --aux-weight 1 --embed concat --embed-dim 16 --latent-dim 100 --ngf 64 --ndf 64 --resolution 64 \
  --optimizer adam --lr-g 2e-4 --lr-d 2e-4 --beta1 0.5 --beta2 0.999 \
  --mixed-precision fp16 \
  --row s003-smiling --name acgan-smiling "$@"
python evaluate.py --ckpt "$OUT/acgan-smiling/export.safetensors" ${EVAL_ARGS:-}
