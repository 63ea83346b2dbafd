#!/usr/bin/env bash
# Plan row 4.4: + wider UNet (base 192) with attention at 8², 16² and 32², if 4.3 still underfits.
# Extra flags are passed through, e.g. --resolution 128 --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_ddpm.py --data "$DATA" \
  --beta-schedule cosine --prediction-type v_prediction --base-channels 192 --attn-res 8,16,32 --lr 2e-4 \
  --out "${OUT:-runs}" --name ddpm-4.4-wide --row 4.4 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/ddpm-4.4-wide/export.safetensors" --sample-steps 100 ${EVAL_ARGS:-}
