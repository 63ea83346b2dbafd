#!/usr/bin/env bash
# The CPU-scale study behind the README's results tables: the three phase-5 rows (the best GAN, VAE and DDPM
# recipes, scripts/phase5_*.sh, unchanged except for what is listed below) trained on a folder of face photos
# at 32x32 for STEPS steps each, evaluated with clean-fid's Inception on SAMPLES samples against 1000 held-out
# photos, then compare.py writes the tables and figures into RESULTS and the README.
# Shrunk for a 2-core CPU: 32x32, STEPS (default 500) steps at batch 64, fp32, narrower nets (GAN 32 channels,
# DDPM base 32 with attention at 8 and 16 px; schedules shrunk with the run: the VAE's PatchGAN starts at epoch 2
# instead of 10 and the DDPM's learning-rate warm-up takes 100 steps instead of 1000).  These are NOT the plan's
# numbers (64x64, 200 epochs, 5000 samples: a GPU job); they show every family end to end on real faces, with
# real metrics.
# Env: DATA (folder of face photos, required), FACEGEN_FID_WEIGHTS (clean-fid inception-2015-12-05.pt when
# offline), VGG_WEIGHTS (VGG-16 for the VAE's perceptual loss when offline), OUT (default runs/cpu-study),
# RESULTS (default docs/results/cpu-study), STEPS, SAMPLES (default 1000), README (default README.md),
# RESUME=1 (continue every row from its latest checkpoint, e.g. after an interruption or to reach a larger STEPS).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${DATA:-}" ]]; then
  echo "error: set DATA to a folder of face photos (e.g. CelebA's img_align_celeba)" >&2
  exit 2
fi
export DATA RESOLUTION=32 OUT=${OUT:-runs/cpu-study}
STEPS=${STEPS:-500}
EVAL="--num-samples ${SAMPLES:-1000} --n-real 1000 --batch-size 100"
COMMON=(--n-real 1000 --max-steps "$STEPS" --batch-size 64 --mixed-precision no --fid-every 0
        --sample-every 250 --save-every 250 --export-every 250 --log-every 50 ${RESUME:+--resume latest})
# The three rows run side by side, each logging to $OUT/<row>.log: on a CPU `accelerate launch` gives each
# process one thread (OMP_NUM_THREADS=1), and at 32x32 one thread per run beats two threads for one run.
mkdir -p "$OUT"
pids=()
EVAL_ARGS="$EVAL" bash scripts/phase5_gan.sh "${COMMON[@]}" --ngf 32 --ndf 32 >"$OUT/phase5-gan.log" 2>&1 &
pids+=($!)
EVAL_ARGS="$EVAL" bash scripts/phase5_vae.sh "${COMMON[@]}" --disc-start 2ep >"$OUT/phase5-vae.log" 2>&1 &
pids+=($!)
EVAL_ARGS="$EVAL" bash scripts/phase5_ddpm.sh "${COMMON[@]}" --base-channels 32 --attn-res 8,16 --warmup-steps 100 \
  >"$OUT/phase5-ddpm.log" 2>&1 &
pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if (( failed )); then
  echo "error: a phase-5 row failed; see $OUT/phase5-*.log" >&2
  exit 1
fi
# The files the tables come from travel with them: RESULTS/rows/<row>/ holds each row's metrics.json, config.json
# and stats.jsonl (`python compare.py RESULTS/rows/*/export_eval/metrics.json --figures none` rebuilds the tables).
RESULTS=${RESULTS:-docs/results/cpu-study}
for row in phase5-gan phase5-vae phase5-ddpm; do
  mkdir -p "$RESULTS/rows/$row/export_eval"
  cp "$OUT/$row/export_eval/metrics.json" "$RESULTS/rows/$row/export_eval/"
  cp "$OUT/$row/config.json" "$OUT/$row/stats.jsonl" "$RESULTS/rows/$row/"
done
# No failure-mode figures here: they show held-out CelebA photos beside the samples, and the results folder is
# committed (CelebA's images may not be redistributed).  `python compare.py "$OUT" --out DIR` makes them locally.
# NOTES: a JSON {run name: what was observed} for the tables' 'Observed' column (default: RESULTS/notes.json if
# it exists; it is written by hand after looking at the runs, like the plan's failure notes).
NOTES=${NOTES:-$RESULTS/notes.json}
NOTES_ARGS=()
if [[ -f "$NOTES" ]]; then NOTES_ARGS=(--notes "$NOTES"); fi
python compare.py "$OUT" --out "$RESULTS" --readme "${README:-README.md}" --figures grid,progression,interp,curves \
  ${NOTES_ARGS[@]+"${NOTES_ARGS[@]}"}
