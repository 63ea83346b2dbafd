#!/usr/bin/env bash
# Run every row of one results table, then build that table with compare.py.
# Usage: scripts/run_table.sh phase1|phase2|phase3|phase4|phase5|s004 [flags passed to every row's trainer]
# Env: as the row scripts (DATA, OUT, EVAL_ARGS, RAW/ALIGNED for phase 1, RESOLUTION for phase 5, VGG_WEIGHTS),
#      plus RESULTS (compare.py --out, default docs/results) and COMPARE_ARGS (extra compare.py flags).
# Rows run one after another; a failing row stops the table (set -e), and re-running continues any row whose
# trainer flags include --resume latest.
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE=${1:?usage: scripts/run_table.sh phase1|phase2|phase3|phase4|phase5|s004 [trainer flags]}
shift
case "$TABLE" in
  phase1) ROWS=(phase1_1A_64px phase1_1A_128px phase1_1B_full phase1_1B_aligned phase1_1C_flip
                phase1_1C_flip-rot-jitter phase1_1D_aligned phase1_1D_combined) ;;
  phase2) ROWS=(gan_2.1_dcgan gan_2.2_wgan-gp gan_2.3_wgan-gp-sn-attn gan_2.4_128px) ;;
  phase3) ROWS=(vae_3.1_mse vae_3.2_perceptual vae_3.3_patchgan) ;;
  phase4) ROWS=(ddpm_4.1_linear-eps ddpm_4.2_cosine ddpm_4.3_vpred ddpm_4.4_wide) ;;
  phase5) ROWS=(phase5_gan phase5_vae phase5_ddpm) ;;
  s004)   ROWS=(gan_s004_dcgan gan_s004_lsgan gan_s004_wgan-clip) ;;
  *) echo "error: unknown table '$TABLE' (phase1, phase2, phase3, phase4, phase5 or s004)" >&2; exit 2 ;;
esac
for row in "${ROWS[@]}"; do
  echo "=== $TABLE: scripts/$row.sh"
  bash "scripts/$row.sh" "$@"
done
python compare.py "${OUT:-runs}" --table "$TABLE" --out "${RESULTS:-docs/results}" ${COMPARE_ARGS:-}
