"""Where a VAE's sample quality is lost: in the decoder, or between the prior and the posterior ("prior holes").

For each VAE export, the Fréchet distance to the same n held-out photos (the export's own held-out split) of

  * reconstructions of those photos (encode → posterior mean → decode): what the decoder can draw;
  * n samples from the prior N(0, I): what the model generates.

A prior FID far above the reconstruction FID says the decoder is fine where the encoder puts the data but the
prior puts mass elsewhere (Rosca et al. 2018, "Distribution matching in variational inference"; Dai & Wipf
2019, "Diagnosing and enhancing VAE models").  Precision and recall (Kynkäänniemi et al. 2019, k = 3, on the same
features as evaluate.py's) of both sets separate the same two causes for the recall: when even the reconstructions,
each a copy of one held-out photo, cover none of the photos, the decoder's output (its blur) is what puts
them off the photos' manifold, not the prior.  It also prints the held-out reconstruction MSE and KL (as the
trainer logs them) and the encoder's average second moment E[μ² + σ²] per latent dimension (1 for a posterior
that matches the prior on average).

    python bench/vae_prior_gap.py runs/vae-3.1-mse/export.safetensors runs/vae-3.2-perceptual/export.safetensors \
        --n 512 --out docs/results/vae_prior_gap.json

FIDs at n < 2048 are biased upwards (utils/metric_math.fd_sample_counts); compare them only at the same n, and
precision/recall only at the same n (the k-NN radii shrink as n grows).  The held-out features come from, and go
to, evaluate.py's reference-feature cache ($FACEGEN_CACHE/fid_stats): after evaluate.py has scored the export with
--n-real n, they cost nothing here.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data import heldout_from_train_config, to_float, to_uint8  # noqa: E402
from utils.export import load_export  # noqa: E402
from utils.feature_nets import FEATURE_EXTRACTORS, load_feature_extractor  # noqa: E402
from utils.features import extract_features  # noqa: E402
from utils.fid_images import pixels_sha256  # noqa: E402
from utils.metric_math import fid_from_features, precision_recall  # noqa: E402
from utils.reference_stats import load_reference_features, reference_key, save_reference_features  # noqa: E402
from utils.vae_training import evaluate_heldout  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("exports", nargs="+", help="VAE export files (export.safetensors)")
    p.add_argument("--n", type=int, default=512, help="held-out photos, reconstructions and prior samples each")
    p.add_argument("--batch-size", type=int, default=128, help="batch for the VAE and the feature network")
    p.add_argument("--feature-extractor", default="inception", choices=FEATURE_EXTRACTORS, help="feature network")
    p.add_argument("--fid-weights", default=None, help="local Inception file (default: $FACEGEN_FID_WEIGHTS, /tmp)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args(argv)


@torch.no_grad()
def prior_gap(path: str, n: int, batch: int, extractor, seed: int, cache: dict) -> dict:
    export = load_export(path)
    if export.family != "vae":
        raise SystemExit(f"error: {path} is a {export.family} export; this benchmark needs a VAE")
    res = int(export.model_config.get("resolution", 32))
    key = (json.dumps(export.train_config, sort_keys=True, default=str), res)
    if key not in cache:   # exports trained on the same data share one held-out set and its features
        data = heldout_from_train_config(export.train_config, res)
        real = data.heldout[:n]
        # evaluate.py's key for the same photos (its real_images_for), so either tool reuses the other's features
        disk_key = reference_key(source=data.info["source"], split_sha256=data.info["split_sha256"],
                                 pixels_sha256=pixels_sha256(real), resolution=int(real.shape[-1]), n=len(real),
                                 extractor=extractor)
        feats, _ = load_reference_features(disk_key)
        if feats is None:
            feats = extract_features(real, extractor, batch_size=batch)
            if len(real) == n:
                save_reference_features(disk_key, feats)
        cache[key] = (real, feats)
    real, f_real = cache[key]
    if len(real) < n:
        raise SystemExit(f"error: {path}: its held-out split has {len(real)} photos, fewer than --n {n}")
    vae = export.model.eval()
    recon, moments = [], []
    for i in range(0, n, batch):
        x = to_float(real[i:i + batch])
        mu, logvar = vae.encode(x)
        recon.append(to_uint8(vae.decode(mu)))
        moments.append((mu.pow(2) + logvar.exp()).double())
    recon = torch.cat(recon)
    prior = to_uint8(vae.sample(n, generator=torch.Generator().manual_seed(seed), batch_size=batch))
    second = torch.cat(moments).mean(0)
    heldout = evaluate_heldout(vae, real, batch)   # the trainer's own held-out figures, on these n photos
    f_recon = extract_features(recon, extractor, batch_size=batch)
    f_prior = extract_features(prior, extractor, batch_size=batch)
    pr_recon, pr_prior = precision_recall(f_real, f_recon), precision_recall(f_real, f_prior)
    return {
        "step": export.step,
        "fid_reconstructions": fid_from_features(f_recon, f_real),
        "fid_prior_samples": fid_from_features(f_prior, f_real),
        "precision_recall_reconstructions": {"precision": pr_recon[0], "recall": pr_recon[1]},
        "precision_recall_prior_samples": {"precision": pr_prior[0], "recall": pr_prior[1]},
        "heldout_mse": heldout["mse"], "heldout_kl_nats": heldout["kl"],
        "posterior_second_moment": {"mean": float(second.mean()), "max": float(second.max())},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    extractor = load_feature_extractor(args.feature_extractor, weights=args.fid_weights)
    cache, rows = {}, {}
    for path in args.exports:
        r = rows[path] = prior_gap(path, args.n, args.batch_size, extractor, args.seed, cache)
        print(f"{path}: FID reconstructions {r['fid_reconstructions']:.1f}, prior samples "
              f"{r['fid_prior_samples']:.1f}; precision/recall reconstructions "
              f"{r['precision_recall_reconstructions']['precision']:.3f}/{r['precision_recall_reconstructions']['recall']:.3f}, "
              f"prior samples {r['precision_recall_prior_samples']['precision']:.3f}/"
              f"{r['precision_recall_prior_samples']['recall']:.3f}; held-out MSE {r['heldout_mse']:.4f}, KL {r['heldout_kl_nats']:.1f} nats; "
              f"E[mu^2 + sigma^2] mean {r['posterior_second_moment']['mean']:.3f} "
              f"(max {r['posterior_second_moment']['max']:.3f})", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "bench": "vae_prior_gap", "command": "python bench/vae_prior_gap.py " + " ".join(sys.argv[1:]),
            "n": args.n, "seed": args.seed, "features": extractor.name,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "exports": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
