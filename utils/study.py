"""The mini study (scripts/mini_study.sh): every row of the plan's phases 1–5 at CPU scale, one at a time.

Each row is its full-size script (scripts/<row>.sh: the same flags and code paths) with flags appended after the
script's own (argparse keeps the last): the budget in steps, narrower nets, fp32, 32×32 (the plan's 64 vs 128 px
rows become 32 vs 64 px), and the schedules that are counted in steps shrunk with the run (the DDPM warm-up and
the VAE discriminator start: 1/20 of the budget, the share 10 epochs have of the plan's 200).  Rows, budgets and
flags are in utils/study_rows.py.  Every row is scored by evaluate.py on SAMPLES samples against the same held-out
photos (never trained on; SAMPLES of each, 2100 by default); every held-out set also gets its real-vs-real floor
(evaluate.py --real-floor).  Phase-5 rows run last: each retrains the recipe (script and flags) of its family's
ablation row with the lowest FID, at twice the budget, under its own run name (utils.study_rows.recipe_of).

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
from pathlib import Path

from utils.study_rows import (INCEPTION_IMAGES_PER_SECOND, ROOT, ROWS, Settings, StudyRow, estimate_seconds,
                              eval_args, finished, fmt_minutes, metrics_path, recipe_of, recorded_recipe,
                              row_done, row_flags, train_command)
from utils.tracking import read_stats

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
    for row in (r for r in rows if not r.candidates):   # a phase-5 row runs at its recipe's speed
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
    # Phase 5 last: its recipes are chosen from the ablation rows' results.
    todo = sorted((r for r in rows if not row_done(s, r)), key=lambda r: bool(r.candidates))
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


def choose_recipe(row: StudyRow, s: Settings) -> StudyRow:
    """A phase-5 row's recipe (utils.study_rows.recipe_of), recorded in its run directory's recipe.json.  A run of
    another recipe (the candidates' results changed, or it predates the rule) is moved to OUT/superseded/, not
    resumed and not deleted."""
    import shutil

    recipe, fids = recipe_of(s, row)
    if recipe is None:
        missing = [c for c in row.candidates if c not in fids]
        raise SystemExit(f"error: {row.script} retrains the best of {', '.join(row.candidates)}, but "
                         f"{', '.join(missing)} has no evaluation yet; run those rows first (ROWS=...)")
    run_dir = s.out / row.name
    old = recorded_recipe(run_dir)
    if run_dir.exists() and old != recipe.script:
        dest = s.out / "superseded" / f"{row.name}-{old or 'unrecorded'}-{time.strftime('%Y%m%d-%H%M%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), str(dest))
        print(f"[{row.script}] the best candidate is now {recipe.script}; the run of {old or 'another recipe'} "
              f"moved to {dest}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(json.dumps(
        {"recipe": recipe.script, "rule": "lowest FID among the candidates at the study's evaluation",
         "candidates_fid": fids, "samples": s.samples}, indent=1))
    print(f"[{row.script}] recipe of {recipe.script} (FID " + ", ".join(f"{k} {v:.1f}" for k, v in fids.items())
          + ")", flush=True)
    return recipe


def export_step(run_dir: Path) -> int:
    """The step of the run's export, from the sidecar every export writes (-1 without one)."""
    try:
        return int(json.loads((run_dir / "export.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def run_row(row: StudyRow, s: Settings, env: dict) -> None:
    """Train (or resume) one row through its recipe's script, then evaluate its export; a failure stops the study
    with the log's name."""
    log = s.out / "logs" / f"{row.script}.log"
    recipe = choose_recipe(row, s) if row.candidates else row
    code = run_logged(train_command(row, s, recipe), log, {**env, "SKIP_EVAL": "1"})
    reached = export_step(s.out / row.name)
    if code == 0 and reached < s.steps(row):   # a trainer stopped by a signal exports and exits 0: not an error
        raise SystemExit(f"error: row {row.script} stopped at step {reached} of {s.steps(row)}; re-run the study to "
                         "resume it")
    if code == 0:
        code = run_logged([sys.executable, "evaluate.py", "--ckpt", str(s.out / row.name / "export.safetensors"),
                           *eval_args(row, s)], log, env)
    if code or not row_done(s, row):
        raise SystemExit(f"error: row {row.script} failed (exit {code}); see {log}; re-run the study to resume it")


def row_data(s: Settings, row: StudyRow) -> tuple[str, int] | None:
    try:
        cfg = json.loads((s.out / row.name / "config.json").read_text())
        return str(cfg["data"]), int(cfg["resolution"])
    except (OSError, ValueError, KeyError):
        return None


def floor_sources(s: Settings, rows: list[StudyRow]) -> dict[Path, StudyRow]:
    """The floor directory of each (data, resolution) the rows were trained on, with one exported row of it."""
    seen = {}
    for row in rows:
        key = row_data(s, row)
        if key is not None and (s.out / row.name / "export.safetensors").exists():
            seen.setdefault(s.out / f"floor-{Path(key[0]).name}-{key[1]}px", row)
    return seen


def floors(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """One real-vs-real floor per (data, resolution) the rows were trained on: SAMPLES training photos vs the same
    held-out photos, scored like a row (compare.py places each under the tables whose rows share its held-out)."""
    for out, row in floor_sources(s, rows).items():
        if finished(out / "metrics.json", None, s.samples):
            continue
        t0 = time.time()
        cmd = [sys.executable, "evaluate.py", "--ckpt", str(s.out / row.name / "export.safetensors"), "--real-floor",
               "--out", str(out), *eval_args(StudyRow(row.script, "gan", 0, ""), s)]
        if run_logged(cmd, s.out / "logs" / "floors.log", env):
            raise SystemExit(f"error: the floor of {out.name} failed; see {s.out}/logs/floors.log")
        fid = json.loads((out / "metrics.json").read_text())["metrics"]["fid"]["value"]
        print(f"[floor] {out.name}: FID {fid:.2f} ({fmt_minutes(time.time() - t0)})", flush=True)


def publish(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """Copy what the tables are built from into RESULTS (metrics.json, config.json, stats.jsonl: small, no images of
    people) and let compare.py write the tables, the figures and the README's marked sections, from the given rows
    (evaluated, under their current recipe) and their floors only: not from other runs that OUT may hold."""
    import shutil

    inputs = []
    for row in rows:
        src = s.out / row.name
        dst = s.results / "rows" / row.name
        (dst / "export_eval").mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "export_eval" / "metrics.json", dst / "export_eval" / "metrics.json")
        for f in ("config.json", "stats.jsonl"):
            shutil.copy2(src / f, dst / f)
        for m in (src / "exports").glob("step*_eval/metrics.json"):   # --first-exports' evaluations
            (dst / "exports" / m.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(m, dst / "exports" / m.parent.name / "metrics.json")
        inputs.append(str(src))
    for floor in floor_sources(s, rows):
        if (floor / "metrics.json").exists():
            (s.results / "rows" / floor.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(floor / "metrics.json", s.results / "rows" / floor.name / "metrics.json")
            inputs.append(str(floor / "metrics.json"))
    notes = Path(os.environ.get("NOTES", s.results / "notes.json"))
    cmd = [sys.executable, "compare.py", *inputs, "--out", str(s.results), "--figures",
           "grid,progression,interp,failures,curves", "--failure-tables", "phase5", "--feature-extractor", s.features,
           "--failure-real", "hide"]   # RESULTS is meant to be committed: no copies of the user's photos in it
    cmd += ["--notes", str(notes)] if notes.exists() else []
    cmd += ["--readme", s.readme] if s.readme != "none" else []
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode:
        raise SystemExit("error: compare.py failed (its message is above)")


def publish_done(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """--publish: the floors and tables of the rows evaluated so far (a study still running, or stopped)."""
    done = [r for r in rows if row_done(s, r)]
    if not done:
        raise SystemExit(f"error: no row of the study is evaluated yet under {s.out}; nothing to publish")
    left = [r.script for r in rows if r not in done]
    print(f"[publish] {len(done)} of {len(rows)} rows" + (f"; not yet: {' '.join(left)}" if left else ""), flush=True)
    floors(s, done, env)
    publish(s, done, env)


def training_fids(s: Settings, row: StudyRow) -> list[tuple[int, float]]:
    """(step, FID@n) of the row's training-time FID records (stats.jsonl), in step order."""
    return sorted((int(r["step"]), float(r["fid"])) for r in read_stats(s.out / row.name / "stats.jsonl", "fid"))


def first_exports(s: Settings, rows: list[StudyRow], env: dict) -> None:
    """--first-exports: the issue's "FID lower at the last export than at the first", measured where the cheap signal
    doubts it.  The training-time FID (n samples, biased, noisy) only hints; for each evaluated row whose training-time
    FID did not fall, score its first export exactly as the row was scored (SAMPLES vs SAMPLES) and print both.
    A row whose training-time FID fell is listed as such, not re-scored (a row's evaluation costs minutes)."""
    for row in (r for r in rows if row_done(s, r)):
        fids = training_fids(s, row)
        last = json.loads(metrics_path(s, row).read_text())
        if len(fids) >= 2 and fids[-1][1] < fids[0][1]:
            print(f"[first-export] {row.script}: training-time FID fell {fids[0][1]:.0f} -> {fids[-1][1]:.0f} "
                  f"(steps {fids[0][0]} -> {fids[-1][0]}); not re-scored", flush=True)
            continue
        exports = sorted((s.out / row.name / "exports").glob("step*.safetensors"))
        if not exports:
            print(f"[first-export] {row.script}: no intermediate export to compare with", flush=True)
            continue
        out = exports[0].with_name(exports[0].stem + "_eval")
        if not finished(out / "metrics.json", None, s.samples):
            cmd = [sys.executable, "evaluate.py", "--ckpt", str(exports[0]), *eval_args(row, s)]
            if run_logged(cmd, s.out / "logs" / f"{row.script}.log", env):
                raise SystemExit(f"error: evaluating {exports[0]} failed; see {s.out}/logs/{row.script}.log")
        first = json.loads((out / "metrics.json").read_text())
        a, b = (m["metrics"]["fid"]["value"] for m in (first, last))

        def both(name: str) -> str:   # a metric the evaluation did not compute reads n/a
            v = [(m["metrics"].get(name) or {}).get("value") for m in (first, last)]
            return " -> ".join("n/a" if x is None else f"{x:.3f}" for x in v)

        print(f"[first-export] {row.script}: FID {a:.2f} at step {first['source']['step']} -> {b:.2f} at step "
              f"{last['source']['step']} ({'lower' if b < a else 'NOT lower'} at the last export; KID {both('kid')}, "
              f"precision {both('precision')})", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    mode = argv[0] if argv else "--run"
    if mode not in ("--run", "--plan", "--calibrate", "--publish", "--first-exports") or len(argv) > 1:
        raise SystemExit("usage: scripts/mini_study.sh [--plan | --calibrate | --publish | --first-exports]")
    s = Settings.from_env()
    raw = os.environ.get("RAW", "")
    if mode == "--publish":   # the rows' own configs name their data: RAW is not needed
        publish_done(s, selected_rows(), subprocess_env(s))
        return
    if mode == "--first-exports":
        first_exports(s, selected_rows(), subprocess_env(s))
        return
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
            recipe = recipe_of(s, row)[0]
            print(f"$ {shlex.join(train_command(row, s, recipe))}" if recipe is not None else
                  f"$ {row.script}: the best of {', '.join(row.candidates)} (chosen once they are evaluated), "
                  f"{s.steps(row)} steps")
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
