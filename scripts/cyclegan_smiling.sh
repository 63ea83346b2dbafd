#!/usr/bin/env bash
# CycleGAN not-smiling ↔ smiling: one face set split by its Smiling attribute (−1 → X, +1 → Y), paper losses
# (LSGAN, cycle λ=10, identity 0.5λ), PatchGAN discriminators, image pool 50, Adam 2e-4 β=(0.5, 0.999), 64x64.
# Usage: DATA=path/to/celeba_faces ATTR_FILE=list_attr_celeba.txt scripts/cyclegan_smiling.sh [extra train_cyclegan.py flags]
#        (default DATA=synthetic: the built-in faces carry their own Smiling attribute, no ATTR_FILE needed)
# Ends with evaluate.py (translate mode: FID per direction); OUT = run parent (default runs), EVAL_ARGS = its extra flags.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
ATTR_FILE=${ATTR_FILE:-}
accelerate launch train_cyclegan.py --data "$DATA" --attr Smiling ${ATTR_FILE:+--attr-file "$ATTR_FILE"} \
  --disc patch --gan-loss lsgan --cycle-weight 10 --pool-size 50 --lr 2e-4 --beta1 0.5 --beta2 0.999 \
  --gen-width 64 --gen-blocks 3 --disc-width 64 --resolution 64 --aug flip \
  --out "${OUT:-runs}" --name cyclegan-smiling --row s001-smiling "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/cyclegan-smiling/export.safetensors" ${EVAL_ARGS:-}
