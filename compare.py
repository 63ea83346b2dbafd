"""Compare evaluated runs: the plan's results tables (Markdown + CSV) and the figures behind them.

    python compare.py runs/ --out docs/results                          # every evaluated run under runs/
    python compare.py runs/gan-2.* --table phase2 --readme README.md    # one table, also into the README
    python compare.py a/metrics.json b/export.safetensors --figures grid,interp

Inputs are metrics.json files, export files (their <stem>_eval/metrics.json), run directories, or folders
of run directories.  Rows are grouped into tables by plan row: the ``--row`` the row scripts pass to the trainer
(stored in config.json), or for runs without one the row of the script that gives the run its name
(utils/table_specs.py, utils/table_rows.py).  Every number comes from a metrics.json written by evaluate.py;
each table states its sample count, reference split and feature network, and marks rows evaluated under
other settings.  ``--readme`` rewrites the text between ``<!-- results:<table> -->`` and
``<!-- /results:<table> -->``, so README tables are generated, never typed.

Figures (``--figures``), from the exports and run directories:
  grid         16 samples from the final export, fixed seed (a translator: held-out inputs above X→Y and Y→X)
  progression  the same noise through snapshots nearest epochs 10/50/100/200 (exports/step*.safetensors)
  interp       slerp between fixed latents (GAN z, VAE z, DDPM initial noise with deterministic DDIM), PNG + GIF;
               not made for a translator (it has no latent)
  failures     the k generated samples whose nearest real image (feature space) is farthest, beside that image
               (--failure-real hide: the samples only)
  curves       training-time FID against epoch (stats.jsonl, kind 'fid') and loss curves, one figure per table
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from utils.argtypes import positive_int
from utils.figures import enlarge, labelled_rows, nearest, ping_pong_frames, slerp
from utils.table_render import csv_text, figures_markdown, read_notes, rel_link, replace_marked, table_body
from utils.table_rows import Row, find_metrics_files, group_rows, load_rows
from utils.table_specs import TABLE_ORDER, TABLES, CompareError

FIGURE_KINDS = ("grid", "progression", "interp", "failures", "curves")
PROGRESSION_EPOCHS = (10, 50, 100, 200)     # plan 5B: epoch 10 → 50 → 100 → 200
PROGRESSION_FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # for runs too short to reach two of those epochs


def figure_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(FIGURE_KINDS)
    if names in (["none"], []):
        return []
    bad = [n for n in names if n not in FIGURE_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown figure(s) {', '.join(bad)}; choose from "
                                         f"{','.join(FIGURE_KINDS)}, 'all' or 'none'")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=str,
                   help="metrics.json files, export .safetensors files, run directories or folders of runs")
    p.add_argument("--out", type=str, default="docs/results", help="output folder for tables and figures")
    p.add_argument("--table", type=str, default="all", choices=["all", *TABLE_ORDER],
                   help="which table to write ('all': every table with rows, plus results.md/results.csv)")
    p.add_argument("--readme", type=str, default=None,
                   help="also replace the text between <!-- results:<table> --> and <!-- /results:<table> --> here")
    p.add_argument("--notes", type=str, default=None,
                   help="JSON {run name: {\"observed\": text, \"motivates\": text}} (or {run name: observed text}): the "
                        "tables' 'Main observed failure' and 'Motivates next step' columns, written after looking "
                        "at the runs")
    p.add_argument("--figures", type=figure_list, default=list(FIGURE_KINDS),
                   help=f"comma-separated subset of {','.join(FIGURE_KINDS)}, 'all' or 'none' (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the grid, progression and interpolation noise")
    p.add_argument("--grid-samples", type=positive_int, default=16, help="images per sample grid (plan: 16)")
    p.add_argument("--strip-samples", type=positive_int, default=8, help="images per progression snapshot")
    p.add_argument("--interp-pairs", type=positive_int, default=4, help="latent pairs in the interpolation figure")
    p.add_argument("--interp-steps", type=positive_int, default=8,
                   help="images per interpolation path, endpoints included (≥ 2)")
    p.add_argument("--failure-k", type=positive_int, default=8, help="failure-mode samples shown per model")
    p.add_argument("--failure-tables", type=str, default="all",
                   help="comma-separated tables whose rows get the failures figure (plan 5B: 'phase5', the finalists; "
                        "it re-samples and re-scores --failure-samples images per row); default all")
    p.add_argument("--failure-real", choices=("show", "hide"), default="show",
                   help="failures figure: 'show' the nearest real image under each sample; 'hide' shows the samples "
                        "only (their nearest real images stay as indices in failures.json) — for results you publish "
                        "from photos you may not redistribute, e.g. CelebA")
    p.add_argument("--failure-samples", type=positive_int, default=500,
                   help="generated samples searched for failures: the first N of the evaluated set (same seed)")
    p.add_argument("--feature-extractor", type=str, default="auto", choices=["auto", "inception", "tiny"],
                   help="features for failure modes; 'auto' = the network the row's metrics.json used")
    p.add_argument("--fid-weights", type=str, default=None,
                   help="local clean-fid Inception file (default: the path in metrics.json, $FACEGEN_FID_WEIGHTS, /tmp)")
    p.add_argument("--stats-cache", type=str, default=None,
                   help="reference-feature cache shared with evaluate.py (default $FACEGEN_CACHE/fid_stats)")
    p.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"],
                   help="where figures are sampled (auto: cuda when available)")
    return p


# ---------------------------------------------------------------------------------------------
# Image helpers
# ---------------------------------------------------------------------------------------------

def strip(images: torch.Tensor) -> np.ndarray:
    from utils.images import make_grid_uint8

    return make_grid_uint8(enlarge(images), nrow=len(images))


def fixed_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample_kwargs(row: Row) -> dict:
    """The sampler settings the row was evaluated with (DDPM steps/eta), so figures match the numbers."""
    return dict(row.metrics["samples"].get("sample_kwargs") or {})


# ---------------------------------------------------------------------------------------------
# Grid and progression
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _heldout_domains(train_config_json: str) -> tuple[torch.Tensor, torch.Tensor]:
    from utils.attributes import load_domains

    return tuple(d.heldout for d in load_domains(json.loads(train_config_json)))


def heldout_domains(export) -> tuple[torch.Tensor, torch.Tensor]:
    """A translator's held-out X and Y images (uint8), loaded once per training config: the grid, every snapshot of
    the progression strip and the failure figure all use the same ones."""
    return _heldout_domains(json.dumps(export.train_config, sort_keys=True, default=str))


def translation_pairs(export, n: int, direction: str = "xy") -> tuple[torch.Tensor, torch.Tensor]:
    """A translator's first n held-out source images of ``direction`` and their translations (float, [-1, 1], CPU):
    the same inputs, in the same order, that evaluate.py --mode translate scored."""
    from models.cyclegan import DIRECTION_DOMAINS
    from utils.data import to_float

    src = to_float(heldout_domains(export)[DIRECTION_DOMAINS[direction][0]][:n])
    device = next(export.model.parameters()).device
    with torch.no_grad():
        return src, export.model.translate(src.to(device), direction).float().cpu()


def model_outputs(export, row: Row, n: int, seed: int) -> torch.Tensor:
    """n images of the row's model for figures: fixed-seed samples, or a translator's X→Y translations."""
    from models import TRANSLATION_FAMILIES

    if export.family in TRANSLATION_FAMILIES:
        return translation_pairs(export, n)[1]
    return export.model.sample(n, generator=fixed_generator(seed), **sample_kwargs(row))


def sample_grid(export, row: Row, path: Path, seed: int, n: int) -> Path:
    from models import TRANSLATION_FAMILIES
    from models.cyclegan import DIRECTIONS
    from utils.images import save_grid, save_png

    if export.family in TRANSLATION_FAMILIES:  # rows: X inputs, X→Y, Y inputs, Y→X
        k = max(1, math.ceil(n / 4))
        pairs = [translation_pairs(export, k, d) for d in DIRECTIONS]
        strips = [strip(images) for pair in pairs for images in pair]
        labels = [lab for d in DIRECTIONS for lab in (f"{d[0].upper()} input", f"{d[0].upper()} -> {d[1].upper()}")]
        return save_png(labelled_rows(strips, labels), path)
    return save_grid(model_outputs(export, row, n, seed), path, nrow=math.ceil(math.sqrt(n)))


def list_snapshots(run_dir: Path | None, final_export: Path) -> list[dict]:
    """[{'step', 'epoch', 'path'}] of the run's kept exports (exports/step*.safetensors) plus the final one."""
    from utils.export import ExportError, read_export_metadata

    paths = sorted(run_dir.glob("exports/step*.safetensors")) if run_dir is not None else []
    snaps = {}
    for p in [*paths, final_export]:
        try:
            meta = read_export_metadata(p)
        except ExportError:
            continue  # a snapshot being written or damaged: the strip uses the others
        snaps.setdefault(meta["step"], {"step": meta["step"], "epoch": meta["epoch"], "path": p})
    return [snaps[s] for s in sorted(snaps)]


def choose_snapshots(snaps: list[dict], epochs=PROGRESSION_EPOCHS, fractions=PROGRESSION_FRACTIONS) -> list[dict]:
    """Snapshots nearest the plan's epochs (those the run reached); for short runs, fractions of its length."""
    if not snaps:
        return []
    last = snaps[-1]
    reached = [e for e in epochs if e <= last["epoch"]]
    if len(reached) >= 2:
        picks = [min(snaps, key=lambda s: (abs(s["epoch"] - e), s["step"])) for e in reached]
    else:
        picks = [min(snaps, key=lambda s: (abs(s["step"] - f * last["step"]), s["step"])) for f in fractions]
    seen, out = set(), []
    for s in picks:
        if s["step"] not in seen:
            seen.add(s["step"])
            out.append(s)
    return out


def snapshot_label(s: dict) -> str:
    return f"epoch {s['epoch']}" if s["epoch"] > 0 else f"step {s['step']}"


def progression_strip(row: Row, path: Path, seed: int, n: int, device) -> Path | None:
    from utils.export import load_export
    from utils.images import save_png

    chosen = choose_snapshots(list_snapshots(row.run_dir, row.export_path))
    if len(chosen) < 2:
        return None
    strips, labels = [], []
    for s in chosen:
        export = load_export(s["path"], device=device)
        strips.append(strip(model_outputs(export, row, n, seed)))
        labels.append(snapshot_label(s))
        del export
    return save_png(labelled_rows(strips, labels), path)


# ---------------------------------------------------------------------------------------------
# Latent interpolation
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def ddim_from_noise(model, x_T: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from given initial noise, with the scheduler model.sample uses.

    η = 0 makes the sample a function of x_T alone, so slerping x_T interpolates between two samples.
    """
    sched = model.ddim_scheduler()
    sched.set_timesteps(steps)
    x = x_T.to(model.device, torch.float32)
    for t in sched.timesteps:
        out = model(x, t.to(model.device)).float()
        x = sched.step(out, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


def interpolation_images(export, row: Row, seed: int, pairs: int, steps: int) -> torch.Tensor | None:
    """pairs×steps×3×R×R images along slerp paths, or None for a family without a latent to walk."""
    model, family = export.model, export.family
    g = fixed_generator(seed)
    t = torch.linspace(0, 1, steps)
    if family in ("gan", "vae", "acgan"):
        z = torch.randn(2 * pairs, model.latent_dim, generator=g)
        path = slerp(z[0::2], z[1::2], t).flatten(0, 1).to(torch.float32)
        if family == "acgan":  # one class per path (pair i: class i mod classes), so only z moves along it
            labels = (torch.arange(pairs) % model.num_classes).repeat_interleave(steps)
            images = model.sample(len(path), z=path, labels=labels)
        else:
            images = model.sample(len(path), z=path)
    elif family == "ddpm":
        r = model.resolution
        x = torch.randn(2 * pairs, 3 * r * r, generator=g)
        path = slerp(x[0::2], x[1::2], t).flatten(0, 1).view(-1, 3, r, r)
        images = ddim_from_noise(model, path, steps=int(sample_kwargs(row).get("steps", 100)))
    else:
        return None
    return images.float().cpu().view(pairs, steps, *images.shape[1:])


def interpolation_figures(export, row: Row, png: Path, gif: Path, seed: int, pairs: int, steps: int
                          ) -> tuple[Path, Path] | None:
    from utils.images import make_grid_uint8, save_gif, save_png

    images = interpolation_images(export, row, seed, pairs, max(2, steps))
    if images is None:
        return None
    images = enlarge(images)
    save_png(make_grid_uint8(images.flatten(0, 1), nrow=images.shape[1]), png)
    save_gif(ping_pong_frames(images), gif, duration_ms=150)
    return png, gif


# ---------------------------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------------------------

def reference_images(row: Row, export):
    """The real images the row's metrics were computed against (held-out split or --real folder)."""
    real = row.metrics["real"]
    n = int(real["n"])
    if real.get("split") == "folder":
        from utils.fid_images import load_image_folder

        return load_image_folder(real["source"], limit=n)[0]
    from utils.data import heldout_from_train_config

    data = heldout_from_train_config(export.train_config, export.model.resolution)
    return data.heldout[:n]


def nearest_real(fake_feats: np.ndarray, real_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to the nearest real feature, its index) for every fake feature (Euclidean)."""
    fake, real = torch.from_numpy(np.asarray(fake_feats, np.float64)), torch.from_numpy(np.asarray(real_feats, np.float64))
    dist, idx = nearest(fake, real, 1)
    return dist[:, 0].numpy(), idx[:, 0].numpy()


def worst_samples(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest nearest-real distances, farthest first (ties: lower index first)."""
    order = np.lexsort((np.arange(len(dist)), -dist))
    return order[:k]


def as_uint8_tensor(images, resolution: int) -> torch.Tensor:
    """Real images (uint8 tensor or list of H×W×3 arrays of any size) → uint8 N×3×R×R for display."""
    if isinstance(images, torch.Tensor):
        return images
    from utils.data_sources import resize_square

    return torch.from_numpy(np.stack([resize_square(a, resolution) for a in images])).permute(0, 3, 1, 2)


def failure_modes(row: Row, export, extractor, out_png: Path, out_json: Path, *, k: int, n: int, device,
                  stats_cache=None, show_real: bool = True) -> Path:
    """Save the k samples farthest from every real image (top) above their nearest real images (bottom; with
    ``show_real`` False, the samples only: the real images' indices are in the JSON)."""
    from utils.images import make_grid_uint8, save_png
    from utils.export import atomic_write_json
    from models import TRANSLATION_FAMILIES
    from utils.data import to_uint8
    from utils.features import extract_features, generate_and_extract
    from utils.fid_evaluator import FIDEvaluator
    from utils.fid_images import pixels_sha256
    from utils.reference_stats import reference_key

    m = row.metrics
    samples = m["samples"]
    model = export.model
    key = None
    if export.family in TRANSLATION_FAMILIES:
        # X→Y translations of the first n held-out X images, against the Y held-out images evaluate.py used.
        xy = m["translate"]["xy"]
        n = min(n, int(xy["n_translated"]))
        head = to_uint8(translation_pairs(export, n, "xy")[1].clamp(-1, 1))
        features = extract_features(head, extractor, device=device)
        real = heldout_domains(export)[1][:int(xy["real"]["n"])]
        expected_sha = xy["real"].get("pixels_sha256")
    else:
        n = min(n, int(samples["n"]))
        kw = sample_kwargs(row)
        # Same seed and block size as evaluate.py: these are exactly the first n evaluated samples.
        gen = generate_and_extract(lambda num, g: model.sample(num, generator=g, **kw), n, extractor,
                                   block_size=int(samples.get("block_size") or 64), seed=int(samples.get("seed") or 0),
                                   device=device, keep_images=n)
        head, features = gen.head_images, gen.features
        real = reference_images(row, export)
        expected_sha = m["real"].get("pixels_sha256")
    real_sha = pixels_sha256(real) if isinstance(real, torch.Tensor) else None
    if real_sha is not None and export.family not in TRANSLATION_FAMILIES:
        key = reference_key(source=m["real"]["source"], split_sha256=m["real"]["split_sha256"],
                            pixels_sha256=real_sha, resolution=int(real.shape[-1]), n=len(real), extractor=extractor)
    if real_sha is not None and real_sha != expected_sha:
        print(f"warning: {row.name}: the reference images differ from those in its metrics.json "
              "(data changed since evaluation?)", file=sys.stderr)
    ev = FIDEvaluator.from_images(extractor, real, device=device, cache_key=key, cache_dir=stats_cache)
    dist, idx = nearest_real(features, ev.real_features)
    worst = worst_samples(dist, min(k, n))
    real_u8 = as_uint8_tensor(real, int(model.resolution))
    top = head[torch.from_numpy(worst)]
    shown = torch.cat([top, real_u8[torch.from_numpy(idx[worst])]]) if show_real else top
    save_png(make_grid_uint8(enlarge(shown), nrow=len(worst)), out_png)
    atomic_write_json(out_json, {
        "run": row.name, "extractor": extractor.describe(), "searched_samples": n, "seed": samples.get("seed"),
        "block_size": samples.get("block_size"), "num_real": len(real), "real_images_shown": show_real,
        "note": ("sample index i is evaluate.py's samples/xy/{i:06d}.png (X→Y translation of held-out X image i)"
                 if export.family in TRANSLATION_FAMILIES else
                 "sample index i is evaluate.py's samples/{i:06d}.png for the same seed"),
        "failures": [{"sample_index": int(i), "nn_distance": float(dist[i]), "nearest_real_index": int(idx[i])}
                     for i in worst],
        "median_nn_distance": float(np.median(dist))})
    return out_png


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------

def steps_per_epoch(row: Row) -> int | None:
    """Training images // batch size, from the export's metadata (how utils.data.Batches counts an epoch)."""
    from utils.export import ExportError, read_export_metadata

    if row.export_path is None:
        return None
    try:
        meta = read_export_metadata(row.export_path)
        n = int(meta["extra"]["data"]["num_train"]) // int(meta["train_config"]["batch_size"])
    except (ExportError, KeyError, TypeError, ValueError):
        return None
    return n if n > 0 else None


def curve_figures(rows: list[Row], fid_png: Path, loss_png: Path, title: str) -> dict:
    """Training-time FID of every row in one plot, and each row's loss curves; {} when nothing was logged."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.export import atomic_write_bytes
    from utils.tracking import read_stats

    def save(fig, path):
        import io
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
        return path

    logged = [(r, r.run_dir / "stats.jsonl") for r in rows if r.run_dir is not None]
    spe = {r.name: steps_per_epoch(r) for r, _ in logged}
    in_epochs = bool(logged) and all(spe.values())
    xlabel = "epoch" if in_epochs else "step"

    def x_of(r, step):
        return step / spe[r.name] if in_epochs else step

    out = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = False
    for r, stats in logged:
        recs = [s for s in read_stats(stats, "fid") if isinstance(s.get("fid"), (int, float)) and math.isfinite(s["fid"])]
        if recs:
            extractor = recs[-1].get("extractor", "?")
            ax.plot([x_of(r, s["step"]) for s in recs], [s["fid"] for s in recs], marker="o", ms=3, lw=1,
                    label=f"{r.short_label} ({extractor}, n={recs[-1].get('num_samples', '?')})")
            plotted = True
    if plotted:
        ax.set(xlabel=xlabel, ylabel="FID (training-time)", title=f"{title}: FID during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        out["fid_curve"] = save(fig, fid_png)
    else:
        plt.close(fig)

    series = []
    for r, stats in logged:
        recs = read_stats(stats, "train")
        keys = sorted({k for s in recs for k, v in s.items() if "loss" in k and isinstance(v, (int, float))})
        if keys:
            series.append((r, recs, keys))
    if series:
        cols = min(3, len(series))
        nrows = math.ceil(len(series) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), squeeze=False)
        for ax, (r, recs, keys) in zip(axes.flat, series):
            for k in keys:
                pts = [(x_of(r, s["step"]), s[k]) for s in recs
                       if isinstance(s.get(k), (int, float)) and math.isfinite(s[k])]
                if pts:
                    ax.plot(*zip(*pts), lw=0.8, label=k)
            ax.set_title(r.short_label, fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(series):]:
            ax.axis("off")
        out["loss_curves"] = save(fig, loss_png)
    return out


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

class Extractors:
    """Feature networks for failure modes, loaded once per kind."""

    def __init__(self, choice: str, weights: str | None, device):
        self.choice, self.weights, self.device, self.loaded = choice, weights, device, {}

    def for_row(self, row: Row):
        from utils.feature_nets import load_feature_extractor

        fe = row.metrics["feature_extractor"]
        kind = self.choice
        if kind == "auto":
            kind = "tiny" if str(fe.get("name", "")).startswith("tiny") else "inception"
        weights = self.weights
        if kind == "inception" and weights is None and fe.get("path") and Path(fe["path"]).is_file():
            weights = fe["path"]
        if kind not in self.loaded:
            self.loaded[kind] = load_feature_extractor(kind, weights=weights, device=self.device)
        return self.loaded[kind]


def row_figures(row: Row, args, fig_dir: Path, extractors: Extractors, device) -> list[str]:
    """Make the requested per-row figures; returns one-line reasons for those that could not be made."""
    from utils.data_sources import DataError
    from utils.export import ExportError, load_export
    from utils.feature_nets import MetricsError

    failure_tables = args.failure_tables.split(",")
    wanted = [k for k in args.figures if k != "curves"
              and (k != "failures" or "all" in failure_tables or row.table in failure_tables)]
    if not wanted:
        return []
    if row.is_floor:
        return []
    if row.export_path is None:
        return [f"{row.name}: no export found for its metrics.json; figures skipped"]
    problems = []
    try:
        export = load_export(row.export_path, device=device)
    except ExportError as e:
        return [f"{row.name}: {e}"]
    d = fig_dir / row.name
    steps = {
        "grid": lambda: {"grid": sample_grid(export, row, d / "grid.png", args.seed, args.grid_samples)},
        "progression": lambda: {"progression": progression_strip(row, d / "progression.png", args.seed,
                                                                 args.strip_samples, device)},
        "interp": lambda: dict(zip(("interp", "interp_gif"), interpolation_figures(
            export, row, d / "interp.png", d / "interp.gif", args.seed, args.interp_pairs, args.interp_steps) or ())),
        "failures": lambda: {"failures": failure_modes(row, export, extractors.for_row(row), d / "failures.png",
                                                       d / "failures.json", k=args.failure_k, n=args.failure_samples,
                                                       device=device, stats_cache=args.stats_cache,
                                                       show_real=args.failure_real == "show")},
    }
    for kind in wanted:
        try:
            made = steps[kind]()
        except (ExportError, MetricsError, DataError, ValueError) as e:
            problems.append(f"{row.name}: {kind} figure skipped ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            continue
        row.figures.update({k: v for k, v in made.items() if v is not None})
    return problems


def write_outputs(tables: dict[str, list[Row]], args, table_figs: dict, notes: dict) -> list[Path]:
    from utils.export import atomic_write_bytes

    out = Path(args.out)
    written = []
    sections = []
    for name, rows in tables.items():
        spec = TABLES[name]
        body = table_body(spec, rows, notes)
        figs = {level: figures_markdown(rows, table_figs.get(name, {}), out, level) for level in ("###", "####")}
        md = f"# {spec.title}\n\n{body}\n" + (f"\n{figs['###']}\n" if figs["###"] else "")
        atomic_write_bytes(out / f"{name}.md", md.encode())
        atomic_write_bytes(out / f"{name}.csv", csv_text(rows).encode())
        written += [out / f"{name}.md", out / f"{name}.csv"]
        sections.append(f"## {spec.title}\n\n{body}\n" + (f"\n{figs['####']}\n" if figs["####"] else ""))
    if args.table == "all":
        all_rows = [r for rows in tables.values() for r in rows]
        text = (f"# Results\n\nGenerated by `compare.py` from {len(all_rows)} metrics.json file(s); "
                "every number links back to a file written by `evaluate.py` (paths in results.csv).\n\n"
                + "\n".join(sections))
        atomic_write_bytes(out / "results.md", text.encode())
        atomic_write_bytes(out / "results.csv", csv_text(all_rows).encode())
        written += [out / "results.md", out / "results.csv"]
    return written


def update_readme(readme: Path, tables: dict[str, list[Row]], out: Path, notes: dict) -> list[str]:
    """Replace each table's marked block; returns the tables updated."""
    from utils.export import atomic_write_bytes

    if not readme.is_file():
        raise CompareError(f"--readme {readme} not found")
    text = readme.read_text()
    updated = []
    for name, rows in tables.items():
        link = rel_link(out / f"{name}.md", readme.resolve().parent)
        content = f"#### {TABLES[name].title}\n\n{table_body(TABLES[name], rows, notes)}\n\nFigures and CSV: [{link}]({link})."
        text, found = replace_marked(text, name, content)
        if found:
            updated.append(name)
    if updated:
        atomic_write_bytes(readme, text.encode())
    return updated


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CompareError("--device cuda requested but CUDA is not available")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def run(args) -> dict[str, list[Row]]:
    files, skipped = find_metrics_files(args.inputs)
    rows, more = load_rows(files)
    skipped += more
    if not rows:
        raise CompareError(f"no usable metrics.json under {', '.join(args.inputs)} "
                           f"({len(skipped)} skipped{': ' + skipped[0] if skipped else ''}); run evaluate.py first")
    tables, unplaced = group_rows(rows, args.table)
    skipped += unplaced
    if not tables:
        raise CompareError(f"no rows belong to table {args.table!r} (found: "
                           f"{', '.join(sorted({r.table for r in rows}))})")
    notes = read_notes(args.notes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    extractors = Extractors(args.feature_extractor, args.fid_weights, device)
    fig_dir = out / "figures"
    table_figs = {}
    from utils.progress import bar

    per_row = [k for k in args.figures if k != "curves"]
    progress = bar(sum(len(m) for m in tables.values()), desc="figures", unit="row") if per_row else None
    for name, members in tables.items():
        for row in members:
            if progress is not None:
                progress.set_postfix_str(row.name, refresh=False)
            skipped += row_figures(row, args, fig_dir, extractors, device)
            if progress is not None:
                progress.update(1)
        if "curves" in args.figures:
            table_figs[name] = curve_figures(members, fig_dir / f"{name}_fid.png", fig_dir / f"{name}_losses.png",
                                             TABLES[name].title.split(" — ")[0])
    if progress is not None:
        progress.close()
    written = write_outputs(tables, args, table_figs, notes)
    for name, members in tables.items():
        flagged = sum(1 for r in members if r.flag)
        print(f"{name}: {len(members)} row(s)" + (f", {flagged} under different evaluation settings (marked)"
                                                  if flagged else "") + f" -> {out / (name + '.md')}")
    if args.readme:
        updated = update_readme(Path(args.readme), tables, out, notes)
        print(f"README {args.readme}: " + (f"updated {', '.join(updated)}" if updated else
                                          "no <!-- results:<table> --> markers for these tables; unchanged"))
    if skipped:
        print(f"{len(skipped)} skipped:", file=sys.stderr)
        for s in skipped:
            print(f"  {s}", file=sys.stderr)
    print(f"wrote {len(written)} table file(s) under {out}")
    return tables


def main(argv: list[str] | None = None) -> dict[str, list[Row]]:
    args = build_parser().parse_args(argv)
    from utils.export import ExportError
    from utils.feature_nets import MetricsError

    try:
        return run(args)
    except (ExportError, MetricsError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
