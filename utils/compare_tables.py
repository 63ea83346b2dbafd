"""Results tables from metrics.json files: find them, group them into the plan's tables, render Markdown/CSV.

A row is one evaluated export.  Its table and place come from the run name that the row script gives it
(``--name``): ``phase1-1A-64px``, ``gan-2.1-dcgan``, ``vae-3.2-perceptual``, ``ddpm-4.4-wide``, ``phase5-gan``,
``gan-s004-lsgan``; any other name lands in the ``other`` table.  Every number comes from a metrics.json
written by ``evaluate.py``; a table states the evaluation settings (sample count, reference split, feature
network) that its rows share and marks the rows evaluated under different ones, so they are never silently
mixed.  ``compare.py`` is the command line; this module has no torch dependency.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from utils.metrics_schema import MetricsFileError, read_metrics


class CompareError(SystemExit):
    """Bad input to compare.py (no metrics found, unreadable notes, missing README); one-line message."""

    def __init__(self, msg: str):
        super().__init__(f"error: {msg}")


# ---------------------------------------------------------------------------------------------
# The plan's tables
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    lead: tuple[str, ...]        # headers of the identifying columns
    blurb: str = ""
    columns: tuple = ()          # (value key, header, format) of the metric columns; () = VALUE_COLUMNS


TABLES = {
    "phase1": TableSpec("phase1", "Phase 1 — pipeline selection (DCGAN, one variable per experiment)",
                        ("Exp.", "Variable", "Variant"),
                        "Each pair of rows differs in one data-pipeline setting; FID picks the pipeline."),
    "phase2": TableSpec("phase2", "Phase 2 — GAN evolution", ("Step", "Model")),
    "phase3": TableSpec("phase3", "Phase 3 — VAE track", ("Step", "Model")),
    "phase4": TableSpec("phase4", "Phase 4 — DDPM track", ("Step", "Model")),
    "phase5": TableSpec("phase5", "Phase 5A — cross-family comparison (best of each family, same data and "
                                  "resolution)", ("Model",)),
    "s004": TableSpec("s004", "GAN objectives (s004): DCGAN vs LSGAN vs WGAN with weight clipping", ("Model",)),
    "s001": TableSpec("s001", "Image translation (s001): CycleGAN", ("Model",),
                      "Each domain's held-out images are translated into the other domain and scored against that "
                      "domain's held-out images; 'untranslated' scores the inputs themselves, the baseline a "
                      "translator must beat.",
                      (("translate.xy.metrics.fid.value", "FID X→Y ↓", "{:.2f}"),
                       ("translate.xy.untranslated_baseline.value", "untranslated X", "{:.2f}"),
                       ("translate.yx.metrics.fid.value", "FID Y→X ↓", "{:.2f}"),
                       ("translate.yx.untranslated_baseline.value", "untranslated Y", "{:.2f}"),
                       ("kid", "KID ↓ (mean)", "{:.4f}"), ("precision", "Precision ↑ (mean)", "{:.3f}"),
                       ("recall", "Recall ↑ (mean)", "{:.3f}"))),
    "s003": TableSpec("s003", "Class-conditional GAN (s003): ACGAN", ("Model",),
                      "Per-class FID: each class's samples against that class's held-out images.  Classifier: a "
                      "linear probe on the same features, trained on real images; its accuracy on held-out real "
                      "images is the ceiling for its accuracy on generated ones.",
                      (("fid", "FID ↓", "{:.2f}"), ("per_class.mean_class_fid", "mean class FID ↓", "{:.2f}"),
                       ("per_class.classifier.generated_accuracy", "class acc. (generated) ↑", "{:.3f}"),
                       ("per_class.classifier.heldout_real_accuracy", "class acc. (real)", "{:.3f}"),
                       ("kid", "KID ↓", "{:.4f}"), ("precision", "Precision ↑", "{:.3f}"),
                       ("recall", "Recall ↑", "{:.3f}"))),
    "other": TableSpec("other", "Other runs", ("Run", "Family")),
}
TABLE_ORDER = tuple(TABLES)

# Row labels, in the words of the plan's tables (the order here is the row order).
PHASE1_ROWS = {
    "1A-64px": ("Resolution", "64×64"), "1A-128px": ("Resolution", "128×128"),
    "1B-full": ("Face crop + alignment", "Full image"), "1B-aligned": ("Face crop + alignment", "MTCNN-aligned"),
    "1C-flip": ("Augmentation", "H-flip only"),
    "1C-flip-rot-jitter": ("Augmentation", "H-flip + rotation ±5° + mild colour jitter"),
    "1D-aligned": ("Combined dataset", "Aligned only"), "1D-combined": ("Combined dataset", "Aligned + raw mixed"),
}
STEP_LABELS = {
    "2.1": "DCGAN", "2.2": "WGAN-GP", "2.3": "WGAN-GP + SN + Attn", "2.4": "+ 128×128",
    "3.1": "VAE MSE", "3.2": "+ Perceptual", "3.3": "+ PatchGAN",
    "4.1": "DDPM linear + ε", "4.2": "+ cosine", "4.3": "+ v-pred", "4.4": "+ wider",
}
PHASE5_ROWS = {"gan": "Best GAN (2.4)", "vae": "Best VAE (3.3)", "ddpm": "Best DDPM (4.4)"}
S004_ROWS = {"dcgan": "DCGAN", "lsgan": "LSGAN", "wgan-clip": "WGAN (weight clipping)"}
S003_ROWS = {"smiling": "ACGAN on Smiling (BCE + class CE)"}
S001_ROWS = {"s001-dc": "DCGAN discriminator", "s001-patch": "PatchGAN discriminator",
             "smiling": "not smiling ↔ smiling (PatchGAN + identity loss)"}

_PATTERNS = (
    ("phase1", re.compile(r"^phase1-(?P<key>1[A-D]-.+)$")),
    ("phase5", re.compile(r"^phase5-(?P<key>[a-z0-9]+)$")),
    ("s004", re.compile(r"^gan-s004-(?P<key>.+)$")),
    ("s001", re.compile(r"^cyclegan-(?P<key>.+)$")),
    ("s003", re.compile(r"^acgan-(?P<key>.+)$")),
    ("steps", re.compile(r"^(?P<family>gan|vae|ddpm)-(?P<key>[234]\.\d+)-.+$")),
)


# Rows whose variable is the image size: their label is the size the run actually trained at (the CPU-scale study
# runs the 64/128 px rows at 32/64 px).
RESOLUTION_ROWS = {"1A-64px", "1A-128px", "2.4"}


def samples_resolution(metrics: dict) -> int | None:
    res = metrics.get("samples", {}).get("resolution")
    return res if isinstance(res, int) else None


def classify(name: str, family: str | None = None, resolution: int | None = None
             ) -> tuple[str, str, tuple[str, ...], tuple]:
    """(table, key, lead cells, sort key) of a run name; unknown names go to 'other'.  ``resolution``: the size the
    run's samples have, which labels the rows whose variable is the size."""
    size = f"{resolution}×{resolution}" if resolution else None
    for table, pat in _PATTERNS:
        m = pat.match(name)
        if not m:
            continue
        key = m.group("key")
        if table == "phase1":
            variable, variant = PHASE1_ROWS.get(key, ("?", key.split("-", 1)[1]))
            variant = size if key in RESOLUTION_ROWS and size else variant
            order = list(PHASE1_ROWS).index(key) if key in PHASE1_ROWS else len(PHASE1_ROWS)
            return "phase1", key, (key.split("-", 1)[0], variable, variant), (order, key)
        if table == "phase5":
            order = list(PHASE5_ROWS).index(key) if key in PHASE5_ROWS else len(PHASE5_ROWS)
            return "phase5", key, (PHASE5_ROWS.get(key, key),), (order, key)
        if table in ("s004", "s001", "s003"):
            labels = {"s004": S004_ROWS, "s001": S001_ROWS, "s003": S003_ROWS}[table]
            order = list(labels).index(key) if key in labels else len(labels)
            return table, key, (labels.get(key, key),), (order, key)
        phase = f"phase{key.split('.')[0]}"
        major, minor = key.split(".")
        label = f"+ {size}" if key in RESOLUTION_ROWS and size else STEP_LABELS.get(key, name)
        return phase, key, (key, label), (int(major), int(minor))
    return "other", name, (name, family or "?"), (0, name)


# ---------------------------------------------------------------------------------------------
# Rows: one metrics.json each
# ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    table: str
    key: str
    lead: tuple[str, ...]
    order: tuple
    metrics: dict
    metrics_path: Path
    export_path: Path | None
    run_dir: Path | None
    flag: str = ""                                   # footnote mark when its settings differ from the table's
    figures: dict = field(default_factory=dict)      # kind -> Path of a figure (filled by compare.py)

    @property
    def short_label(self) -> str:
        """Row code + what it is, e.g. '2.1 DCGAN', '1A 128×128' (figure captions and legends)."""
        return self.lead[0] if self.table in ("phase5", "s004", "s001", "s003", "other") else f"{self.lead[0]} {self.lead[-1]}"

    @property
    def is_floor(self) -> bool:
        """Training photos scored against the held-out photos (evaluate.py --real-floor), not a model."""
        return self.metrics["source"].get("kind") == "floor"

    @property
    def family(self) -> str | None:
        return self.metrics["source"].get("family")

    def value(self, metric: str):
        """A metric's value: a name in metrics.json's 'metrics', or a dotted path into the whole file for the
        family-specific blocks ('translate.xy.metrics.fid.value', 'per_class.mean_class_fid'); None if absent."""
        if "." not in metric:   # density/coverage/fd_dinov2 are absent from files written before they existed
            return (self.metrics["metrics"].get(metric) or {}).get("value")
        node = self.metrics
        for part in metric.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def metrics_file_for(path: Path) -> tuple[Path | None, str]:
    """(metrics.json, '') for an input path, or (None, why not) — the conventions of evaluate.py's --out."""
    if path.is_file():
        if path.suffix == ".safetensors":
            m = path.with_name(path.stem + "_eval") / "metrics.json"
            return (m, "") if m.is_file() else (None, f"{path} has no evaluation ({m} missing): run "
                                                     f"`python evaluate.py --ckpt {path}`")
        return path, ""
    if (path / "metrics.json").is_file():
        return path / "metrics.json", ""
    if (path / "export.safetensors").is_file():
        return metrics_file_for(path / "export.safetensors")
    return None, f"{path}: no metrics.json, export_eval/metrics.json or export.safetensors"


def find_metrics_files(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Expand inputs (metrics.json, export files, run directories, or folders of run directories)."""
    found, skipped = [], []
    for text in inputs:
        path = Path(text)
        if not path.exists():
            raise CompareError(f"{path} does not exist")
        m, why = metrics_file_for(path)
        if m is not None:
            found.append(m)
            continue
        if path.is_dir() and not (path / "export.safetensors").exists():
            # A folder of runs (e.g. runs/): every child that is a run or an evaluation.
            children = [c for c in sorted(path.iterdir()) if c.is_dir()]
            hits = [(c, *metrics_file_for(c)) for c in children]
            runs = [(c, m, w) for c, m, w in hits if m is not None or (c / "export.safetensors").exists()]
            if runs:
                found += [m for _, m, _ in runs if m is not None]
                skipped += [w for _, m, w in runs if m is None]
                continue
        skipped.append(why)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique, skipped


def locate_export(metrics: dict, metrics_path: Path) -> Path | None:
    """The evaluated export: the path recorded in metrics.json, else the default <stem>_eval/ layout."""
    src = metrics["source"]
    if src.get("kind") != "export":
        return None
    recorded = Path(src.get("path") or "")
    if recorded.is_file():
        return recorded
    folder = metrics_path.parent
    if folder.name.endswith("_eval"):
        guess = folder.with_name(folder.name[:-len("_eval")] + ".safetensors")
        if guess.is_file():
            return guess
    return None


def locate_run_dir(export: Path | None) -> Path | None:
    """Run directory of an export (it holds config.json): the export's folder, or its parent for exports/."""
    if export is None:
        return None
    for d in (export.parent, export.parent.parent):
        if (d / "config.json").is_file():
            return d
    return None


def evaluated_run_dir(metrics_path: Path) -> Path | None:
    """<run>/export_eval/metrics.json without its export (e.g. the rows/<row>/ copies scripts/cpu_study.sh keeps
    with config.json and stats.jsonl): the run directory, so the row keeps its run name."""
    folder = metrics_path.parent
    if folder.name.endswith("_eval") and (folder.parent / "config.json").is_file():
        return folder.parent
    return None


def run_name_of(metrics_path: Path, export: Path | None, run_dir: Path | None) -> str:
    if run_dir is not None:
        try:
            name = json.loads((run_dir / "config.json").read_text()).get("name")
        except (OSError, ValueError):
            name = None
        name = name or run_dir.name
        # An evaluated snapshot (exports/stepN) is its own row, named after its step.
        return name if export is None or export.parent == run_dir else f"{name}@{export.stem}"
    if export is not None:
        return export.stem
    return metrics_path.parent.name


def load_rows(metrics_files: list[Path]) -> tuple[list[Row], list[str]]:
    """Rows from metrics files; unreadable files and duplicate run names are skipped with a reason."""
    rows, skipped = [], []
    for path in metrics_files:
        try:
            metrics = read_metrics(path)
        except MetricsFileError as e:
            skipped.append(str(e))
            continue
        export = locate_export(metrics, path)
        run_dir = locate_run_dir(export) or evaluated_run_dir(path)
        name = run_name_of(path, export, run_dir)
        if metrics["source"].get("kind") == "floor":  # placed beside the rows it is the floor of (group_rows)
            rows.append(Row(name, "floor", name, (), (), metrics, path, None, None))
            continue
        table, key, lead, order = classify(name, metrics["source"].get("family"), samples_resolution(metrics))
        rows.append(Row(name, table, key, lead, order, metrics, path, export, run_dir))
    by_name: dict[str, Row] = {}
    for row in rows:
        other = by_name.get(row.name)
        if other is None:
            by_name[row.name] = row
            continue
        newer, older = (row, other) if row.metrics["created"] >= other.metrics["created"] else (other, row)
        by_name[row.name] = newer
        skipped.append(f"{older.metrics_path}: run name {row.name!r} also evaluated in {newer.metrics_path} "
                       "(newer; kept)")
    return list(by_name.values()), skipped


def reference_of(metrics: dict) -> tuple:
    """What a real-vs-real floor shares with the rows it is the floor of: the same held-out images (their pixels'
    hash fixes split and resolution), the same sample and reference counts, the same feature network."""
    real = metrics["real"]
    return (real.get("split_sha256"), real.get("pixels_sha256"), real.get("n"), metrics["samples"]["n"],
            metrics["feature_extractor"].get("sha256"))


def floor_row(floor: Row, spec: TableSpec, several: bool) -> Row:
    """A floor (evaluate.py --real-floor) as a row of ``spec``'s table, after the models."""
    res = floor.metrics["samples"].get("resolution")
    what = f"training photos vs held-out, {res}×{res}" + (f" ({data_name(floor.metrics['source']['path'])})"
                                                            if several else "")
    lead = ("Real photos", *([""] * (len(spec.lead) - 2)), what) if len(spec.lead) > 1 else (f"Real photos: {what}",)
    return replace(floor, table=spec.name, lead=lead, order=(math.inf, res or 0, floor.name))


def group_rows(rows: list[Row], wanted: str = "all") -> tuple[dict[str, list[Row]], list[str]]:
    """({table: rows in plan order, each followed by its real-vs-real floor rows}, unplaced floors); tables in plan
    order; ``wanted`` is a table name or 'all'."""
    floors = [r for r in rows if r.table == "floor"]
    placed, tables = set(), {}
    for name in TABLE_ORDER:
        if wanted not in ("all", name):
            continue
        members = sorted((r for r in rows if r.table == name), key=lambda r: r.order)
        if not members:
            continue
        refs = {reference_of(m.metrics) for m in members}
        mine = [f for f in floors if reference_of(f.metrics) in refs]
        placed.update(f.name for f in mine)
        tables[name] = members + sorted((floor_row(f, TABLES[name], len(mine) > 1) for f in mine),
                                        key=lambda r: r.order)
    unplaced = [f"{f.metrics_path}: a real-vs-real floor whose held-out set and counts match no table row"
                for f in floors if f.name not in placed and wanted == "all"]
    return tables, unplaced


# ---------------------------------------------------------------------------------------------
# Evaluation settings: what a table states, and what makes rows incomparable
# ---------------------------------------------------------------------------------------------

def pr_features(metrics: dict) -> dict:
    """The network precision/recall were computed on: {"label", "name", "sha256", "k"}.  Files written before
    metric entries named their features computed P/R on the FID network (feature_extractor)."""
    entry, fe = metrics["metrics"].get("precision") or {}, metrics["feature_extractor"]
    if entry.get("features"):
        return {"label": entry["features"], "name": entry.get("features_name"), "sha256": entry.get("features_sha256"),
                "k": entry.get("k")}
    return {"label": fe.get("label") or fe.get("name"), "name": fe.get("name"), "sha256": fe.get("sha256"),
            "k": entry.get("k")}


def eval_settings(metrics: dict) -> dict:
    real, fe = metrics["real"], metrics["feature_extractor"]
    pr = pr_features(metrics)
    return {"num_samples": metrics["samples"]["n"], "real_source": real.get("source"), "split": real.get("split"),
            "split_sha256": real.get("split_sha256"), "num_real": real.get("n"),
            "extractor": fe.get("name"), "extractor_sha256": fe.get("sha256"), "fid_mode": metrics["fid_mode"],
            "mode": metrics["samples"].get("mode", "sample"), "pr_extractor": pr["name"],
            "pr_extractor_sha256": pr["sha256"]}


def settings_key(metrics: dict) -> tuple:
    return tuple(sorted(eval_settings(metrics).items()))


def data_name(source) -> str:
    """A data source as a table names it: the folder's name, never the path on the machine that made the run."""
    return Path(str(source)).name if source not in (None, "synthetic") else str(source)


def describe_settings(s: dict, seeds: list | None = None, pr: dict | None = None) -> str:
    """``pr``: pr_features() of a row with these settings (says what precision/recall were computed on)."""
    s = {**s, "real_source": data_name(s.get("real_source"))}
    seed = "" if not seeds else f" (seed {', '.join(str(x) for x in seeds)})"
    pr_text = "" if not pr else (f"; precision/recall on `{pr['label']}` features (sha256 "
                                 f"`{str(pr['sha256'])[:12]}`, k={pr['k'] if pr['k'] is not None else '?'})")
    if s.get("mode") == "translate":
        return (f"{s['num_samples']} translated held-out images per model (both directions) vs {s['num_real']} "
                f"held-out images of the target domains: `{s['real_source']}` (splits sha256 "
                f"`{str(s['split_sha256'])[:12]}`); features `{s['extractor']}` (sha256 "
                f"`{str(s['extractor_sha256'])[:12]}`), FID mode {s['fid_mode']}{pr_text}")
    return (f"{s['num_samples']} generated samples per model{seed} vs {s['num_real']} real images: "
            f"`{s['real_source']}` {s['split']} split (sha256 `{str(s['split_sha256'])[:12]}`); "
            f"features `{s['extractor']}` (sha256 `{str(s['extractor_sha256'])[:12]}`), FID mode {s['fid_mode']}"
            f"{pr_text}")


FLAG_MARKS = ("†", "‡", "§", "¶", "#", "**", "††", "‡‡")


def flag_mixed_settings(rows: list[Row]) -> tuple[dict, dict[str, dict]]:
    """Table settings = the most common among its rows; others get a mark. Returns (settings, {mark: settings})."""
    counts = Counter(settings_key(r.metrics) for r in rows)
    main_key = max(counts, key=lambda k: (counts[k], -min(i for i, r in enumerate(rows)
                                                           if settings_key(r.metrics) == k)))
    marks: dict[tuple, str] = {}
    for r in rows:
        k = settings_key(r.metrics)
        if k == main_key:
            r.flag = ""
            continue
        if k not in marks:
            marks[k] = FLAG_MARKS[len(marks)] if len(marks) < len(FLAG_MARKS) else f"[{len(marks) + 1}]"
        r.flag = marks[k]
    return dict(main_key), {m: dict(k) for k, m in marks.items()}


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------

VALUE_COLUMNS = (  # (metrics.json name, header, format)
    ("fid", "FID ↓", "{:.2f}"),
    ("kid", "KID ↓", "{:.4f}"),
    ("precision", "Precision ↑", "{:.3f}"),
    ("recall", "Recall ↑", "{:.3f}"),
    ("inception_score", "IS ↑", "{:.2f}"),
    ("lpips_diversity", "LPIPS div. ↑", "{:.3f}"),
)
# Shown only in tables where some row computed them (older metrics.json files do not have them):
# FD-DINOv2 after KID (the FID → KID pair stays adjacent), density/coverage after recall.
OPTIONAL_COLUMNS = (  # (name, header, format, the column it follows)
    ("fd_dinov2", "FD-DINOv2 ↓", "{:.2f}", "kid"),
    ("density", "Density ↑", "{:.3f}", "recall"),
    ("coverage", "Coverage ↑", "{:.3f}", "density"),
)


def table_columns(spec: TableSpec, rows: list[Row]) -> list[tuple]:
    """The table's metric columns: its own (or VALUE_COLUMNS) plus the optional ones some row has a value for."""
    cols = list(spec.columns or VALUE_COLUMNS)
    for name, header, fmt, after in OPTIONAL_COLUMNS:
        if not any(r.value(name) is not None for r in rows):
            continue
        keys = [c[0] for c in cols]
        at = next((i + 1 for i, k in enumerate(keys) if k == after or k.endswith(f".{after}")), len(cols))
        cols.insert(at, (name, header, fmt))
    return cols


# ---------------------------------------------------------------------------------------------
# Biased Fréchet distances (fewer samples than feature dimensions)
# ---------------------------------------------------------------------------------------------

BIASED_MARK = "ᵇ"
FD_NAMES = {"fid": "FID", "fd_dinov2": "FD-DINOv2"}


def _node(metrics: dict, dotted: str):
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fd_counts(row: Row, column: str) -> dict | None:
    """For a column holding a Fréchet distance: {"what", "n_fake", "n_real", "dim", "biased"}; else None.

    New metrics.json entries say it themselves (``biased``, ``num_samples``, ``num_real``, ``feature_dim``); for
    files written before, the counts come from the file's samples/real sections and the FID network's dimension."""
    m = row.metrics
    if column in FD_NAMES:
        entry, what = m["metrics"].get(column), FD_NAMES[column]
        fallback = (m["samples"].get("n"), m["real"].get("n"))
    elif column.startswith("translate.") and column.endswith((".metrics.fid.value", ".untranslated_baseline.value")):
        entry, what = _node(m, column[:-len(".value")]), "FID"
        d = _node(m, ".".join(column.split(".")[:2])) or {}
        fallback = (d.get("n_translated"), (d.get("real") or {}).get("n"))
    else:
        return None
    if not isinstance(entry, dict) or entry.get("value") is None:
        return None
    if "biased" in entry:
        return {"what": what, "n_fake": entry.get("num_samples"), "n_real": entry.get("num_real"),
                "dim": entry.get("feature_dim"), "biased": bool(entry["biased"])}
    dim = (m.get("feature_extractor") or {}).get("dim") if what == "FID" else None
    n_fake, n_real = fallback
    if dim is None or n_fake is None or n_real is None:
        return None
    return {"what": what, "n_fake": n_fake, "n_real": n_real, "dim": dim, "biased": min(n_fake, n_real) <= dim}


def biased_footnote(rows: list[Row], columns: list[tuple]) -> str | None:
    """One footnote for the table's biased Fréchet distances, with their sample counts and rows."""
    groups: dict[tuple, list[str]] = {}
    for r in rows:
        for key, _, _ in columns:
            c = fd_counts(r, key)
            if c and c["biased"]:
                names = groups.setdefault((c["what"], c["n_fake"], c["n_real"], c["dim"]), [])
                if r.name not in names:
                    names.append(r.name)
    if not groups:
        return None
    parts = []
    for (what, n_fake, n_real, dim), names in groups.items():
        who = "every row" if len(names) == len(rows) else ", ".join(f"`{n}`" for n in names)
        parts.append(f"{what} from {n_fake} generated / {n_real} real images with {dim}-d features ({who})")
    return (f"{BIASED_MARK} Biased: " + "; ".join(parts) + ". With no more samples than feature dimensions the "
            "covariance estimates are singular (rank ≤ n − 1 < d) and a Fréchet distance is biased upwards by a term "
            "that shrinks like 1/n (Chong & Forsyth 2020), so it compares only with values at the same n — reportable "
            "FIDs need more than 2048 samples (Inception), FD-DINOv2 more than 1024 (ViT-L/14). KID, unbiased at "
            "any n (Bińkowski et al. 2018), is shown beside it.")


def fmt_value(v, spec: str) -> str:
    return "n/a" if v is None else spec.format(v)


def fmt_params(n) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def fmt_duration(seconds) -> str:
    if seconds is None:
        return "n/a"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def steps_cell(src: dict) -> str:
    """'1500 (7 ep)': optimizer steps and epochs of the evaluated export (empty for folders and floors)."""
    if src.get("step") is None:
        return ""
    return f"{src['step']}" + (f" ({src['epoch']} ep)" if src.get("epoch") is not None else "")


def table_cells(row: Row, notes: dict, columns: list[tuple] | None = None) -> list[str]:
    src = row.metrics["source"]
    cells = [_md_escape(c) for c in row.lead]
    cells[0] = f"{cells[0]}{row.flag}"
    for m, _, spec in (columns or TABLES[row.table].columns or VALUE_COLUMNS):
        c = fd_counts(row, m)
        cells.append(fmt_value(row.value(m), spec) + (BIASED_MARK if c and c["biased"] else ""))
    cells += [fmt_params(row.value("params_generator")), fmt_duration(row.value("train_seconds")),
              steps_cell(src), f"{row.metrics['samples']['resolution']}²"]
    if notes:
        note = notes.get(row.name) or {}
        cells += [_md_escape(note.get(k, "")) for k in NOTE_KEYS]
    return cells


def markdown_table(spec: TableSpec, rows: list[Row], notes: dict | None = None) -> str:
    notes = {r.name: notes[r.name] for r in rows if notes and r.name in notes}
    columns = table_columns(spec, rows)
    header = [*spec.lead, *(h for _, h, _ in columns), "Params (G)", "Train time", "Steps", "Res."]
    if notes:
        header += NOTE_HEADERS
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(table_cells(r, notes, columns)) + " |" for r in rows]
    return "\n".join(lines)


def table_body(spec: TableSpec, rows: list[Row], notes: dict | None = None) -> str:
    """Settings statement + table + footnotes: the part that also goes into the README."""
    settings, flagged = flag_mixed_settings(rows)
    main_rows = [r for r in rows if not r.flag]
    seeds = sorted({r.metrics["samples"].get("seed") for r in main_rows}, key=str)
    pr = pr_features(main_rows[0].metrics)
    parts = []
    if spec.blurb:
        parts.append(spec.blurb)
    parts.append(f"Evaluation: {describe_settings(settings, seeds, pr)}.")
    if not settings["extractor"] or not str(settings["extractor"]).startswith("clean-fid-inception"):
        parts.append("**These numbers use a test feature network, not Inception: they are not comparable with "
                     "published FIDs.**")
    if not str(pr["label"]).startswith("vgg16 fc2"):
        parts.append(f"Precision/recall (Kynkäänniemi et al. 2019, k-NN manifolds) are computed on `{pr['label']}` "
                     "features, not the VGG-16 fc2 features of the paper and StyleGAN2-ADA: compare them only within "
                     "this table.")
    extras = extra_features_statement(rows)
    if extras:
        parts.append(extras)
    parts.append(markdown_table(spec, rows, notes))
    biased = biased_footnote(rows, table_columns(spec, rows))
    if biased:
        parts.append(biased)
    for mark, s in flagged.items():
        marked = [r for r in rows if r.flag == mark]
        names = ", ".join(f"`{r.name}`" for r in marked)
        parts.append(f"{mark} Evaluated under different settings — not comparable with the other rows: "
                     f"{describe_settings(s, pr=pr_features(marked[0].metrics))} ({names}).")
    parts.append("n/a: not computed; the reason is in the row's metrics.json. Params (G): parameters used for "
                 "sampling. Generated by `compare.py` from metrics.json files — do not edit by hand.")
    return "\n\n".join(parts)


def extra_features_statement(rows: list[Row]) -> str:
    """What density/coverage and FD-DINOv2 were computed on, when a row has them."""
    out = []
    dc = {(e.get("features"), e.get("k")) for r in rows for e in [r.metrics["metrics"].get("density") or {}]
          if e.get("value") is not None}
    if dc:
        out.append("Density/coverage (Naeem et al. 2020) on " + ", ".join(
            f"`{f}` features (k={k})" for f, k in sorted(dc, key=str)) + ".")
    fd = {(e.get("features"), str(e.get("features_sha256"))[:12]) for r in rows
          for e in [r.metrics["metrics"].get("fd_dinov2") or {}] if e.get("value") is not None}
    if fd:
        out.append("FD-DINOv2 (Fréchet distance in DINOv2 features; Stein et al. 2023) on " + ", ".join(
            f"`{f}` (sha256 `{h}`)" for f, h in sorted(fd, key=str)) + ".")
    return " ".join(out)


def _rel(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


FIGURE_TITLES = {
    "grid": "16 samples per model (fixed seed, EMA weights)",
    "progression": "Progression over training (same noise for every snapshot)",
    "interp": "Latent interpolation (slerp between fixed latents; GIF beside each strip)",
    "failures": "Failure modes: the samples farthest from every real image in feature space "
                "(top: sample, bottom: its nearest real image)",
}


def figures_markdown(rows: list[Row], table_figures: dict, base: Path, level: str = "###") -> str:
    """Figure sections for one table; image links are relative to ``base`` (the Markdown file's folder)."""
    out = []
    for kind in ("fid_curve", "loss_curves"):
        if kind in table_figures:
            title = "FID during training (training-time FID from stats.jsonl)" if kind == "fid_curve" else \
                "Training losses"
            out.append(f"{level} {title}\n\n![{kind}]({_rel(table_figures[kind], base)})")
    for kind, title in FIGURE_TITLES.items():
        have = [r for r in rows if kind in r.figures]
        if not have:
            continue
        if kind == "grid":
            head = "| " + " | ".join(_md_escape(r.short_label) for r in have) + " |"
            sep = "|" + "|".join("---" for _ in have) + "|"
            imgs = "| " + " | ".join(f"![{r.name}]({_rel(r.figures[kind], base)})" for r in have) + " |"
            out.append(f"{level} {title}\n\n{head}\n{sep}\n{imgs}")
            continue
        items = []
        for r in have:
            line = f"**{_md_escape(r.short_label)}** (`{r.name}`)\n\n![{r.name}]({_rel(r.figures[kind], base)})"
            if kind == "interp" and "interp_gif" in r.figures:
                line += f" [GIF]({_rel(r.figures['interp_gif'], base)})"
            items.append(line)
        out.append(f"{level} {title}\n\n" + "\n\n".join(items))
    return "\n\n".join(out)


CSV_FIELDS = ("table", "key", "run", "family", "label", "fid", "fid_biased", "kid", "precision", "recall",
              "density", "coverage", "fd_dinov2", "fd_dinov2_biased", "inception_score",
              "lpips_diversity", "params_generator", "params_total", "train_seconds", "sampling_throughput", "step",
              "epoch", "resolution", "num_samples", "seed", "sample_kwargs", "real_source", "real_split",
              "split_sha256", "num_real", "extractor", "extractor_sha256", "pr_features", "pr_extractor_sha256",
              "fid_mode", "settings_flag", "metrics_path", "export_path")


def csv_text(rows: list[Row]) -> str:
    """One line per row; null metrics are empty cells (never a placeholder number)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        s, src, m = eval_settings(r.metrics), r.metrics["source"], r.metrics["metrics"]
        rec = {"table": r.table, "key": r.key, "run": r.name, "family": r.family, "label": " / ".join(r.lead[1:]) or
               r.lead[0], "step": src.get("step"), "epoch": src.get("epoch"),
               "resolution": r.metrics["samples"]["resolution"], "num_samples": s["num_samples"],
               "seed": r.metrics["samples"].get("seed"),
               "sample_kwargs": json.dumps(r.metrics["samples"].get("sample_kwargs") or {}, sort_keys=True),
               "real_source": data_name(s["real_source"]), "real_split": s["split"], "split_sha256": s["split_sha256"],
               "num_real": s["num_real"], "extractor": s["extractor"], "extractor_sha256": s["extractor_sha256"],
               "pr_features": pr_features(r.metrics)["label"], "pr_extractor_sha256": s["pr_extractor_sha256"],
               "fid_mode": s["fid_mode"], "settings_flag": r.flag, "metrics_path": str(r.metrics_path),
               "export_path": str(r.export_path) if r.export_path else ""}
        for name in ("fid", "kid", "precision", "recall", "density", "coverage", "fd_dinov2", "inception_score",
                     "lpips_diversity", "params_generator", "params_total", "train_seconds", "sampling_throughput"):
            v = (m.get(name) or {}).get("value")
            rec[name] = "" if v is None else (repr(float(v)) if isinstance(v, float) and math.isfinite(v) else v)
        for name in ("fid", "fd_dinov2"):   # true: fewer samples than feature dimensions (see the table footnote)
            c = fd_counts(r, name)
            rec[f"{name}_biased"] = "" if c is None else str(c["biased"]).lower()
        w.writerow(rec)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# README markers
# ---------------------------------------------------------------------------------------------

def marker_pattern(table: str) -> re.Pattern:
    return re.compile(rf"(<!--\s*results:{re.escape(table)}\s*-->)(.*?)(<!--\s*/results:{re.escape(table)}\s*-->)",
                      re.DOTALL)


def replace_marked(text: str, table: str, content: str) -> tuple[str, bool]:
    """Replace what lies between ``<!-- results:<table> -->`` and ``<!-- /results:<table> -->`` (kept)."""
    pat = marker_pattern(table)
    if not pat.search(text):
        return text, False
    return pat.sub(lambda m: f"{m.group(1)}\n{content.strip()}\n{m.group(3)}", text), True


# The plan's two note columns: what the run showed (its curves, grids, metrics), and the change that motivates.
NOTE_KEYS = ("observed", "motivates")
NOTE_HEADERS = ["Main observed failure", "Motivates next step"]


def read_notes(path: str | None) -> dict[str, dict]:
    """Optional notes per run name, written after looking at the runs: {"gan-2.1-dcgan": {"observed": "mode
    collapse by step 1000", "motivates": "a Wasserstein loss (2.2)"}}; a plain string is the 'observed' note."""
    if not path:
        return {}
    try:
        notes = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CompareError(f"--notes {path} not found") from None
    except (OSError, ValueError) as e:
        raise CompareError(f"--notes {path} is not readable JSON ({e})") from None
    def valid(v) -> bool:
        return isinstance(v, str) or (isinstance(v, dict) and set(v) <= set(NOTE_KEYS)
                                      and all(isinstance(x, str) for x in v.values()))
    if not isinstance(notes, dict) or not all(isinstance(k, str) and valid(v) for k, v in notes.items()):
        raise CompareError(f"--notes {path} must be a JSON object mapping run names to text or to "
                           f"{{{', '.join(repr(k) for k in NOTE_KEYS)}: text}}")
    return {k: ({"observed": v} if isinstance(v, str) else v) for k, v in notes.items()}
