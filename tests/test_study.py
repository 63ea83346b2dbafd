"""scripts/mini_study.sh (utils/study.py): the plan it prints, the flags each row gets, and a whole study in
miniature — align → rows → floors → tables — that resumes without redoing finished work.

The miniature runs two rows (one on the raw photos, one on the aligned ones) at a budget of 4 steps on 96 crops
of skimage's astronaut photo, scored with the seeded 'tiny' feature network on 16 samples.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_scripts import check, photo_folder
from utils.study_rows import (ABLATION_STEPS, ROWS, ROWS_BY_SCRIPT, Settings, recipe_of, row_done, row_flags,
                              train_command)
from utils.table_rows import with_recipe

ROOT = Path(__file__).resolve().parents[1]
MINI_ROWS = "phase1_1B_full gan_2.1_dcgan"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    shim = tmp_path_factory.mktemp("shim")   # `accelerate launch` → python (the trainer tests cover accelerate)
    (shim / "accelerate").write_text(f'#!/bin/sh\n[ "$1" = launch ] && shift\nexec "{sys.executable}" "$@"\n')
    (shim / "accelerate").chmod(0o755)
    root = tmp_path_factory.mktemp("study")
    e = {**os.environ, "FACEGEN_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "FACEGEN_THREADS": "1",
         "PATH": os.pathsep.join([str(shim), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
         "PYTHONPATH": str(ROOT), "RAW": str(photo_folder(root / "raw", 96, 240, seed=0)),
         "OUT": str(root / "out"), "RESULTS": str(root / "results"), "SCALE": "0.002", "SAMPLES": "16",
         "FEATURES": "tiny", "README": "none", "ROWS": MINI_ROWS}
    for var in ("VGG_WEIGHTS", "DATA", "ALIGNED", "EVAL_ARGS", "SKIP_EVAL", "NOTES"):
        e.pop(var, None)
    return e


def study(env: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/mini_study.sh", *args], cwd=ROOT, env={**env, **extra},
                          capture_output=True, text=True, timeout=900)


def resolved_config(row_script: str, env: dict, flags: list[str]) -> dict:
    """The trainer's config after the row script's flags and the study's (its --dry-run prints it)."""
    proc = check(subprocess.run(["bash", f"scripts/{row_script}.sh", *flags, "--dry-run"], cwd=ROOT,
                                env={**env, "SKIP_EVAL": "1", "DATA": "synthetic"}, capture_output=True, text=True,
                                timeout=300), row_script)
    return json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])[0]


def test_every_phase_row_is_in_the_study_once():
    scripts = [r.script for r in ROWS]
    assert len(scripts) == len(set(scripts)) == 22
    for stem in scripts:
        assert (ROOT / "scripts" / f"{stem}.sh").exists(), stem
    ablation = {r.family: r.steps for r in ROWS if r.script.split("_")[0] in ("gan", "vae", "ddpm")}
    assert ablation == ABLATION_STEPS
    for r in ROWS:   # phase-5 rows: twice an ablation row's budget; phase 1: half (the plan's short-compute rule)
        share = {"phase5": 2, "phase1": 0.5}.get(r.script.split("_")[0], 1)
        assert r.steps == share * ablation[r.family], r.script


@pytest.mark.parametrize("script, expect", [
    # Attention at the script's 8,16,32 of a 64² UNet is at 4,8,16 of the same UNet at 32².
    ("ddpm_4.4_wide", {"base_channels": 48, "layers_per_block": 1, "resolution": 32, "max_steps": 1000,
                       "warmup_steps": 50, "attn_res": [4, 8, 16], "prediction_type": "v_prediction",
                       "mixed_precision": "no"}),
    ("ddpm_4.1_linear-eps", {"attn_res": [4, 8], "beta_schedule": "linear", "fid_sample_steps": 12}),
    ("gan_2.4_128px", {"ngf": 32, "ndf": 32, "resolution": 64, "sn": True, "attn": True, "loss": "wgan-gp"}),
    ("vae_3.3_patchgan", {"base_channels": 32, "disc_start": "40", "adv_weight": "adaptive", "lambda_adv": 0.1}),
])
def test_row_flags_override_only_scale_budget_and_schedules(script, expect, env):
    """The row script's own method flags survive; the study's appended flags win where they overlap."""
    row = next(r for r in ROWS if r.script == script)
    s = Settings(Path("unused"), Path("unused"), 1.0, 2100, "tiny", "none")
    cfg = resolved_config(script, env, row_flags(row, s, s.steps(row)))
    assert {k: cfg[k] for k in expect} == expect


def test_plan_prints_every_row_and_its_command(env):
    proc = check(study(env, "--plan", ROWS=""), "mini_study.sh --plan")
    for r in ROWS:
        line = (f"{r.script}: the best of {', '.join(r.candidates)}" if r.candidates
                else f"bash scripts/{r.script}.sh ")
        assert line in proc.stdout, r.script
    assert "estimated time left:" in proc.stdout


def fake_evaluation(s: Settings, script: str, fid: float) -> None:
    """A metrics.json as evaluate.py writes it, at the row's budget and the study's sample count."""
    row = ROWS_BY_SCRIPT[script]
    path = s.out / row.name / "export_eval" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": {"step": s.steps(row)}, "samples": {"n": s.samples},
                                "metrics": {"fid": {"value": fid}}}))


def test_phase5_retrains_the_family_row_with_the_lowest_fid(env, tmp_path, capsys):
    from utils.study import choose_recipe

    s = Settings(tmp_path / "out", tmp_path / "results", 1.0, 2100, "tiny", "none")
    p5 = ROWS_BY_SCRIPT["phase5_gan"]
    fake_evaluation(s, "gan_2.1_dcgan", 175.0)
    fake_evaluation(s, "gan_2.2_wgan-gp", 272.0)
    assert recipe_of(s, p5)[0] is None                       # 2.3 not evaluated yet: no choice
    with pytest.raises(SystemExit, match="gan_2.3_wgan-gp-sn-attn has no evaluation yet"):
        choose_recipe(p5, s)
    fake_evaluation(s, "gan_2.3_wgan-gp-sn-attn", 334.0)
    recipe, fids = recipe_of(s, p5)
    assert recipe.script == "gan_2.1_dcgan" and fids["gan_2.3_wgan-gp-sn-attn"] == 334.0
    # The recipe's script and method flags at phase 5's budget, under phase 5's run name and row.
    cmd = train_command(p5, s, recipe)
    assert cmd[:2] == ["bash", "scripts/gan_2.1_dcgan.sh"] and cmd[-4:] == ["--name", "phase5-gan", "--row", "5-gan"]
    cfg = resolved_config("gan_2.1_dcgan", env, cmd[2:])
    assert {k: cfg[k] for k in ("loss", "max_steps", "name", "row", "ngf")} == {
        "loss": "bce", "max_steps": 2400, "name": "phase5-gan", "row": "5-gan", "ngf": 32}
    # A phase-5 run of another recipe (here one from before the rule: no recipe.json) is set aside, not resumed.
    old = s.out / "phase5-gan"
    (old / "checkpoints").mkdir(parents=True)
    fake_evaluation(s, "phase5_gan", 324.5)
    assert not row_done(s, p5)                               # evaluated, but not with the chosen recipe
    assert choose_recipe(p5, s).script == "gan_2.1_dcgan"
    (moved,) = (s.out / "superseded").iterdir()
    assert moved.name.startswith("phase5-gan-unrecorded-") and (moved / "checkpoints").is_dir()
    assert json.loads((old / "recipe.json").read_text())["recipe"] == "gan_2.1_dcgan"
    assert not (old / "checkpoints").exists() and "moved to" in capsys.readouterr().out
    # The tables name the recipe the run was trained with, not the row the plan presumed.
    assert with_recipe(("Best GAN (2.4)",), old) == ("Best GAN (2.1 recipe)",)
    assert with_recipe(("Best GAN (2.4)",), moved) == ("Best GAN (2.4)",)   # no recipe.json: the plan's label
    fake_evaluation(s, "phase5_gan", 130.0)
    assert row_done(s, p5)
    fake_evaluation(s, "gan_2.2_wgan-gp", 120.0)             # the candidates' results changed: redo phase 5
    assert not row_done(s, p5)


def test_bad_input_is_one_line(env, tmp_path):
    for extra, words in (({"ROWS": "no_such_row"}, "unknown row"), ({"SCALE": "fast"}, "SCALE"),
                         ({"RAW": str(tmp_path / "missing")}, "RAW")):
        proc = study(env, "--plan", **extra)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and words in lines[0], (extra, proc.stderr)


def test_a_study_in_miniature_runs_resumes_and_publishes(env):
    out, results = Path(env["OUT"]), Path(env["RESULTS"])
    early = study(env, "--publish")
    assert early.returncode == 1 and early.stderr.strip().startswith("error: no row of the study is evaluated yet"), \
        early.stderr
    first = check(study(env), "mini_study.sh")
    names = {"phase1-1B-full": "phase1", "gan-2.1-dcgan": "phase2"}
    for name in names:
        m = json.loads((out / name / "export_eval" / "metrics.json").read_text())
        assert m["source"]["step"] == 4 and m["samples"]["n"] == 16, name
        # Training-time FID at each half of the budget (does the row still improve?).
        fids = [json.loads(ln) for ln in (out / name / "stats.jsonl").read_text().splitlines() if '"fid"' in ln]
        assert [f["step"] for f in fids] == [2, 4], name
    assert "[1/2] phase1_1B_full: FID" in first.stdout and "[2/2] gan_2.1_dcgan: FID" in first.stdout
    # One floor per held-out set: the raw photos and the aligned ones, both at 32 px.
    floors = sorted(p.parent.name for p in out.glob("floor-*/metrics.json"))
    assert floors == ["floor-aligned-32px", "floor-raw-32px"], floors
    for f in floors:
        m = json.loads((out / f / "metrics.json").read_text())
        assert m["source"]["kind"] == "floor" and m["samples"]["n"] == 16
    # Tables: each with its models and the floor of its held-out set; no machine path in them.
    phase1 = (results / "phase1.md").read_text()
    assert "Real photos" in phase1 and "training photos vs held-out, 32×32" in phase1
    assert "Real photos" in (results / "phase2.md").read_text()
    for table in names.values():
        assert str(out) not in (results / f"{table}.md").read_text()
    assert (results / "rows" / "gan-2.1-dcgan" / "export_eval" / "metrics.json").exists()

    # --publish: the rows evaluated so far (here, of the two, the selected one) and their floors; no other run in OUT.
    (out / "phase5-gan").mkdir()
    (out / "phase5-gan" / "export_eval").mkdir()
    (out / "phase5-gan" / "export_eval" / "metrics.json").write_text(
        (out / "gan-2.1-dcgan" / "export_eval" / "metrics.json").read_text())   # a stale run of another recipe
    partial = check(study(env, "--publish", ROWS="phase1_1B_full", RAW="", RESULTS=str(out / "partial")),
                    "mini_study.sh --publish")
    assert "[publish] 1 of 1 rows" in partial.stdout
    assert "Real photos" in (out / "partial" / "phase1.md").read_text()
    assert not (out / "partial" / "phase2.md").exists() and not (out / "partial" / "phase5.md").exists()
    assert sorted(p.name for p in (out / "partial" / "rows").iterdir()) == ["floor-raw-32px", "phase1-1B-full"]
    shutil.rmtree(out / "phase5-gan")

    # --first-exports: a row whose training-time FID did not fall gets its first export scored like the row itself;
    # the others are listed, not re-scored; publishing carries the evaluation along.
    stats = out / "gan-2.1-dcgan" / "stats.jsonl"
    recs = [json.loads(ln) for ln in stats.read_text().splitlines()]
    fid_at = {r["step"]: r["fid"] for r in recs if r.get("kind") == "fid"}
    rose = {"phase1-1B-full": fid_at[4] >= fid_at[2]}   # the real run's curve, whichever way it went
    stats.write_text("".join(json.dumps({**r, "fid": 300.0 + r["step"]} if r.get("kind") == "fid" else r) + "\n"
                             for r in recs))                   # 2.1: made to rise
    fe = check(study(env, "--first-exports", RAW=""), "mini_study.sh --first-exports")
    line = next(ln for ln in fe.stdout.splitlines() if ln.startswith("[first-export] gan_2.1_dcgan:"))
    first = json.loads((out / "gan-2.1-dcgan" / "exports" / "step0000001_eval" / "metrics.json").read_text())
    last = json.loads((out / "gan-2.1-dcgan" / "export_eval" / "metrics.json").read_text())
    assert first["source"]["step"] == 1 and first["samples"]["n"] == last["samples"]["n"] == 16
    a, b = first["metrics"]["fid"]["value"], last["metrics"]["fid"]["value"]
    assert f"FID {a:.2f} at step 1 -> {b:.2f} at step 4" in line and ("NOT lower" in line) == (b >= a), line
    b_line = next(ln for ln in fe.stdout.splitlines() if ln.startswith("[first-export] phase1_1B_full:"))
    assert ("not re-scored" in b_line) != rose["phase1-1B-full"], b_line
    stats.write_text("".join(json.dumps(r) + "\n" for r in recs))
    check(study(env, "--publish", ROWS="gan_2.1_dcgan", RAW="", RESULTS=str(out / "partial2")), "--publish")
    assert (out / "partial2" / "rows" / "gan-2.1-dcgan" / "exports" / "step0000001_eval" / "metrics.json").exists()

    # Re-running redoes nothing.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/export_eval/metrics.json")}
    again = check(study(env), "mini_study.sh (again)")
    assert "for 0 of 2 rows" in again.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("*/export_eval/metrics.json")}

    # A row stopped after training, before its evaluation, is evaluated without retraining.
    (out / "gan-2.1-dcgan" / "export_eval" / "metrics.json").unlink()
    third = check(study(env), "mini_study.sh (after a lost evaluation)")
    assert "for 1 of 2 rows" in third.stdout
    train, evaluation = (out / "logs" / "gan_2.1_dcgan.log").read_text().split("\n$ ")[-2:]
    assert "resumed from" in train and "at step 4" in train and "step 1/4" not in train
    assert evaluation.split()[1] == "evaluate.py" and "metrics.json" in evaluation


def test_a_row_stopped_before_its_budget_is_not_evaluated(tmp_path, monkeypatch):
    """A trainer stopped by SIGTERM exports the step it reached and exits 0: the study says so and does not score
    the partial export (re-running resumes it)."""
    from utils import study

    s = Settings(tmp_path / "out", tmp_path / "results", 1.0, 2100, "tiny", "none")
    row = ROWS_BY_SCRIPT["gan_2.1_dcgan"]
    calls = []

    def fake_run(cmd, log, env):
        calls.append(cmd)
        (s.out / row.name).mkdir(parents=True, exist_ok=True)
        (s.out / row.name / "export.json").write_text(json.dumps({"step": 700}))
        return 0
    monkeypatch.setattr(study, "run_logged", fake_run)
    with pytest.raises(SystemExit, match="stopped at step 700 of 1200; re-run the study to resume it"):
        study.run_row(row, s, {})
    assert len(calls) == 1 and calls[0][1] == "scripts/gan_2.1_dcgan.sh"   # the training only, no evaluate.py
