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


@dataclass(frozen=True)
class StudyRow:
    script: str                  # scripts/<script>.sh
    family: str                  # gan | vae | ddpm
    steps: int                   # budget in optimizer steps at batch 64 (before SCALE)
    speed: str                   # key of SECONDS_PER_STEP
    flags: tuple[str, ...] = ()  # the row's own overrides (after the family's)

    @property
    def name(self) -> str:
        """The run name the row script gives its run (its --name)."""
        return run_name(self.script)

    @property
    def resolution(self) -> int:
        return int(self.flags[self.flags.index("--resolution") + 1]) if "--resolution" in self.flags else 32


ROWS = (
    StudyRow("phase1_1A_64px", "gan", 1500, "gan32"),
    StudyRow("phase1_1A_128px", "gan", 1500, "gan64", ("--resolution", "64")),
    StudyRow("phase1_1B_full", "gan", 1500, "gan32"),
    StudyRow("phase1_1B_aligned", "gan", 1500, "gan32"),
    StudyRow("phase1_1C_flip", "gan", 1500, "gan32"),
    StudyRow("phase1_1C_flip-rot-jitter", "gan", 1500, "gan32"),
    StudyRow("phase1_1D_aligned", "gan", 1500, "gan32"),
    StudyRow("phase1_1D_combined", "gan", 1500, "gan32"),
    StudyRow("gan_2.1_dcgan", "gan", 1500, "gan32"),
    StudyRow("gan_2.2_wgan-gp", "gan", 1500, "wgan32"),
    StudyRow("gan_2.3_wgan-gp-sn-attn", "gan", 1500, "sngan32"),
    StudyRow("gan_2.4_128px", "gan", 1500, "sngan64", ("--resolution", "64")),
    StudyRow("vae_3.1_mse", "vae", 1500, "vae"),
    StudyRow("vae_3.2_perceptual", "vae", 1500, "vae_perc"),
    StudyRow("vae_3.3_patchgan", "vae", 1500, "vae_patchgan"),
    StudyRow("ddpm_4.1_linear-eps", "ddpm", 1500, "ddpm"),
    StudyRow("ddpm_4.2_cosine", "ddpm", 1500, "ddpm"),
    StudyRow("ddpm_4.3_vpred", "ddpm", 1500, "ddpm"),
    StudyRow("ddpm_4.4_wide", "ddpm", 1500, "ddpm_wide", ("--base-channels", "48")),
    StudyRow("phase5_gan", "gan", 3000, "sngan32"),
    StudyRow("phase5_vae", "vae", 3000, "vae_patchgan"),
    StudyRow("phase5_ddpm", "ddpm", 3000, "ddpm_wide", ("--base-channels", "48")),
)

# Narrower nets than the plan's (GAN 64 → 32 channels, VAE 64 → 32, UNet 128 → 32 with one block per level; row
# 4.4 stays 1.5× row 4.1's width, as 192 is to 128).
FAMILY_FLAGS = {"gan": ("--ngf", "32", "--ndf", "32"), "vae": ("--base-channels", "32"),
                "ddpm": ("--base-channels", "32", "--layers-per-block", "1")}
DDIM_STEPS = 50   # evaluation sampler of the DDPM rows (the learning-parity benchmark's)
# Samples per row and held-out photos: more than Inception's 2048 feature dimensions, so that neither covariance
# is singular (utils.metric_math.fd_sample_counts marks a Fréchet distance from n ≤ d samples as biased).
SAMPLES = 2100

# Seconds per training step at batch 64, fp32, measured with `mini_study.sh --calibrate` on the 2-core AMD EPYC
# this study ran on; --calibrate writes OUT/calibration.json, which replaces these for the estimate.
SECONDS_PER_STEP = {}
# Seconds to evaluate one row (sampling + Inception features of SAMPLES images + metrics), same machine.
EVAL_SECONDS = {}


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
             # Training-time FID at each third on 256 samples: biased upwards at that count, but the same count
             # at every point, so it shows whether a row improves; the headline FID is evaluate.py's.
             "--fid-every", str(max(1, steps // 3)), "--fid-samples", str(min(256, s.samples)),
             "--fid-extractor", s.features, "--resume", "latest"]
    if row.family == "ddpm":
        flags += ["--warmup-steps", str(max(1, steps // 20)), "--fid-sample-steps", str(DDIM_STEPS // 2)]
    if "--disc-start" in trainer_flags(row.script):
        flags += ["--disc-start", str(max(1, steps // 20))]
    return flags


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
    per_step = calibration.get(row.script, SECONDS_PER_STEP.get(row.speed))
    ev = EVAL_SECONDS.get(row.family)
    if per_step is None or ev is None:
        return None
    return s.steps(row) * per_step + ev * s.samples / SAMPLES


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


def calibrate(s: Settings, rows: list[StudyRow]) -> dict:
    """Seconds per step of every row on this machine: 40 steps each, timed over the last 20 (after start-up)."""
    out = s.out / "calibrate"
    result = {}
    for row in rows:
        cal = Settings(out, s.results, s.scale, s.samples, s.features, "none")
        flags = [*row_flags(row, cal, 40), "--fid-every", "0", "--log-every", "20", "--save-every", "40",
                 "--export-every", "0", "--sample-every", "0"]
        code = run_logged(["bash", f"scripts/{row.script}.sh", *flags], out / "logs" / f"{row.script}.log",
                          subprocess_env(cal, SKIP_EVAL="1"))
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
    todo = [r for r in rows if not finished(metrics_path(s, r), s.steps(r), s.samples)]
    total, unknown = 0.0, []
    for r in rows:
        est = estimate_seconds(r, s, calibration)
        state = "done" if r not in todo else f"≈ {fmt_minutes(est)}"
        if r in todo:
            total += est or 0.0
            unknown += [] if est is not None else [r.script]
        print(f"  {r.script:28s} {s.steps(r):6d} steps  {state}")
    floors = len({(r.resolution, r.script == "phase1_1B_full") for r in rows}) * EVAL_SECONDS.get("gan", 0.0)
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
        calibrate(s, rows)
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
