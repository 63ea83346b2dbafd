"""The mini study (scripts/mini_study.sh): every row of the plan's phases 1–5 at CPU scale, one at a time.

Each row is its full-size script (scripts/<row>.sh: the same flags and code paths) with flags appended after the
script's own (argparse keeps the last): the budget in steps, narrower nets, fp32, 32×32 (the plan's 64 vs 128 px
rows become 32 vs 64 px), and the schedules that are counted in steps shrunk with the run (the DDPM warm-up and
the VAE discriminator start: 1/20 of the budget, the share 10 epochs have of the plan's 200).  Phase-5 rows get
twice an ablation row's steps.  Every row is scored by evaluate.py on SAMPLES samples against the same held-out
photos (never trained on; SAMPLES of each, 2100 by default); every held-out set also gets its real-vs-real floor (evaluate.py --real-floor).

Resumable at any point: a row whose evaluation exists at its budget is skipped, an unfinished one is re-run with
``--resume latest`` (the trainers checkpoint every SAVE_EVERY steps and on SIGTERM), so the command after a stop
is the command itself.  Only subprocesses run the work; this module plans, times and reports.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.row_scripts import run_name, trainer_flags

ROOT = Path(__file__).resolve().parent.parent
SAVE_EVERY = 250
PLAN_RESOLUTION = 64   # the size the row scripts are written for (the plan's)


@dataclass(frozen=True)
class StudyRow:
    script: str                  # scripts/<script>.sh
    family: str                  # gan | vae | ddpm
    steps: int                   # budget in optimizer steps at batch 64 (before SCALE)
    flags: tuple[str, ...] = ()  # the row's own overrides (after the family's)

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


def _row(script: str, family: str, *flags: str, phase5: bool = False) -> StudyRow:
    share = 2 if phase5 else 0.5 if script.startswith("phase1_") else 1
    return StudyRow(script, family, round(ABLATION_STEPS[family] * share), flags)


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
    _row("phase5_gan", "gan", phase5=True),
    _row("phase5_vae", "vae", phase5=True),
    _row("phase5_ddpm", "ddpm", "--base-channels", "48", phase5=True),
)

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
    "phase5_gan": 0.577, "phase5_vae": 1.388, "phase5_ddpm": 1.733,
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


def estimate_seconds(row: StudyRow, s: Settings, calibration: dict) -> float | None:
    """Training, training-time FID and evaluation of one row, from the measured speeds."""
    per_step = calibration.get(row.script, SECONDS_PER_STEP.get(row.script))
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


def run_logged(cmd: list[str], log: Path, env: dict) -> int:
    """Run one step of the study with its output appended to ``log``; returns the exit status."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def selected_rows() -> list[StudyRow]:
    wanted = os.environ.get("ROWS", "").split()
    unknown = sorted(set(wanted) - {r.script for r in ROWS})
    if unknown:
        raise SystemExit(f"error: ROWS names unknown row(s) {', '.join(unknown)}; rows: "
                         f"{' '.join(r.script for r in ROWS)}")
    return [r for r in ROWS if not wanted or r.script in wanted]


def subprocess_env(s: Settings, **extra: str) -> dict:
    env = dict(os.environ, OUT=str(s.out), **extra)
    env.setdefault("FACEGEN_PROGRESS", "0")   # logs, not terminals: no progress bars in them
    return env


def align(s: Settings, raw: str, aligned: Path) -> None:
    """Plan 1B's alignment of RAW into ALIGNED at 64 px, once (align_faces.py skips photos it has done)."""
    print(f"[align] {raw} -> {aligned} (64 px; a re-run skips the photos already done)", flush=True)
    t0 = time.time()
    code = run_logged([sys.executable, "align_faces.py", "--input", raw, "--output", str(aligned), "--size", "64",
                       "--template", "plan"], s.out / "logs" / "align.log", subprocess_env(s))
    if code:
        raise SystemExit(f"error: align_faces.py failed (exit {code}); see {s.out / 'logs' / 'align.log'}")
    print(f"[align] done in {fmt_minutes(time.time() - t0)}", flush=True)


def calibrate(s: Settings, rows: list[StudyRow], env: dict) -> dict:
    """Seconds per step of every row on this machine: 40 steps each from scratch, timed over the last 20 (after
    start-up)."""
    import shutil

    out = s.out / "calibrate"
    result = load_calibration(s)   # re-calibrating some rows keeps the others' figures
    for row in rows:
        cal = Settings(out, s.results, s.scale, s.samples, s.features, "none")
        flags = [*row_flags(row, cal, 40), "--fid-every", "0", "--log-every", "20", "--save-every", "40",
                 "--export-every", "0", "--sample-every", "0"]
        shutil.rmtree(out / row.name, ignore_errors=True)   # a timing, not a run to resume
        code = run_logged(["bash", f"scripts/{row.script}.sh", *flags], out / "logs" / f"{row.script}.log",
                          {**env, "OUT": str(out), "SKIP_EVAL": "1"})
        stats = out / row.name / "stats.jsonl"
        rates = [json.loads(line)["img_per_s"] for line in stats.read_text().splitlines()
                 if '"img_per_s"' in line] if code == 0 and stats.exists() else []
        if not rates:
            print(f"[calibrate] {row.script}: failed (exit {code}); see {out / 'logs' / (row.script + '.log')}")
            continue
        result[row.script] = 64 / rates[-1]
        print(f"[calibrate] {row.script}: {result[row.script]:.3f} s/step "
              f"({s.steps(row)} steps ≈ {fmt_minutes(result[row.script] * s.steps(row))})", flush=True)
    path = s.out / "calibration.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"[calibrate] -> {path}")
    return result


def load_calibration(s: Settings) -> dict:
    try:
        return json.loads((s.out / "calibration.json").read_text())
    except (OSError, ValueError):
        return {}


def plan(s: Settings, rows: list[StudyRow], env: dict) -> list[StudyRow]:
    """Print the rows still to run with their commands and time estimates; returns them."""
    calibration = load_calibration(s)
    # Phase 5 first: the headline rows, and the longest, are done (and can be diagnosed) before the ablations.
    todo = sorted((r for r in rows if not finished(metrics_path(s, r), s.steps(r), s.samples)),
                  key=lambda r: not r.script.startswith("phase5_"))
    total, unknown = 0.0, []
    for r in rows:
        est = estimate_seconds(r, s, calibration)
        state = "done" if r not in todo else f"≈ {fmt_minutes(est)}"
        if r in todo:
            total += est or 0.0
            unknown += [] if est is not None else [r.script]
        print(f"  {r.script:28s} {s.steps(r):6d} steps  {state}")
    # Each held-out set's features once, and each floor's training photos.
    floors = 2 * len({(r.resolution, r.script == "phase1_1B_full") for r in rows}) * s.samples / INCEPTION_IMAGES_PER_SECOND
    print(f"estimated time left: {fmt_minutes(total + floors)} for {len(todo)} of {len(rows)} rows and the floors"
          + (f" (no estimate for {', '.join(unknown)}: run --calibrate)" if unknown else ""), flush=True)
    return todo


def run_row(row: StudyRow, s: Settings, env: dict) -> None:
    """Train (or resume) and evaluate one row through its script; a failure stops the study with the log's name."""
    steps = s.steps(row)
    log = s.out / "logs" / f"{row.script}.log"
    cmd = ["bash", f"scripts/{row.script}.sh", *row_flags(row, s, steps)]
    code = run_logged(cmd, log, {**env, "EVAL_ARGS": shlex.join(eval_args(row, s))})
    if code or not finished(metrics_path(s, row), steps, s.samples):
        raise SystemExit(f"error: row {row.script} failed (exit {code}); see {log}; re-run the study to resume it")


def row_data(s: Settings, row: StudyRow) -> tuple[str, int] | None:
    try:
        cfg = json.loads((s.out / row.name / "config.json").read_text())
        return str(cfg["data"]), int(cfg["resolution"])
    except (OSError, ValueError, KeyError):
        return None


def floors(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """One real-vs-real floor per (data, resolution) the rows were trained on: SAMPLES training photos vs the same
    held-out photos, scored like a row (compare.py places each under the tables whose rows share its held-out)."""
    seen = {}
    for row in rows:
        key = row_data(s, row)
        if key is not None and key not in seen and (s.out / row.name / "export.safetensors").exists():
            seen[key] = row
    for (data, res), row in seen.items():
        out = s.out / f"floor-{Path(data).name}-{res}px"
        if finished(out / "metrics.json", None, s.samples):
            continue
        t0 = time.time()
        cmd = [sys.executable, "evaluate.py", "--ckpt", str(s.out / row.name / "export.safetensors"), "--real-floor",
               "--out", str(out), *eval_args(StudyRow(row.script, "gan", 0, ""), s)]
        if run_logged(cmd, s.out / "logs" / "floors.log", env):
            raise SystemExit(f"error: the floor of {Path(data).name} at {res} px failed; see {s.out}/logs/floors.log")
        fid = json.loads((out / "metrics.json").read_text())["metrics"]["fid"]["value"]
        print(f"[floor] {Path(data).name} {res}×{res}: FID {fid:.2f} ({fmt_minutes(time.time() - t0)})", flush=True)


def publish(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """Copy what the tables are built from into RESULTS (metrics.json, config.json, stats.jsonl: small, no images of
    people) and let compare.py write the tables, the figures and the README's marked sections."""
    import shutil

    for row in rows:
        src = s.out / row.name
        dst = s.results / "rows" / row.name
        (dst / "export_eval").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "export_eval" / "metrics.json", dst / "export_eval" / "metrics.json")
        for f in ("config.json", "stats.jsonl"):
            shutil.copy2(src / f, dst / f)
    for floor in sorted(s.out.glob("floor-*/metrics.json")):
        (s.results / "rows" / floor.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(floor, s.results / "rows" / floor.parent.name / "metrics.json")
    notes = Path(os.environ.get("NOTES", s.results / "notes.json"))
    cmd = [sys.executable, "compare.py", str(s.out), "--out", str(s.results), "--figures",
           "grid,progression,interp,curves", "--feature-extractor", s.features]
    cmd += ["--notes", str(notes)] if notes.exists() else []
    cmd += ["--readme", s.readme] if s.readme != "none" else []
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode:
        raise SystemExit("error: compare.py failed (its message is above)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    mode = argv[0] if argv else "--run"
    if mode not in ("--run", "--plan", "--calibrate") or len(argv) > 1:
        raise SystemExit("usage: scripts/mini_study.sh [--plan | --calibrate]")
    s = Settings.from_env()
    raw = os.environ.get("RAW") or ("../shared/data" if (ROOT.parent / "shared" / "data").is_dir() else "")
    if not raw or not Path(raw).is_dir():
        raise SystemExit("error: set RAW to a folder of face photos (the study aligns them once into ALIGNED)")
    aligned = Path(os.environ.get("ALIGNED") or s.out / "aligned")
    rows = selected_rows()
    env = subprocess_env(s, RAW=raw, ALIGNED=str(aligned), DATA=str(aligned))
    s.out.mkdir(parents=True, exist_ok=True)
    if mode == "--calibrate":
        align(s, raw, aligned)
        calibrate(s, rows, env)
        return
    todo = plan(s, rows, env)
    if mode == "--plan":
        for row in todo:
            print(f"$ bash scripts/{row.script}.sh {shlex.join(row_flags(row, s, s.steps(row)))}")
        return
    align(s, raw, aligned)
    t_start, calibration = time.time(), load_calibration(s)
    for i, row in enumerate(todo, 1):
        t0 = time.time()
        run_row(row, s, env)
        m = json.loads(metrics_path(s, row).read_text())["metrics"]
        left = sum(estimate_seconds(r, s, calibration) or 0.0 for r in todo[i:])
        print(f"[{i}/{len(todo)}] {row.script}: FID {m['fid']['value']:.2f}, precision {m['precision']['value']:.3f},"
              f" recall {m['recall']['value']:.3f} in {fmt_minutes(time.time() - t0)} (estimate "
              f"{fmt_minutes(estimate_seconds(row, s, calibration))}); study {fmt_minutes(time.time() - t_start)} so "
              f"far, ≈ {fmt_minutes(left)} of rows left", flush=True)
    floors(s, rows, env)
    publish(s, rows, env)


if __name__ == "__main__":
    main()
