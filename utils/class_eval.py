"""Class-conditional evaluation (ACGAN, Odena et al. 2017): per-class FID and the accuracy of an independent
attribute classifier on generated images.

train_gan.py --cond-attr runs it after training (``--class-eval-samples``); evaluate.py runs it for any 'acgan'
export.  The class grids the trainer writes are here too.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from utils.attributes import load_labelled_data

PROBE_TRAIN_MAX = 5000      # real training images the evaluation's attribute classifier is fitted on


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = 200,
                     weight_decay: float = 1e-3):
    """Multinomial logistic regression on standardised features (L-BFGS); returns a predict(feats) function."""
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    x = (feats - mean) / std
    lin = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), labels) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lambda f: lin((f - mean) / std).argmax(1)


def evaluate_acgan(export, *, num_per_class: int = 1000, extractor="inception", weights: str | None = None,
                   device: str | torch.device = "cpu", seed: int = 0, batch_size: int = 64) -> dict:
    """Per-class FID and attribute-classifier accuracy on an ACGAN export's generated images.

    FID of class c: generated images of class c vs the held-out real images of class c (the export's own split,
    rebuilt from its train_config).  Classifier: a linear probe on the same extractor's features, fitted on up to
    5000 labelled real training images — independent of the GAN (its own auxiliary classifier is what G was
    trained to satisfy).  Its accuracy on held-out real images is reported as the reference ceiling.
    """
    from utils.feature_nets import MetricsError, load_feature_extractor
    from utils.features import extract_features
    from utils.metric_math import fid_from_features

    if export.family != "acgan":
        raise MetricsError(f"evaluate_acgan needs an 'acgan' export, got {export.family!r}")
    model = export.model.to(device).eval()
    lab = load_labelled_data(export.train_config)
    # ``extractor``: a name ('inception' | 'tiny') or an already loaded FeatureExtractor (evaluate.py passes its own).
    ext = load_feature_extractor(extractor, weights=weights, device=device) if isinstance(extractor, str) else extractor
    feats = lambda imgs: torch.from_numpy(extract_features(imgs, ext, batch_size=batch_size, device=device))  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    probe_idx = torch.randperm(len(lab.data.train), generator=g)[:PROBE_TRAIN_MAX]
    predict = fit_linear_probe(feats(lab.data.train[probe_idx]), lab.train_labels[probe_idx], model.num_classes)
    real_feats = feats(lab.data.heldout)
    result = {"extractor": ext.name, "num_per_class": num_per_class, "seed": seed, "attr": lab.attr,
              "classifier": {"kind": f"linear probe on {ext.name} features", "num_train": len(probe_idx),
                             "heldout_real_accuracy": float((predict(real_feats) == lab.heldout_labels).float().mean())},
              "per_class": {}}
    correct = 0
    from utils.data import to_uint8
    for c, name in enumerate(lab.class_names):
        labels = torch.full((num_per_class,), c, dtype=torch.long)
        fake = to_uint8(model.sample(num_per_class, generator=torch.Generator().manual_seed(seed * 1000 + c),
                                     labels=labels, batch_size=batch_size).clamp(-1, 1)).cpu()
        fake_feats = feats(fake)
        hits = int((predict(fake_feats) == c).sum())
        correct += hits
        real_c = real_feats[lab.heldout_labels == c]
        entry = {"n_fake": num_per_class, "n_real": len(real_c), "classifier_accuracy": hits / num_per_class}
        if len(real_c) >= 2 and num_per_class >= 2:
            entry["fid"] = fid_from_features(fake_feats.numpy(), real_c.numpy())
        else:
            entry["fid"] = None
            entry["fid_skipped"] = f"needs ≥ 2 real and generated images of the class (has {len(real_c)} real)"
        result["per_class"][name] = entry
    result["classifier"]["generated_accuracy"] = correct / (num_per_class * len(lab.class_names))
    fids = [e["fid"] for e in result["per_class"].values() if e["fid"] is not None]
    result["mean_class_fid"] = float(np.mean(fids)) if fids else None
    return result


# ------------------------------------------------------------------------------------------------ trainer outputs

def class_grid(model, z: torch.Tensor) -> torch.Tensor:
    """Row i = z[i] rendered as every class (rows share z; columns differ only in the label)."""
    c = model.num_classes
    labels = torch.arange(c).repeat(len(z))
    return model.sample(len(z) * c, z=z.repeat_interleave(c, 0), labels=labels)


def save_class_outputs(model, z: torch.Tensor, run) -> None:
    """class_grid.png (rows share z) and samples_<class>.png (every z as one class)."""
    from utils.images import save_grid

    save_grid(class_grid(model, z), run.path("class_grid.png"), nrow=model.num_classes)
    for c, name in enumerate(model.config.class_names):
        labels = torch.full((len(z),), c, dtype=torch.long)
        save_grid(model.sample(len(z), z=z, labels=labels), run.path(f"samples_{name}.png"))


def class_eval_summary(run, args, export_path) -> str:
    """--class-eval-samples N after training: class_metrics.json next to the export; returns its summary text."""
    from utils.export import atomic_write_json, load_export
    from utils.run import fid_weights_of

    metrics = evaluate_acgan(load_export(export_path), num_per_class=args.class_eval_samples,
                             extractor=args.fid_extractor, weights=fid_weights_of(args), device=run.device,
                             seed=args.seed)
    atomic_write_json(run.path("class_metrics.json"), metrics)
    per = ", ".join(f"{n} FID {e['fid']:.2f}" if e["fid"] is not None else f"{n} FID n/a"
                    for n, e in metrics["per_class"].items())
    return (f"; {per}; classifier accuracy on generated {metrics['classifier']['generated_accuracy']:.3f} "
            f"(held-out real {metrics['classifier']['heldout_real_accuracy']:.3f})")
