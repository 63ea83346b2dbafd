#!/usr/bin/env bash
# Latent exploration of a trained export (docs/plan.md, s002 and s004): ±3σ sweeps of 8 dimensions, pixel crossfade vs
# lerp/slerp interpolation (StyleGAN-lite: Z vs W; VAE: also between encoded held-out images), looping GIFs, and
# nearest training images of 16 samples (memorisation check, pixel and Inception feature space).
# Usage: scripts/explore_latent.sh runs/<name>/export.safetensors [extra explore_latent.py flags, e.g. --space w]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?usage: scripts/explore_latent.sh EXPORT [flags]}
shift
python explore_latent.py --ckpt "$CKPT" --out "$(dirname "$CKPT")/explore" --mode all --num-dims 8 --sigma 3 \
  --steps 9 --num-samples 16 --topk 3 --features inception --gif --mp4 "$@"
