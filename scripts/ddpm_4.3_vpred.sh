#!/usr/bin/env bash
# Plan row 4.3: + v-prediction (Salimans & Ho 2022), because ε-prediction is unstable across the full trajectory.
# Extra flags are passed through, e.g. --resolution 128 --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_ddpm.py --data "$DATA" \
  --beta-schedule cosine --prediction-type v_prediction --base-channels 128 --attn-res 8,16 --lr 2e-4 \
  --out "${OUT:-runs}" --name ddpm-4.3-vpred --row 4.3 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/ddpm-4.3-vpred/export.safetensors" --sample-steps 100 ${EVAL_ARGS:-}
