"""Model cards: a README.md beside a run's export.safetensors, in the Hugging Face model-card format.

YAML front matter (library_name, license, tags, pipeline_tag, metrics) and Markdown written only from the
export's own metadata and the latest metrics.json that evaluated *this* file (its sha256 must match), so the run
folder can be uploaded to the Hub as it is.  ``save_export`` writes it for every ``export.safetensors``;
``evaluate.py`` rewrites it with the new metrics.  Nothing here is typed by hand, and nothing is invented: a
metric that was not computed says so, and a card without an evaluation says how to make one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CARD_NAME = "README.md"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_NOTE = ("CelebA (Liu et al. 2015) is available for non-commercial research purposes only, under the "
               f"agreement on its page ({CELEBA_URL}): the images are not owned by its authors, and neither the data "
               "nor models trained on it may be used commercially. No face photos are stored in this folder.")
# Grids the trainers write next to the export, right after it (train_gan/vae/ddpm: samples.png; acgan:
# class_grid.png; cyclegan: samples_xy.png and samples_yx.png).
GRID_FILES = ("samples.png", "class_grid.png", "samples_xy.png", "samples_yx.png")
FAMILY_GRIDS = {"acgan": ("class_grid.png",), "cyclegan": ("samples_xy.png", "samples_yx.png")}
PIPELINE_TAGS = {"cyclegan": "image-to-image"}
FAMILY_TAGS = {"gan": ["gan"], "acgan": ["gan", "conditional-gan"], "cyclegan": ["gan", "cyclegan", "image-to-image"],
               "vae": ["vae"], "ddpm": ["diffusion", "ddpm"]}
METRIC_LABELS = {  # metrics.json name -> (label, number format)
    "fid": ("FID ↓", "{:.3f}"), "kid": ("KID ↓", "{:.5f}"), "precision": ("Precision ↑", "{:.3f}"),
    "recall": ("Recall ↑", "{:.3f}"), "density": ("Density ↑", "{:.3f}"), "coverage": ("Coverage ↑", "{:.3f}"),
    "fd_dinov2": ("FD-DINOv2 ↓", "{:.2f}"), "inception_score": ("Inception Score ↑", "{:.3f}"),
    "lpips_diversity": ("LPIPS diversity ↑", "{:.4f}"), "params_generator": ("Parameters (sampling)", "{:,}"),
    "params_total": ("Parameters (total)", "{:,}"), "train_seconds": ("Training time (s)", "{:.0f}"),
    "sampling_throughput": ("Sampling throughput", "{:.1f}"),
}
# Hugging Face metric ids for the front matter's `metrics:` list.
HF_METRIC_IDS = {"fid": "fid", "kid": "kid", "precision": "precision", "recall": "recall",
                 "inception_score": "inception_score", "density": "density", "coverage": "coverage",
                 "fd_dinov2": "fd_dinov2", "lpips_diversity": "lpips"}


def _yaml_scalar(v) -> str:
    """A YAML scalar: JSON's string/number syntax is valid YAML flow syntax, and always quoted safely."""
    return json.dumps(v, ensure_ascii=False)


def _front_matter(fields: dict) -> str:
    lines = ["---"]
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            lines.append(f"{k}:")
            lines += [f"- {_yaml_scalar(x)}" for x in v]
        else:
            lines.append(f"{k}: {_yaml_scalar(v)}")
    lines.append("---")
    return "\n".join(lines)


def _md(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _duration(seconds: float) -> str:
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h")


def is_celeba(source: str | None, data: str | None) -> bool:
    """Whether the training data is (derived from) CelebA: anything but the built-in synthetic faces — CelebA is the
    project's only real data set (README, Data licence)."""
    return (source or data or "synthetic") != "synthetic"


def find_metrics(export_path: Path) -> Path | None:
    """evaluate.py's default output for this export: <stem>_eval/metrics.json."""
    m = export_path.with_name(export_path.stem + "_eval") / "metrics.json"
    return m if m.is_file() else None


def metrics_for(export_path: Path, metrics_path: Path | None) -> tuple[dict | None, str]:
    """(metrics.json of this very export or None, why not): a metrics.json of an earlier file of the same name
    (e.g. before a resumed run re-exported) must not describe this one."""
    from utils.feature_nets import file_sha256
    from utils.metrics_schema import MetricsFileError, read_metrics

    metrics_path = metrics_path or find_metrics(export_path)
    if metrics_path is None:
        return None, (f"not evaluated yet: run `python evaluate.py --ckpt {export_path.name}` (writes "
                      f"{export_path.stem}_eval/metrics.json and refreshes this card)")
    try:
        m = read_metrics(metrics_path)
    except MetricsFileError as e:
        return None, f"{metrics_path.name} is unreadable ({e})"
    if m["source"].get("sha256") != file_sha256(export_path):
        return None, (f"{metrics_path} evaluated another version of this file; run evaluate.py again")
    return m, ""


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _metric_rows(m: dict, base: Path) -> list[str]:
    rows = ["| Metric | Value | Features | Samples (generated / real) | Notes |", "|---|---|---|---|---|"]
    samples, real = m["samples"], m["real"]
    for name, (label, spec) in METRIC_LABELS.items():
        e = m["metrics"].get(name)
        if e is None:
            continue
        v = e.get("value")
        if v is None:
            value, notes = "n/a", e.get("not_computed", "")
        else:
            value = spec.format(int(v) if spec == "{:,}" else v)
            notes = []
            if e.get("biased"):
                notes.append(f"biased: n ≤ {e.get('feature_dim')} feature dimensions (compare at equal n; KID is "
                             "unbiased)")
            if e.get("k") is not None:
                notes.append(f"k = {e['k']}")
            if e.get("unit"):
                notes.append(str(e["unit"]))
            notes = "; ".join(notes)
        features = e.get("features") or ""
        if features and e.get("features_sha256"):
            features += f" (sha256 `{str(e['features_sha256'])[:12]}`)"
        counts = ""
        if name in ("fid", "kid", "precision", "recall", "density", "coverage", "fd_dinov2", "inception_score",
                    "lpips_diversity") and v is not None:
            counts = (f"{e.get('num_samples', e.get('num_images', samples.get('n')))} / "
                      f"{e.get('num_real', real.get('n')) if name not in ('inception_score', 'lpips_diversity') else '—'}")
        rows.append(f"| {label} | {value} | {_md(features)} | {counts} | {_md(notes)} |")
    return rows


def model_card_text(export_path: str | os.PathLike, metrics_path: str | os.PathLike | None = None) -> str:
    """The card's text for an export (and the metrics.json that evaluated it, if any)."""
    from utils.export import read_export_metadata
    from utils.feature_nets import file_sha256

    export_path = Path(export_path)
    base = export_path.parent
    meta = read_export_metadata(export_path)
    family, tc, extra = meta["family"], meta["train_config"], meta.get("extra") or {}
    parts = [extra[k] or {} for k in ("data_x", "data_y") if k in extra] or [extra.get("data") or {}]
    data = parts[0]
    if len(parts) == 2:   # a translator: two domains, each with its own split
        source = " ↔ ".join(f"{d.get('domain')}: {d.get('source')}" for d in parts)
        celeba = any(is_celeba(d.get("source"), None) for d in parts)
    else:
        source = data.get("source") or tc.get("data")
        celeba = is_celeba(data.get("source"), tc.get("data"))
    counts = {k: " + ".join(str(d.get(k, "?")) for d in parts) for k in ("num_train", "num_heldout")}
    m, why = metrics_for(export_path, Path(metrics_path) if metrics_path else None)
    computed = [n for n in HF_METRIC_IDS if m and (m["metrics"].get(n) or {}).get("value") is not None]
    tags = ["facegen", *FAMILY_TAGS.get(family, [family]), "faces", "pytorch", "safetensors",
            *(["celeba"] if celeba else ["synthetic-data"])]
    front = _front_matter({
        "library_name": "facegen",
        "license": "other",
        "license_name": "celeba-non-commercial-research" if celeba else "facegen-synthetic-data",
        "license_link": CELEBA_URL if celeba else None,
        "pipeline_tag": PIPELINE_TAGS.get(family, "unconditional-image-generation"),
        "tags": tags,
        "metrics": [HF_METRIC_IDS[n] for n in computed] or None,
    })
    res = meta["model_config"].get("resolution", tc.get("resolution"))
    split = " / ".join(str(d.get("split_sha256"))[:16] for d in parts if d.get("split_sha256")) or \
        str(m["real"].get("split_sha256") if m else None)[:16]
    lines = [front, "", f"# facegen {family} — {res}×{res} faces" if res else f"# facegen {family}", "",
             f"A `{family}` model trained with facegen and exported as one self-describing "
             f"safetensors file, `{export_path.name}` (sha256 `{file_sha256(export_path)[:16]}`; {meta['weights']} "
             "weights). Everything below is generated from that file's metadata and its latest `metrics.json` "
             "(`utils/model_card.py`); do not edit by hand.", "",
             "## Training", "",
             "| | |", "|---|---|",
             f"| Family | `{family}` |",
             f"| Data | `{_md(source)}` " + ("(built-in synthetic faces, no real people)" if not celeba else
                                              "(CelebA)" if "celeba" in str(source).lower() else
                                              "(real photos; see Licence)") + " |",
             f"| Resolution / crop | {res}² / {_md(data.get('crop', tc.get('crop', '?')))} |",
             f"| Split | {counts['num_train']} training / {counts['num_heldout']} held-out images; "
             f"held-out split sha256 `{split}` |",
             f"| Steps / epochs | {meta['step']} / {meta['epoch']} |",
             f"| Train time | {_duration(meta['train_seconds'])} |",
             f"| Batch size / seed | {tc.get('batch_size', '?')} / {tc.get('seed', '?')} |",
             f"| Mixed precision | {tc.get('mixed_precision', '?')} |", ""]
    lines += ["### Config", "", "Model config (rebuilds the network with `utils.export.load_export`):", "",
              "```json", json.dumps(meta["model_config"], indent=2, sort_keys=True, default=str), "```", "",
              "<details><summary>Full training config (the trainer's resolved flags)</summary>", "",
              "```json", json.dumps(tc, indent=2, sort_keys=True, default=str), "```", "", "</details>", ""]
    lines += ["## Evaluation", ""]
    if m is None:
        lines += [f"No metrics: {why}.", ""]
    else:
        s, r, fe = m["samples"], m["real"], m["feature_extractor"]
        lines += [f"From [`{_rel(Path(metrics_path or find_metrics(export_path)), base)}`]"
                  f"({_rel(Path(metrics_path or find_metrics(export_path)), base)}) ({m['created']}): "
                  f"{s['n']} samples (seed {s.get('seed')}) vs {r.get('n')} real images of `{_md(r.get('source'))}` "
                  f"({r.get('split')} split, sha256 `{str(r.get('split_sha256'))[:16]}`); FID network "
                  f"`{fe.get('name')}` (sha256 `{str(fe.get('sha256'))[:12]}`), mode {m['fid_mode']}.", ""]
        if not str(fe.get("name", "")).startswith("clean-fid-inception"):
            lines += ["**These numbers use a test feature network, not Inception: they are not comparable with "
                      "published FIDs.**", ""]
        lines += _metric_rows(m, base) + [""]
    lines += ["## Samples", ""]
    grids = [g for g in GRID_FILES if (base / g).is_file()]
    if not grids and (base / "config.json").is_file():   # a trainer's run directory: its grid follows the export
        grids = list(FAMILY_GRIDS.get(family, ("samples.png",)))
    if grids:
        lines += [f"![{g}]({g})" for g in grids] + [""]
    else:
        lines += ["No sample grid beside the export yet (the trainer writes "
                  f"{' / '.join(f'`{g}`' for g in GRID_FILES[:2])} after exporting; `evaluate.py` saves every "
                  "sample it scores as PNG).", ""]
    usage = ('images = export.model.translate(x, "xy")   # x: N×3×H×W in [-1, 1]' if family == "cyclegan" else
             "images = export.model.sample(16)           # N×3×H×W in [-1, 1]")
    lines += ["## Use", "", "```python", "from utils.export import load_export   # facegen", "",
              f'export = load_export("{export_path.name}")', usage, "```", "",
              f"`python evaluate.py --ckpt {export_path.name}` re-scores it and refreshes this card.", "",
              "## Licence", "", CELEBA_NOTE + ("" if celeba else " This model was trained on the built-in "
                                                                   "synthetic faces only; the note applies to any "
                                                                   "CelebA-trained model of this project."), ""]
    return "\n".join(lines)


def write_model_card(export_path: str | os.PathLike, metrics_path: str | os.PathLike | None = None) -> Path:
    """Write README.md beside the export (atomically); returns its path."""
    from utils.export import atomic_write_bytes

    export_path = Path(export_path)
    card = export_path.with_name(CARD_NAME)
    atomic_write_bytes(card, model_card_text(export_path, metrics_path).encode())
    return card


def parse_model_card(text: str) -> tuple[dict, str]:
    """(YAML front matter, Markdown body) of a card, as the Hub reads it (tests and tools)."""
    import yaml

    if not text.startswith("---\n"):
        raise ValueError("model card has no YAML front matter")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]), text[end + 5:]
