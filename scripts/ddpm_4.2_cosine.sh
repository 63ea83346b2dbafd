#!/usr/bin/env bash
# Plan row 4.2: + cosine schedule (Nichol & Dhariwal 2021), because the linear one wastes capacity at low timesteps.
# Extra flags are passed through, e.g. --resolution 128 --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
accelerate launch train_ddpm.py --data "$DATA" \
  --beta-schedule cosine --prediction-type epsilon --base-channels 128 --attn-res 8,16 --lr 2e-4 \
  --out "${OUT:-runs}" --name ddpm-4.2-cosine --row 4.2 "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/ddpm-4.2-cosine/export.safetensors" --sample-steps 100 ${EVAL_ARGS:-}
