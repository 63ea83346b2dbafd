#!/usr/bin/env bash
# Every benchmark of docs/PERFORMANCE.md in one go, then the page itself.
#
#   bash bench/run_all.sh                        # GPU if there is one, else CPU
#   DEVICE=cpu PHOTOS=/path/to/photos bash bench/run_all.sh
#   ONLY=train bash bench/run_all.sh             # train | sample | align (default: all three)
#
# GPU: every results-table row at its own size (64² or 128², batch 64, bf16 + channels_last + compile), DDIM-100
# on the plan's UNet, alignment.  CPU: every row twice, at the CPU size (32², batch 16, narrow widths; overhead-
# bound) and at the row's full widths and resolution with batch 16 (compute-bound, what a CPU user trains);
# DDIM-100 at 64².  Each bench writes its JSON to docs/results/; run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
ONLY=${ONLY:-train,sample,align}
NOTE=${NOTE:-}
ROWS="gan:2.1 gan:2.2 gan:2.3 gan:2.4 vae:3.1 vae:3.2 vae:3.3 ddpm:4.1 ddpm:4.2 ddpm:4.3 ddpm:4.4"

if [[ ,$ONLY, == *,train,* ]]; then
  for row in $ROWS; do
    family=${row%%:*} preset=${row##*:}
    if [[ $DEVICE == cuda ]]; then
      $PY bench/train_throughput.py --family "$family" --preset "$preset" --device cuda --note "$NOTE"
    else
      $PY bench/train_throughput.py --family "$family" --preset "$preset" --device cpu --steps 4 --note "$NOTE"
      $PY bench/train_throughput.py --family "$family" --preset "$preset" --device cpu --size full --batch-size 16 \
        --steps 2 --rounds 2 --note "$NOTE"
    fi
  done
fi
if [[ ,$ONLY, == *,sample,* ]]; then
  if [[ $DEVICE == cuda ]]; then
    $PY bench/sample_throughput.py --family ddpm --preset default --batch 64 --device cuda \
      --out docs/results/sample_throughput_ddpm_cuda.json
  else  # 64², batch 4: ~2 min per fp32 call on 2 cores, so no warm-up round and two timed rounds
    $PY bench/sample_throughput.py --family ddpm --preset default --batch 4 --device cpu --no-warmup --repeats 2 \
      --out docs/results/sample_throughput_ddpm_cpu.json
  fi
fi
if [[ ,$ONLY, == *,align,* ]]; then
  if [[ -n ${PHOTOS:-} ]]; then
    $PY bench/align_throughput.py --input "$PHOTOS" --limit 64 --device "$DEVICE" --repeats 5
  else
    echo "align: skipped (set PHOTOS=<folder of face photos>)"
  fi
fi
$PY bench/make_performance_md.py
