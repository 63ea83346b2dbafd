#!/usr/bin/env bash
# docs/plan.md, s001 — CycleGAN with PatchGAN discriminators (one logit per 70x70 patch at 64 px); the
# s001 rows differ only in --disc. Upsample+conv generators, LSGAN + cycle λ=10, 10000 iterations as in s001.
# Domains: DATA_X/DATA_Y (two image folders) if both are set, else DATA (default synthetic) split by ATTR (default
# Smiling, with ATTR_FILE for a folder source).
# Usage: DATA_X=apples DATA_Y=oranges scripts/cyclegan_s001_patch.sh [extra train_cyclegan.py flags, e.g. --max-steps 20]
# Ends with evaluate.py (translate mode: FID per direction); OUT = run parent (default runs), EVAL_ARGS = its extra flags.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${DATA_X:-}" && -n "${DATA_Y:-}" ]]; then
  DOMAINS=(--data-x "$DATA_X" --data-y "$DATA_Y")
else
  DOMAINS=(--data "${DATA:-synthetic}" --attr "${ATTR:-Smiling}" ${ATTR_FILE:+--attr-file "$ATTR_FILE"})
fi
accelerate launch train_cyclegan.py "${DOMAINS[@]}" \
  --disc patch --gan-loss lsgan --cycle-weight 10 --pool-size 50 --lr 2e-4 --beta1 0.5 --beta2 0.999 \
  --gen-width 64 --gen-blocks 3 --disc-width 64 --resolution 64 --aug flip --max-steps 10000 \
  --out "${OUT:-runs}" --name cyclegan-s001-patch --row s001-patch "$@"
[ -n "${SKIP_EVAL:-}" ] || python evaluate.py --ckpt "${OUT:-runs}/cyclegan-s001-patch/export.safetensors" ${EVAL_ARGS:-}
