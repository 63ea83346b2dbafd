#!/usr/bin/env bash
# The mini study: every row of the plan's phases 1–5 at CPU scale (32×32; the 64 vs 128 px rows become 32 vs
# 64 px) on a folder of face photos, one row at a time at full CPU, each evaluated on 2100 samples vs 2100
# held-out photos (more than Inception's 2048 dimensions); then compare.py writes the tables and figures into
# RESULTS and the README.  Each row is its own scripts/<row>.sh with the budget, narrower nets and fp32
# appended; utils/study_rows.py has the rows, budgets and measured per-row times.  Phase 5 runs last, each row with
# the recipe of its family's ablation row with the lowest FID.  Resumable: after a stop, run the same command again.
#   RAW=path/to/photos bash scripts/mini_study.sh        # the study (prints its time estimate first)
#   bash scripts/mini_study.sh --plan                    # the estimate and the commands, nothing run
#   bash scripts/mini_study.sh --calibrate               # time 40 steps of every row on this machine
#   bash scripts/mini_study.sh --publish                 # floors, tables and figures of the rows evaluated so far
#   bash scripts/mini_study.sh --first-exports           # rows whose training-time FID did not fall: score the
#                                                        first export like the row, to compare first and last
# Env: RAW (a folder of face photos; required), ALIGNED (align_faces.py output at 64 px, made
# from RAW once; default $OUT/aligned), OUT (default runs/mini-study), RESULTS (default docs/results/mini-study),
# FACEGEN_FID_WEIGHTS / VGG_WEIGHTS (local Inception / VGG-16 files when offline), ROWS (a subset, e.g.
# "gan_2.1_dcgan phase5_gan"), SCALE (multiplies every budget), SAMPLES (default 2100), README (default
# README.md; "none" leaves it alone), NOTES (default $RESULTS/notes.json: what each run showed).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m utils.study "$@"
