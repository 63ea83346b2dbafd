#!/usr/bin/env bash
# Plan row 4.1: DDPM baseline, linear β schedule, ε-prediction, base 128, attention at 8² and 16², AdamW 2e-4, DDIM-100.
# Extra flags are passed through, e.g. --resolution 128 --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_ddpm.py --data "$DATA" \
  --beta-schedule linear --prediction-type epsilon --base-channels 128 --attn-res 8,16 --lr 2e-4 \
  --out "${OUT:-runs}" --name ddpm-4.1-linear-eps --row 4.1 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/ddpm-4.1-linear-eps/export.safetensors" --sample-steps 100 ${EVAL_ARGS:-}
