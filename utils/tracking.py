"""Run logging: period means of the logged terms, stats JSONL (the source of truth), TensorBoard through
Accelerate, loss-curve PNGs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from utils.export import atomic_write_bytes


class RunningMeans:
    """Means of the logged scalar tensors over a logging period (train_gan/train_vae "train" records).

    ``add`` sums on the device every step (no host sync); ``read`` averages, reduces across processes with one
    all-reduce and one host copy, and starts the next period.  Non-tensor and bool entries (the ``ok`` flags)
    are skipped.  Each key has its own count, so a term added several times per step (n_critic critic updates)
    is averaged over all of them.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict) -> None:
        for k, v in values.items():
            if not isinstance(v, torch.Tensor) or v.dtype == torch.bool:
                continue
            v = v.detach().float().reshape(())
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def read(self, acc) -> dict[str, float]:
        """Means since the last read, averaged over processes (every process must call this)."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        means = torch.stack([self.sums[k] / self.counts[k] for k in keys])
        means = acc.reduce(means, reduction="mean") if acc.num_processes > 1 else means
        self.sums, self.counts = {}, {}
        return dict(zip(keys, means.tolist()))


class StatsLog:
    """Appends one JSON object per logged step to ``stats.jsonl`` (main process only)."""

    def __init__(self, run):
        self.run = run
        self.path = run.path("stats.jsonl")

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        clean = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in values.items()}
        if self.run.is_main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")
        bar = getattr(self.run, "progress", None)
        if bar is not None and kind == "train":
            bar.record(clean)   # the terminal progress bar shows the last logged losses
        numeric = {f"{kind}/{k}": v for k, v in clean.items() if isinstance(v, float) and math.isfinite(v)}
        if numeric:
            self.run.accelerator.log(numeric, step=step)

    def truncate_after(self, step: int) -> list[dict]:
        """On resume, drop records written after the checkpoint's step, so curves have no duplicate tail, and any
        line cut by a kill mid-write (else the next append would be glued to it); a negative step empties the log.
        Rewritten atomically: a kill here leaves the old log, never a half-written one.  Returns the kept records
        (none on other processes than the main one)."""
        if not (self.run.is_main and self.path.exists()):
            return []
        keep, records = [], []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                keep.append(line + "\n")
                records.append(record)
        atomic_write_bytes(self.path, "".join(keep).encode())
        return records


def read_stats(path: str | Path, kind: str | None = None) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill mid-write
        if kind is None or r.get("kind") == kind:
            rows.append(r)
    return rows


def plot_curves(stats_path: str | Path, out_png: str | Path, keys: list[str], kind: str = "train",
                title: str = "", ylabel: str = "loss") -> Path | None:
    """Plot the given keys of stats.jsonl against step (no-op when nothing was logged yet)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_stats(stats_path, kind)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        if pts:
            ax.plot(*zip(*pts), label=k, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
