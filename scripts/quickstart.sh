#!/usr/bin/env bash
# Quickstart: train a small DCGAN (32x32, ngf=ndf=32) on the built-in synthetic faces on CPU, then evaluate it.
# Training needs no download. Evaluation uses clean-fid's Inception when it can be had ($FACEGEN_FID_WEIGHTS,
# /tmp/inception-2015-12-05.pt, or clean-fid's download) and otherwise falls back to the seeded 'tiny' test
# network, saying so (its FID is only comparable with other 'tiny' FIDs).
# Env: STEPS (default 400), SAMPLES (generated and held-out real images for the metrics, default 250),
#      SYNTHETIC_SIZE (default 5000), OUT (default runs), EVAL_ARGS (extra evaluate.py flags).
# Extra arguments go to train_gan.py, e.g. --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs}
SAMPLES=${SAMPLES:-250}
RUN="$OUT/quickstart"
python train_gan.py --data synthetic --synthetic-size "${SYNTHETIC_SIZE:-5000}" --n-real "$SAMPLES" \
  --resolution 32 --ngf 32 --ndf 32 --latent-dim 100 --batch-size 64 --max-steps "${STEPS:-400}" \
  --loss bce --fid-every 0 --sample-every 100 --log-every 50 --export-every 200 --save-every 200 \
  --out "$OUT" --name quickstart "$@"

# Reportable FID needs clean-fid's Inception; without it (offline, no local file) use the tiny test network.
EXTRACTOR=inception
if ! why=$(python - <<'PY' 2>&1
import sys
from utils.feature_nets import MetricsError, resolve_inception_path
try:
    resolve_inception_path()
except MetricsError as e:
    print(e)
    sys.exit(1)
PY
); then
  EXTRACTOR=tiny
  echo "notice: Inception weights unavailable ($why)"
  echo "notice: evaluating with --feature-extractor tiny: a test network, NOT comparable with published FIDs"
fi
python evaluate.py --ckpt "$RUN/export.safetensors" --num-samples "$SAMPLES" --feature-extractor "$EXTRACTOR" \
  ${EVAL_ARGS:-}
echo
echo "sample grid:  $RUN/samples.png   (training progress: $RUN/samples/, losses: $RUN/loss.png)"
echo "metrics:      $RUN/export_eval/metrics.json   (feature network: $EXTRACTOR, $SAMPLES samples)"
echo "next:         python compare.py $RUN --out $RUN/report   (grid, interpolation, failure modes, table)"
