#!/usr/bin/env bash
# Plan 5 — best DDPM (row 4.4's model: cosine schedule, v-prediction, UNet base 192 with attention at 8², 16², 32²,
# AdamW 2e-4), 200 epochs; evaluated with 100 DDIM steps (η = 0) as in phase 4.
# Phase 5 retrains the best of each family for 200 epochs at ONE resolution on ONE pipeline, so the three
# phase5_*.sh rows differ only in the model. Env: DATA (default synthetic; the pipeline chosen in phase 1),
# RESOLUTION (default 64; the same for all three rows), OUT (run parent, default runs), EVAL_ARGS (extra
# evaluate.py flags). Extra arguments go to the trainer (e.g. --resume latest).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-synthetic}
RESOLUTION=${RESOLUTION:-64}
accelerate launch train_ddpm.py --data "$DATA" --resolution "$RESOLUTION" --epochs 200 \
  --beta-schedule cosine --prediction-type v_prediction --base-channels 192 --attn-res 8,16,32 --lr 2e-4 \
  --out "${OUT:-runs}" --name phase5-ddpm --row 5-ddpm "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/phase5-ddpm/export.safetensors" --sample-steps 100 ${EVAL_ARGS:-}
