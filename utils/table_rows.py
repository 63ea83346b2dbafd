"""Rows of the results tables: one evaluated export (its metrics.json) each, found from the inputs compare.py is
given, named and placed by its run directory's config.json, and grouped into the plan's tables with the
real-vs-real floors beside the rows they are the floor of.  No torch dependency."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from utils.metrics_schema import MetricsFileError, read_metrics
from utils.row_scripts import row_id, row_of_run_name
from utils.study_rows import recorded_recipe
from utils.table_settings import data_name, dotted_value
from utils.table_specs import TABLE_ORDER, TABLES, CompareError, TableSpec, classify


def samples_resolution(metrics: dict) -> int | None:
    res = metrics.get("samples", {}).get("resolution")
    return res if isinstance(res, int) else None


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
        node = dotted_value(self.metrics, metric)
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
    """<run>/export_eval/metrics.json without its export (e.g. the rows/<row>/ copies scripts/mini_study.sh keeps
    with config.json and stats.jsonl): the run directory, so the row keeps its run name."""
    folder = metrics_path.parent
    if folder.name.endswith("_eval") and (folder.parent / "config.json").is_file():
        return folder.parent
    return None


def read_config(run_dir: Path) -> dict:
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def run_identity(metrics_path: Path, export: Path | None, run_dir: Path | None) -> tuple[str, str | None]:
    """(run name, plan row): the row the trainer stored in config.json (--row, passed by the row scripts), else
    the row of the script that gives runs exactly this name (runs from before --row); None for any other run."""
    if run_dir is None:
        name = export.stem if export is not None else metrics_path.parent.name
        return name, row_of_run_name(name)
    config = read_config(run_dir)
    base = config.get("name") or run_dir.name
    # An evaluated snapshot (exports/stepN) is its own row, named after its step, in its run's plan row.
    name = base if export is None or export.parent == run_dir else f"{base}@{export.stem}"
    return name, config.get("row") or row_of_run_name(base)


def with_recipe(lead: tuple[str, ...], run_dir: Path | None) -> tuple[str, ...]:
    """A run trained with another row's recipe (the mini study's phase 5 records it in recipe.json) names that row
    in its label, e.g. 'Best GAN (2.4)' → 'Best GAN (2.1 recipe)', instead of the row the plan presumed."""
    script = recorded_recipe(run_dir)
    try:
        recipe = row_id(script) if script else None
    except (OSError, ValueError):   # a script that is not (or no longer) a row script
        recipe = None
    if recipe is None:
        return lead
    first = re.sub(r"\s*\([^)]*\)$", "", lead[0]) + f" ({recipe} recipe)"
    return (first, *lead[1:])


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
        name, plan_row = run_identity(path, export, run_dir)
        if metrics["source"].get("kind") == "floor":  # placed beside the rows it is the floor of (group_rows)
            rows.append(Row(name, "floor", name, (), (), metrics, path, None, None))
            continue
        table, key, lead, order = classify(plan_row, name, metrics["source"].get("family"),
                                           samples_resolution(metrics))
        lead = with_recipe(lead, run_dir)
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
