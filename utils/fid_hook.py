"""Periodic FID during training (plan: every 25 epochs against the held-out real split).

The feature extractor is loaded when the run starts, so a missing offline Inception file fails in the
first second rather than after 25 epochs; the reference statistics of the held-out split are computed
at the first evaluation and cached on disk (utils.reference_stats), so later runs on the same split reuse them.
All processes call it; sampling and feature extraction are split across them and gathered.
"""
from __future__ import annotations

import torch

from utils.tracking import StatsLog, plot_curves


class TrainingFID:
    def __init__(self, run, data):
        self.run, self.data = run, data
        args = run.args
        self.enabled = args.fid_every.value > 0
        self.n = args.fid_samples
        self.evaluator = None
        self.extractor = None
        if self.enabled:
            from utils.feature_nets import MetricsError, load_feature_extractor
            from utils.run import fid_weights_of

            try:
                self.extractor = load_feature_extractor(args.fid_extractor, weights=fid_weights_of(args),
                                                        device=run.device)
            except MetricsError as e:  # e.g. offline without the Inception file: say so now, in one line
                raise SystemExit(f"error: {e} (or pass --fid-every 0 to train without FID)") from None
            self.log = StatsLog(run)

    @torch.no_grad()
    def __call__(self, module, step: int, **sample_kwargs) -> float | None:
        """FID of ``module.sample(...)`` (EMA weights) vs the held-out split; logged as kind 'fid'."""
        if not self.enabled:
            return None
        from utils.fid_evaluator import FIDEvaluator

        if self.evaluator is None:
            # eigh gives sqrtm's trace to ~1e-6 when samples outnumber feature dims, several times faster.
            self.evaluator = FIDEvaluator.from_face_data(self.data, self.extractor, device=self.run.device,
                                                         cache_dir=None, accelerator=self.run.accelerator,
                                                         fd_method="eigh")
        was_training = module.training
        module.eval()
        value = self.evaluator.compute(lambda num, g: module.sample(num, generator=g, **sample_kwargs), n=self.n,
                                       batch_size=64, seed=self.run.args.seed)
        module.train(was_training)
        n_real = len(self.evaluator.real_features)
        biased = min(self.n, n_real) <= self.extractor.dim   # utils.metric_math.fd_sample_counts
        self.log.log(step, {"fid": value, "num_samples": self.n, "num_real": n_real,
                            "extractor": self.run.args.fid_extractor, "feature_dim": self.extractor.dim,
                            "biased": biased}, kind="fid")
        what = "FD-DINOv2" if self.run.args.fid_extractor == "dinov2" else "FID"
        if self.run.is_main:
            plot_curves(self.run.path("stats.jsonl"), self.run.path("fid.png"), ["fid"], kind="fid",
                        title=f"{what} ({self.run.args.fid_extractor}, {self.n} samples vs held-out)", ylabel=what)
        self.run.print(f"step {step}: {what} {value:.3f} ({self.n} samples, {self.run.args.fid_extractor}"
                       + (f"; biased: n ≤ {self.extractor.dim} feature dimensions" if biased else "") + ")")
        return value
