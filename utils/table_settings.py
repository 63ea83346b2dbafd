"""What a results table states about its rows' evaluation (sample counts, reference split, feature networks),
what makes rows incomparable (their marks), its metric columns, and which Fréchet distances are biased by too few
samples.  No torch dependency."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only: table_rows imports this module
    from utils.table_rows import Row
    from utils.table_specs import TableSpec


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
# Metric columns
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


def dotted_value(metrics: dict, dotted: str):
    """The entry at a dotted path into metrics.json ('translate.xy.metrics.fid'); None if absent."""
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
        entry, what = dotted_value(m, column[:-len(".value")]), "FID"
        d = dotted_value(m, ".".join(column.split(".")[:2])) or {}
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


