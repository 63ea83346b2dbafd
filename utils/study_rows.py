"""What the mini study (scripts/mini_study.sh, utils/study.py) runs: its rows with their budgets, the flags each
row gets on top of its script's own, the evaluation's settings, and the time estimate from measured speeds."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from utils.row_scripts import row_id, run_name, trainer_flags

ROOT = Path(__file__).resolve().parent.parent
SAVE_EVERY = 250
PLAN_RESOLUTION = 64   # the size the row scripts are written for (the plan's)


@dataclass(frozen=True)
class StudyRow:
    script: str                  # scripts/<script>.sh
    family: str                  # gan | vae | ddpm
    steps: int                   # budget in optimizer steps at batch 64 (before SCALE)
    flags: tuple[str, ...] = ()  # the row's own overrides (after the family's)
    candidates: tuple[str, ...] = ()   # phase 5: the ablation rows whose best recipe it retrains (see recipe_of)

    @property
    def name(self) -> str:
        """The run name the row script gives its run (its --name)."""
        return run_name(self.script)

    @property
    def resolution(self) -> int:
        return int(self.flags[self.flags.index("--resolution") + 1]) if "--resolution" in self.flags else 32


# Budgets in optimizer steps at batch 64.  Ablation rows get a family's ablation budget, phase-5 rows twice it
# (docs/plan.md, phase 5: the chosen recipes get the longer run).  Chosen from the measured speeds below so that the whole study,
# evaluation included, fits in about 8 hours on the 2-core machine (`mini_study.sh --plan` prints the estimate):
# a GAN step is 10-20x cheaper than a VAE-with-discriminator or UNet step, so GAN rows get more steps.  Phase-1
# rows (pipeline choices, DCGAN) take half a GAN row's budget, the plan's own rule when compute is short.
ABLATION_STEPS = {"gan": 1200, "vae": 800, "ddpm": 1000}


def _row(script: str, family: str, *flags: str, candidates: tuple[str, ...] = ()) -> StudyRow:
    share = 2 if candidates else 0.5 if script.startswith("phase1_") else 1
    return StudyRow(script, family, round(ABLATION_STEPS[family] * share), flags, candidates)


ROWS = (
    _row("phase1_1A_64px", "gan"),
    _row("phase1_1A_128px", "gan", "--resolution", "64"),
    _row("phase1_1B_full", "gan"),
    _row("phase1_1B_aligned", "gan"),
    _row("phase1_1C_flip", "gan"),
    _row("phase1_1C_flip-rot-jitter", "gan"),
    _row("phase1_1D_aligned", "gan"),
    _row("phase1_1D_combined", "gan"),
    _row("gan_2.1_dcgan", "gan"),
    _row("gan_2.2_wgan-gp", "gan"),
    _row("gan_2.3_wgan-gp-sn-attn", "gan"),
    _row("gan_2.4_128px", "gan", "--resolution", "64"),
    _row("vae_3.1_mse", "vae"),
    _row("vae_3.2_perceptual", "vae"),
    _row("vae_3.3_patchgan", "vae"),
    _row("ddpm_4.1_linear-eps", "ddpm"),
    _row("ddpm_4.2_cosine", "ddpm"),
    _row("ddpm_4.3_vpred", "ddpm"),
    _row("ddpm_4.4_wide", "ddpm", "--base-channels", "48"),
    # Phase 5 retrains "the best from each family" (docs/plan.md): here the family's ablation row with the lowest
    # measured FID, not the row the plan expects to win (its 2.4 is a resolution change, and phase 5 compares at
    # one resolution).  scripts/phase5_*.sh keep the plan's presumed winners for full-size runs.
    _row("phase5_gan", "gan", candidates=("gan_2.1_dcgan", "gan_2.2_wgan-gp", "gan_2.3_wgan-gp-sn-attn")),
    _row("phase5_vae", "vae", candidates=("vae_3.1_mse", "vae_3.2_perceptual", "vae_3.3_patchgan")),
    _row("phase5_ddpm", "ddpm", candidates=("ddpm_4.1_linear-eps", "ddpm_4.2_cosine", "ddpm_4.3_vpred",
                                            "ddpm_4.4_wide")),
)
ROWS_BY_SCRIPT = {r.script: r for r in ROWS}

# Narrower nets than the plan's (GAN 64 → 32 channels, VAE 64 → 32, UNet 128 → 32 with one block per level; row
# 4.4 stays 1.5× row 4.1's width, as 192 is to 128).
FAMILY_FLAGS = {"gan": ("--ngf", "32", "--ndf", "32"), "vae": ("--base-channels", "32"),
                "ddpm": ("--base-channels", "32", "--layers-per-block", "1")}
DDIM_STEPS = 25   # evaluation sampler of the DDPM rows (DDIM, η = 0); training-time FID uses half as many
# Samples per row and held-out photos: more than Inception's 2048 feature dimensions, so that neither covariance
# is singular (utils.metric_math.fd_sample_counts marks a Fréchet distance from n ≤ d samples as biased).
SAMPLES = 2100
FID_POINTS = 2          # training-time FID at each half of the budget: does the row still improve?
FID_SAMPLES = 128       # ... on this many samples (biased upwards, but the same count at both points)

# Seconds per training step at batch 64, fp32, 32² (64² for the two size rows), measured with
# `mini_study.sh --calibrate` on the 2-core AMD EPYC the study ran on (40 steps, the last 20 timed); a
# calibration of your machine (OUT/calibration.json) replaces them in the estimate.
SECONDS_PER_STEP = {
    "phase1_1A_64px": 0.073, "phase1_1A_128px": 0.353, "phase1_1B_full": 0.066, "phase1_1B_aligned": 0.079,
    "phase1_1C_flip": 0.082, "phase1_1C_flip-rot-jitter": 0.076, "phase1_1D_aligned": 0.080,
    "phase1_1D_combined": 0.076, "gan_2.1_dcgan": 0.072, "gan_2.2_wgan-gp": 0.219, "gan_2.3_wgan-gp-sn-attn": 0.489,
    "gan_2.4_128px": 1.308, "vae_3.1_mse": 0.139, "vae_3.2_perceptual": 0.833, "vae_3.3_patchgan": 1.563,
    "ddpm_4.1_linear-eps": 0.746, "ddpm_4.2_cosine": 0.793, "ddpm_4.3_vpred": 0.758, "ddpm_4.4_wide": 1.718,
}
# Inception-v3 features per second (299² inputs, fp32, 2 threads; same machine): the evaluation's main cost.
INCEPTION_IMAGES_PER_SECOND = 6.5
# A sampling step of a UNet costs about a third of a training step (forward only) per image.
SAMPLE_STEP_SHARE = 1 / 3
# Start-up of a row's trainer and of its evaluate.py (imports, data, nets): about 10 s each measured.
STARTUP_SECONDS = 20


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise SystemExit(f"error: {name} must be an integer, got {os.environ[name]!r}") from None


@dataclass
class Settings:
    out: Path
    results: Path
    scale: float
    samples: int
    features: str               # inception | tiny (tests)
    readme: str

    @classmethod
    def from_env(cls) -> Settings:
        try:
            scale = float(os.environ.get("SCALE", 1))
        except ValueError:
            raise SystemExit(f"error: SCALE must be a number, got {os.environ['SCALE']!r}") from None
        if scale <= 0:
            raise SystemExit("error: SCALE must be > 0")
        return cls(Path(os.environ.get("OUT", "runs/mini-study")),
                   Path(os.environ.get("RESULTS", "docs/results/mini-study")), scale,
                   env_int("SAMPLES", SAMPLES), os.environ.get("FEATURES", "inception"),
                   os.environ.get("README", "README.md"))

    def steps(self, row: StudyRow) -> int:
        return max(4, round(row.steps * self.scale))


def row_flags(row: StudyRow, s: Settings, steps: int) -> list[str]:
    """The flags appended to the row script's own: scale, budget and evaluation cadence, nothing about the method
    except the narrower nets and the step-counted schedules shrunk with the run."""
    quarter = max(1, steps // 4)
    flags = ["--resolution", "32", *FAMILY_FLAGS[row.family], *row.flags,
             "--batch-size", "64", "--mixed-precision", "no", "--n-real", str(s.samples), "--max-steps", str(steps),
             "--save-every", str(min(SAVE_EVERY, steps)), "--export-every", str(quarter),
             "--sample-every", str(quarter), "--log-every", str(min(50, quarter)),
             # Training-time FID: biased upwards at FID_SAMPLES, but the same count at every point, so it shows
             # whether a row improves; the headline FID is evaluate.py's.
             "--fid-every", str(max(1, steps // FID_POINTS)), "--fid-samples", str(min(FID_SAMPLES, s.samples)),
             "--fid-extractor", s.features, "--resume", "latest"]
    if row.family == "ddpm":
        flags += scaled_attention(row.script, row.resolution)
        flags += ["--warmup-steps", str(max(1, steps // 20)), "--fid-sample-steps", str(DDIM_STEPS // 2)]
    if "--disc-start" in trainer_flags(row.script):
        flags += ["--disc-start", str(max(1, steps // 20))]
    return flags


def scaled_attention(script: str, resolution: int) -> list[str]:
    """The script's UNet attention resolutions scaled with the image: a 64² row's attention at 8,16 is at the
    same depth of a 32² UNet at 4,8 (the same net, half the image), not at full resolution, where attention over
    1024 positions would dominate the step."""
    flags = trainer_flags(script)
    if "--attn-res" not in flags:
        return []
    res = [int(r) for r in flags[flags.index("--attn-res") + 1].split(",") if r]
    scaled = sorted({max(1, r * resolution // PLAN_RESOLUTION) for r in res})
    return ["--attn-res", ",".join(map(str, scaled))]


def eval_args(row: StudyRow, s: Settings) -> list[str]:
    args = ["--num-samples", str(s.samples), "--n-real", str(s.samples), "--batch-size", "128",
            "--save-samples", "64", "--feature-extractor", s.features]
    return args + (["--sample-steps", str(DDIM_STEPS)] if row.family == "ddpm" else [])


def metrics_path(s: Settings, row: StudyRow) -> Path:
    return s.out / row.name / "export_eval" / "metrics.json"


def finished(path: Path, steps: int | None, samples: int) -> bool:
    """An evaluation of the run at (at least) its budget with the study's sample count."""
    try:
        m = json.loads(path.read_text())
        return (steps is None or int(m["source"]["step"]) >= steps) and int(m["samples"]["n"]) == samples
    except (OSError, ValueError, KeyError, TypeError):
        return False


def recipe_of(s: Settings, row: StudyRow) -> tuple[StudyRow | None, dict]:
    """The row whose script and flags ``row`` trains with, and the evaluated FID of each candidate.

    An ablation row is its own recipe.  A phase-5 row takes the candidate with the lowest FID at the study's
    evaluation (SAMPLES vs SAMPLES held-out photos, the same for every candidate); None until every candidate
    has been evaluated at its budget."""
    if not row.candidates:
        return row, {}
    fids = {}
    for script in row.candidates:
        cand = ROWS_BY_SCRIPT[script]
        if not finished(metrics_path(s, cand), s.steps(cand), s.samples):
            return None, fids
        fids[script] = float(json.loads(metrics_path(s, cand).read_text())["metrics"]["fid"]["value"])
    return ROWS_BY_SCRIPT[min(fids, key=fids.get)], fids


def recorded_recipe(run_dir: Path | None) -> str | None:
    """The row script a phase-5 run directory was trained with (its recipe.json), None if it records none."""
    try:
        return str(json.loads((run_dir / "recipe.json").read_text())["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def row_done(s: Settings, row: StudyRow) -> bool:
    """Evaluated at its budget and, for phase 5, trained with the recipe the candidates' results choose now."""
    if not finished(metrics_path(s, row), s.steps(row), s.samples):
        return False
    return not row.candidates or (recipe_of(s, row)[0] or row).script == recorded_recipe(s.out / row.name)


def train_command(row: StudyRow, s: Settings, recipe: StudyRow) -> list[str]:
    """The recipe's row script with the study's flags for ``row``'s budget; a phase-5 row's own run name and row."""
    cmd = ["bash", f"scripts/{recipe.script}.sh", *row_flags(recipe, s, s.steps(row))]
    return cmd + (["--name", row.name, "--row", row_id(row.script)] if recipe is not row else [])


def estimate_seconds(row: StudyRow, s: Settings, calibration: dict) -> float | None:
    """Training, training-time FID and evaluation of one row, from the measured speeds of its recipe (a phase-5
    row whose recipe is not chosen yet: its slowest candidate's)."""
    recipe = recipe_of(s, row)[0]
    speeds = [calibration.get(r, SECONDS_PER_STEP.get(r))
              for r in ([recipe.script] if recipe is not None else row.candidates)]
    per_step = None if None in speeds else max(speeds)
    if per_step is None:
        return None

    def scoring(n: int, sampler_steps: int) -> float:   # sampling (UNets only) + Inception features of n images
        sampling = n / 64 * sampler_steps * per_step * SAMPLE_STEP_SHARE if row.family == "ddpm" else 0.0
        return sampling + n / INCEPTION_IMAGES_PER_SECOND
    return (STARTUP_SECONDS + s.steps(row) * per_step + FID_POINTS * scoring(min(FID_SAMPLES, s.samples), DDIM_STEPS // 2)
            + scoring(s.samples, DDIM_STEPS))


def fmt_minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
