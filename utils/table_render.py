"""Rendering the results tables: Markdown (settings statement, table, footnotes, figure sections), CSV, the README's
generated blocks, and the notes columns written by hand.  No torch dependency."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

from utils.table_rows import Row
from utils.table_settings import (BIASED_MARK, VALUE_COLUMNS, biased_footnote, data_name, describe_settings,
                                  eval_settings, fd_counts, flag_mixed_settings, pr_features, table_columns)
from utils.table_specs import TABLES, CompareError, TableSpec


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


def describe_sampler(metrics: dict) -> str | None:
    """A DDPM row's sampler, from what evaluate.py recorded (older metrics.json: its options only)."""
    if metrics["source"].get("family") != "ddpm":
        return None
    s = metrics["samples"].get("sampler")
    if not s:
        kw = metrics["samples"].get("sample_kwargs") or {}
        opts = ", ".join(f"{k}={v}" for k, v in sorted(kw.items()))
        return f"DDIM ({'evaluate.py ' + opts if opts else 'the export defaults'})"
    return f"DDIM, {s['steps']} steps, η = {s['eta']:g}, `{s['timestep_spacing']}` timesteps, {s['precision']}"


def sampler_statement(rows: list[Row]) -> str | None:
    """'Sampling: ...' for the rows that sample through a scheduler, grouped by identical settings."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        d = describe_sampler(r.metrics)
        if d is not None:
            groups.setdefault(d, []).append(r.lead[0])
    if not groups:
        return None
    if len(groups) == 1:
        return f"Sampling: {next(iter(groups))}."
    return "Sampling: " + "; ".join(f"{', '.join(leads)}: {d}" for d, leads in groups.items()) + "."


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
    sampling = sampler_statement(rows)
    if sampling:
        parts.append(sampling)
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


def rel_link(path: Path, base: Path) -> str:
    """``path`` as a Markdown link target from a file in folder ``base``."""
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
            out.append(f"{level} {title}\n\n![{kind}]({rel_link(table_figures[kind], base)})")
    for kind, title in FIGURE_TITLES.items():
        have = [r for r in rows if kind in r.figures]
        if not have:
            continue
        if kind == "grid":
            head = "| " + " | ".join(_md_escape(r.short_label) for r in have) + " |"
            sep = "|" + "|".join("---" for _ in have) + "|"
            imgs = "| " + " | ".join(f"![{r.name}]({rel_link(r.figures[kind], base)})" for r in have) + " |"
            out.append(f"{level} {title}\n\n{head}\n{sep}\n{imgs}")
            continue
        items = []
        for r in have:
            line = f"**{_md_escape(r.short_label)}** (`{r.name}`)\n\n![{r.name}]({rel_link(r.figures[kind], base)})"
            if kind == "interp" and "interp_gif" in r.figures:
                line += f" [GIF]({rel_link(r.figures['interp_gif'], base)})"
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
