"""The plan's results tables and their rows (docs/plan.md), and how a run is placed in one.

A run's place is its plan row: the ``--row`` its row script passes to the trainer (stored in config.json), or,
for runs made before that flag or without it, the row of the script that gives the run its name
(``utils.row_scripts.row_of_run_name``).  Runs of no row land in the ``other`` table.  No torch dependency.
"""
from __future__ import annotations

from dataclasses import dataclass


class CompareError(SystemExit):
    """Bad input to compare.py (no metrics found, unreadable notes, missing README); one-line message."""

    def __init__(self, msg: str):
        super().__init__(f"error: {msg}")


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


@dataclass(frozen=True)
class PlanRow:
    table: str
    key: str                     # the row's key in its table (results CSV 'key' column)
    lead: tuple[str, ...]        # identifying cells, in the words of the plan's tables
    sized: str = ""              # the row's variable is the image size: its last cell is this, from the run's size


# Every row of the plan's tables, by the id the row scripts pass as --row; the order here is the row order.
# Sized rows are labelled with the size the run actually trained at (the CPU-scale studies run the 64/128 px
# rows at 32/64 px).
PLAN_ROWS = {
    "1A-64px": PlanRow("phase1", "1A-64px", ("1A", "Resolution", "64×64"), sized="{size}"),
    "1A-128px": PlanRow("phase1", "1A-128px", ("1A", "Resolution", "128×128"), sized="{size}"),
    "1B-full": PlanRow("phase1", "1B-full", ("1B", "Face crop + alignment", "Full image")),
    "1B-aligned": PlanRow("phase1", "1B-aligned", ("1B", "Face crop + alignment", "MTCNN-aligned")),
    "1C-flip": PlanRow("phase1", "1C-flip", ("1C", "Augmentation", "H-flip only")),
    "1C-flip-rot-jitter": PlanRow("phase1", "1C-flip-rot-jitter",
                                  ("1C", "Augmentation", "H-flip + rotation ±5° + mild colour jitter")),
    "1D-aligned": PlanRow("phase1", "1D-aligned", ("1D", "Combined dataset", "Aligned only")),
    "1D-combined": PlanRow("phase1", "1D-combined", ("1D", "Combined dataset", "Aligned + raw mixed")),
    "2.1": PlanRow("phase2", "2.1", ("2.1", "DCGAN")),
    "2.2": PlanRow("phase2", "2.2", ("2.2", "WGAN-GP")),
    "2.3": PlanRow("phase2", "2.3", ("2.3", "WGAN-GP + SN + Attn")),
    "2.4": PlanRow("phase2", "2.4", ("2.4", "+ 128×128"), sized="+ {size}"),
    "3.1": PlanRow("phase3", "3.1", ("3.1", "VAE MSE")),
    "3.2": PlanRow("phase3", "3.2", ("3.2", "+ Perceptual")),
    "3.3": PlanRow("phase3", "3.3", ("3.3", "+ PatchGAN")),
    "4.1": PlanRow("phase4", "4.1", ("4.1", "DDPM linear + ε")),
    "4.2": PlanRow("phase4", "4.2", ("4.2", "+ cosine")),
    "4.3": PlanRow("phase4", "4.3", ("4.3", "+ v-pred")),
    "4.4": PlanRow("phase4", "4.4", ("4.4", "+ wider")),
    "5-gan": PlanRow("phase5", "gan", ("Best GAN (2.4)",)),
    "5-vae": PlanRow("phase5", "vae", ("Best VAE (3.3)",)),
    "5-ddpm": PlanRow("phase5", "ddpm", ("Best DDPM (4.4)",)),
    "s004-dcgan": PlanRow("s004", "dcgan", ("DCGAN",)),
    "s004-lsgan": PlanRow("s004", "lsgan", ("LSGAN",)),
    "s004-wgan-clip": PlanRow("s004", "wgan-clip", ("WGAN (weight clipping)",)),
    "s001-dc": PlanRow("s001", "s001-dc", ("DCGAN discriminator",)),
    "s001-patch": PlanRow("s001", "s001-patch", ("PatchGAN discriminator",)),
    "s001-smiling": PlanRow("s001", "smiling", ("not smiling ↔ smiling (PatchGAN + identity loss)",)),
    "s003-smiling": PlanRow("s003", "smiling", ("ACGAN on Smiling (BCE + class CE)",)),
    # s002 has no table of its own (docs/plan.md): its row is listed with the other runs.
    "s002-stylegan-lite": PlanRow("other", "", ()),
}


def classify(row: str | None, name: str, family: str | None = None, resolution: int | None = None
             ) -> tuple[str, str, tuple[str, ...], tuple]:
    """(table, key, lead cells, sort key) of a run of plan row ``row`` (None or not a table's row: 'other', keyed
    by run name).  ``resolution``: the size the run's samples have, which labels the rows whose variable is the
    size."""
    plan = PLAN_ROWS.get(row or "")
    if plan is None or plan.table == "other":
        return "other", name, (name, family or "?"), (0, name)
    lead = plan.lead
    if plan.sized and resolution:
        lead = (*lead[:-1], plan.sized.format(size=f"{resolution}×{resolution}"))
    return plan.table, plan.key, lead, (list(PLAN_ROWS).index(row), plan.key)
