"""Every results-table row script end to end at toy size — train → evaluate.py → compare.py — so no script rots.

Each row runs as a user runs it (``bash scripts/<row>.sh``) with the smoke-run conventions of the scripts:
``OUT`` is the run parent (the trainer's ``--out`` and the export evaluate.py reads), ``EVAL_ARGS`` shrinks the
evaluation, and ``"$@"`` shrinks the model and schedule (16 px, batch 4, 2 steps, tiny widths, the seeded 'tiny'
feature network).  `accelerate launch` is replaced by a shim that runs the same script under `python`
(``accelerate launch`` itself is exercised by the trainer tests; here it would add ~2 s per row).
The phase-1 photo rows (1B, 1D) get a small folder cut from skimage's astronaut photo as RAW, and another as
ALIGNED (alignment itself is tested in test_align.py; MTCNN would not find faces in 16 px crops anyway).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from utils.metrics_schema import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

TINY = ["--resolution", "16", "--batch-size", "4", "--max-steps", "2", "--synthetic-size", "48", "--n-real", "8",
        "--fid-every", "2", "--fid-extractor", "tiny", "--fid-samples", "8", "--sample-every", "2", "--save-every", "2",
        "--export-every", "1", "--log-every", "1"]
FAMILY_ARGS = {
    "gan": ["--ngf", "8", "--ndf", "8", "--latent-dim", "16", "--grid-samples", "4"],
    "vae": ["--base-channels", "8", "--max-channels", "32", "--latent-dim", "16", "--disc-ndf", "8", "--disc-layers", "2",
            "--vgg-init", "random", "--latent-plot", "none"],
    "ddpm": ["--base-channels", "16", "--layers-per-block", "1", "--sample-steps", "2", "--fid-sample-steps", "2",
             "--warmup-steps", "2", "--grid-samples", "4"],
    "acgan": ["--ngf", "8", "--ndf", "8", "--latent-dim", "16", "--grid-rows", "2", "--class-eval-samples", "8"],
    # No training-time FID for a translator; 24 held-out images so each Smiling domain has enough to score.
    "cyclegan": ["--gen-width", "8", "--disc-width", "8", "--gen-blocks", "1", "--grid-size", "4", "--fid-every", "0",
                 "--n-real", "24"],
}
EVAL = "--num-samples 16 --batch-size 16 --feature-extractor tiny --n-real 8 --metrics fid,kid,pr,params --save-samples 0"
EVAL_ARGS = {"gan": EVAL, "vae": EVAL, "acgan": EVAL, "cyclegan": EVAL, "ddpm": EVAL + " --sample-steps 2"}

# script stem -> (run name, family, compare.py table)
ROWS = {
    "phase1_1A_64px": ("phase1-1A-64px", "gan", "phase1"),
    "phase1_1A_128px": ("phase1-1A-128px", "gan", "phase1"),
    "phase1_1B_full": ("phase1-1B-full", "gan", "phase1"),
    "phase1_1B_aligned": ("phase1-1B-aligned", "gan", "phase1"),
    "phase1_1C_flip": ("phase1-1C-flip", "gan", "phase1"),
    "phase1_1C_flip-rot-jitter": ("phase1-1C-flip-rot-jitter", "gan", "phase1"),
    "phase1_1D_aligned": ("phase1-1D-aligned", "gan", "phase1"),
    "phase1_1D_combined": ("phase1-1D-combined", "gan", "phase1"),
    "gan_2.1_dcgan": ("gan-2.1-dcgan", "gan", "phase2"),
    "gan_2.2_wgan-gp": ("gan-2.2-wgan-gp", "gan", "phase2"),
    "gan_2.3_wgan-gp-sn-attn": ("gan-2.3-wgan-gp-sn-attn", "gan", "phase2"),
    "gan_2.4_128px": ("gan-2.4-128px", "gan", "phase2"),
    "vae_3.1_mse": ("vae-3.1-mse", "vae", "phase3"),
    "vae_3.2_perceptual": ("vae-3.2-perceptual", "vae", "phase3"),
    "vae_3.3_patchgan": ("vae-3.3-patchgan", "vae", "phase3"),
    "ddpm_4.1_linear-eps": ("ddpm-4.1-linear-eps", "ddpm", "phase4"),
    "ddpm_4.2_cosine": ("ddpm-4.2-cosine", "ddpm", "phase4"),
    "ddpm_4.3_vpred": ("ddpm-4.3-vpred", "ddpm", "phase4"),
    "ddpm_4.4_wide": ("ddpm-4.4-wide", "ddpm", "phase4"),
    "phase5_gan": ("phase5-gan", "gan", "phase5"),
    "phase5_vae": ("phase5-vae", "vae", "phase5"),
    "phase5_ddpm": ("phase5-ddpm", "ddpm", "phase5"),
    "gan_s004_dcgan": ("gan-s004-dcgan", "gan", "s004"),
    "gan_s004_lsgan": ("gan-s004-lsgan", "gan", "s004"),
    "gan_s004_wgan-clip": ("gan-s004-wgan-clip", "gan", "s004"),
    "stylegan_lite": ("stylegan-lite", "gan", "other"),
    "acgan_smiling": ("acgan-smiling", "acgan", "s003"),
    "cyclegan_s001_dc": ("cyclegan-s001-dc", "cyclegan", "s001"),
    "cyclegan_s001_patch": ("cyclegan-s001-patch", "cyclegan", "s001"),
    "cyclegan_smiling": ("cyclegan-smiling", "cyclegan", "s001"),
}
# Scripts that are not table rows.
NOT_ROWS = {
    "quickstart": "tested below at reduced size",
    "run_table": "runs the phase-2 rows below",
    "phase1_align": "MTCNN preprocessing (align_faces.py is tested in test_align.py)",
    "explore_latent": "a tool run on an export, not a table row",
    "mini_study": "runs every phase 1-5 row at CPU scale (tests/test_study.py)",
}
# Row scripts whose trainer call does not pass --out "${OUT:-runs}" yet: there OUT redirects evaluate.py only, so
# a smoke run must pass --out too (as run_row does). Remove a script from this set when it gains the flag.
NO_OUT_YET: set = set()  # every row script passes --out "${OUT:-runs}" to its trainer
TABLE_VIA_RUN_TABLE = "phase2"   # these rows go through scripts/run_table.sh, which also builds their table
WORKERS = 2                      # rows are independent processes; two keep both CPU cores busy


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    shim = tmp_path_factory.mktemp("shim")
    (shim / "accelerate").write_text(f'#!/bin/sh\n[ "$1" = launch ] && shift\nexec "{sys.executable}" "$@"\n')
    (shim / "accelerate").chmod(0o755)
    e = {**os.environ, "FACEGEN_CACHE": str(tmp_path_factory.mktemp("cache")), "OMP_NUM_THREADS": "1",
         "PATH": os.pathsep.join([str(shim), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
         "PYTHONPATH": str(ROOT)}
    for var in ("VGG_WEIGHTS", "FACEGEN_VGG_WEIGHTS", "DATA", "RAW", "ALIGNED", "RESOLUTION", "EVAL_ARGS", "OUT", "SKIP_EVAL"):
        e.pop(var, None)
    return e


def photo_folder(folder: Path, n: int, crop: int, seed: int) -> Path:
    """n PNG crops (with flips and brightness changes) around the face of skimage's astronaut photo."""
    from PIL import Image
    from skimage import data

    img = data.astronaut()            # 512×512, face around (x≈220, y≈110)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        x, y = 220 + int(rng.integers(-20, 21)) - crop // 2, 110 + int(rng.integers(-20, 21)) - crop // 2
        x, y = min(max(x, 0), 512 - crop), min(max(y, 0), 512 - crop)
        a = img[y:y + crop, x:x + crop].astype(np.float32) * rng.uniform(0.8, 1.2)
        a = np.clip(a, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            a = a[:, ::-1]
        Image.fromarray(a).resize((64, 64), Image.BICUBIC).save(folder / f"{i:03d}.png")
    return folder


def check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"{what}: exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\n"
                                  f"STDERR:\n{proc.stderr[-5000:]}")
    return proc


def run_row(stem: str, out: Path, env: dict, photos: dict) -> tuple[str, float]:
    _, family, _ = ROWS[stem]
    e = {**env, **photos, "OUT": str(out), "EVAL_ARGS": EVAL_ARGS[family]}
    t0 = time.perf_counter()
    # --out as well as OUT: a script that does not pass --out "${OUT:-runs}" itself must not write into runs/.
    proc = subprocess.run(["bash", f"scripts/{stem}.sh", *TINY, *FAMILY_ARGS[family], "--out", str(out)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)
    check(proc, f"scripts/{stem}.sh")
    return stem, time.perf_counter() - t0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, env):
    """All rows trained and evaluated under one OUT; the phase-2 rows through run_table.sh."""
    root = tmp_path_factory.mktemp("rows")
    out = root / "runs"
    photos = {"RAW": str(photo_folder(root / "raw", 24, 240, seed=0)),
              "ALIGNED": str(photo_folder(root / "aligned", 24, 140, seed=1))}
    t0 = time.perf_counter()
    table_rows = [s for s in ROWS if ROWS[s][2] == TABLE_VIA_RUN_TABLE]

    def run_table():
        e = {**env, "OUT": str(out), "EVAL_ARGS": EVAL_ARGS["gan"], "RESULTS": str(root / "run_table"),
             "COMPARE_ARGS": "--figures none"}
        proc = subprocess.run(["bash", "scripts/run_table.sh", TABLE_VIA_RUN_TABLE, *TINY, *FAMILY_ARGS["gan"],
                               "--out", str(out)],
                              cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
        return check(proc, "scripts/run_table.sh")

    with ThreadPoolExecutor(WORKERS) as pool:
        table_job = pool.submit(run_table)
        jobs = [pool.submit(run_row, s, out, env, photos) for s in ROWS if s not in table_rows]
        durations = dict(job.result() for job in jobs)
        table_job.result()
    print(f"\n{len(ROWS)} rows in {time.perf_counter() - t0:.1f} s; slowest: "
          + ", ".join(f"{s} {t:.1f} s" for s, t in sorted(durations.items(), key=lambda kv: -kv[1])[:3]))
    return root, out


# ------------------------------------------------------------------------------------------------ tests

def test_every_script_is_a_checked_row():
    """A new script must be added here (as a row, or with a reason); each row names its run once and
    evaluates exactly that export."""
    stems = {p.stem for p in SCRIPTS.glob("*.sh")}
    assert stems == set(ROWS) | set(NOT_ROWS), f"unlisted: {stems - set(ROWS) - set(NOT_ROWS)}; " \
                                               f"missing: {set(ROWS) | set(NOT_ROWS) - stems}"
    for stem, (name, family, _) in ROWS.items():
        text = (SCRIPTS / f"{stem}.sh").read_text()
        assert re.findall(r"--name (\S+)", text) == [name], stem
        train = re.search(r"^(accelerate launch|python) (train_\w+)\.py", text, re.M)
        # an 'acgan' export comes from train_gan.py --cond-attr (class conditioning is an option of the GAN trainer)
        assert train and train.group(2) == ("train_gan" if family == "acgan" else f"train_{family}"), stem
        evals = re.findall(r'^(?:\[ -n "\$\{SKIP_EVAL:-\}" \] \|\| )?python evaluate\.py --ckpt "\$(?:\{OUT:-runs\}|OUT)/([^/]+)/export\.safetensors"(.*)$',
                           text, re.M)
        assert [e[0] for e in evals] == [name], f"{stem}: evaluate line missing or for another run"
        assert "${EVAL_ARGS:-}" in evals[0][1], stem
        # The trainer writes where evaluate.py reads: --out "${OUT:-runs}" (or "$OUT" after OUT=${OUT:-runs})
        # before "$@", which ends the trainer call.
        has_out = bool(re.search(r'--out "\$(\{OUT:-runs\}|OUT)"[^\n]*(\\\n[^\n]*)*"\$@"', text))
        assert has_out == (stem not in NO_OUT_YET), f"{stem}: update NO_OUT_YET" if has_out else stem


def test_every_row_script_passes_its_row():
    """Each row script names its plan row (--row), the row of the table ROWS expects; the row is not a method flag."""
    from utils.row_scripts import row_id, row_of_run_name, trainer_flags
    from utils.table_specs import classify

    for stem, (name, _, table) in ROWS.items():
        row = row_id(stem)
        assert classify(row, name)[0] == table and row_of_run_name(name) == row, stem
        assert "--row" not in trainer_flags(stem), stem


def test_every_row_trains_and_evaluates(runs):
    from utils.row_scripts import row_id

    _, out = runs
    for stem, (name, family, _) in ROWS.items():
        m = read_metrics(out / name / "export_eval" / "metrics.json")
        assert m["source"]["family"] == family, stem
        config = json.loads((out / name / "config.json").read_text())
        assert config["row"] == row_id(stem), stem   # the trainer stored --row
        if family == "cyclegan":  # every held-out image of each domain (≤ --num-samples) translated to the other
            xy, yx = m["translate"]["xy"], m["translate"]["yx"]
            assert m["samples"]["n"] == xy["n_translated"] + yx["n_translated"] and xy["n_translated"] >= 8, stem
            # each direction's reference is the target domain's held-out images, capped by --n-real 8
            assert xy["real"]["n"] == min(8, yx["n_translated"]) and yx["real"]["n"] == min(8, xy["n_translated"]), stem
            for d in (xy, yx):
                assert math.isfinite(d["metrics"]["fid"]["value"]) and math.isfinite(d["untranslated_baseline"]["value"])
            assert m["metrics"]["fid"]["value"] == pytest.approx((xy["metrics"]["fid"]["value"]
                                                                  + yx["metrics"]["fid"]["value"]) / 2)
        else:
            assert m["samples"]["n"] == 16, stem
        if family == "acgan":  # per-class FID and classifier accuracy, 16 / 2 classes samples each
            pc = m["per_class"]
            assert set(pc["per_class"]) == {"not_Smiling", "Smiling"} and pc["num_per_class"] == 8, stem
            assert 0 <= pc["classifier"]["generated_accuracy"] <= 1, stem
        assert m["feature_extractor"]["name"].startswith("tiny"), stem
        assert math.isfinite(m["metrics"]["fid"]["value"]) and m["metrics"]["fid"]["value"] >= 0, stem
        assert m["metrics"]["params_generator"]["value"] > 0, stem
        assert m["source"]["step"] == 2, stem
    ddpm = read_metrics(out / "ddpm-4.4-wide" / "export_eval" / "metrics.json")
    assert ddpm["samples"]["sample_kwargs"] == {"steps": 2}   # EVAL_ARGS overrides the script's --sample-steps 100
    # The photo rows trained on the folders they were given (1D mixes RAW into the training set only).
    for name, src in (("phase1-1B-full", "raw"), ("phase1-1B-aligned", "aligned"), ("phase1-1D-combined", "aligned")):
        real = read_metrics(out / name / "export_eval" / "metrics.json")["real"]
        assert Path(real["source"]).name == src, name
    cfg = json.loads((out / "phase1-1D-combined" / "config.json").read_text())
    assert Path(cfg["combined"]).name == "raw" and cfg["seed"] == 1


def test_compare_builds_every_table(runs, env):
    root, out = runs
    res = root / "results"
    readme = root / "README.md"
    readme.write_text("intro\n<!-- results:phase4 -->\nold text\n<!-- /results:phase4 -->\nend\n")
    proc = check(subprocess.run([sys.executable, "compare.py", str(out), "--out", str(res), "--readme", str(readme)],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300), "compare.py")
    expected: dict[str, set] = {}
    for stem, (name, _, _) in ROWS.items():
        expected.setdefault(ROWS[stem][2], set()).add(name)
    for table, names in expected.items():
        with open(res / f"{table}.csv") as f:
            rows = list(csv.DictReader(f))
        assert {r["run"] for r in rows} == names, table
        assert all(math.isfinite(float(r["fid"])) for r in rows), table
        md = (res / f"{table}.md").read_text()
        what = "translated held-out images per model" if table == "s001" else "16 generated samples per model"
        assert what in md and "`tiny-random-conv-v1`" in md, table
        assert md.count("\n| ") >= len(names) + 1, table
        if table != "s001":   # translators log no training-time FID (--fid-every 0), so they have no FID curve
            assert (res / "figures" / f"{table}_fid.png").stat().st_size > 0, table
        assert (res / "figures" / f"{table}_losses.png").stat().st_size > 0, table
        for name in names:
            d = res / "figures" / name
            latent = ("interp.png", "interp.gif") if table != "s001" else ()   # a translator has no latent to walk
            for fig in ("grid.png", "progression.png", *latent, "failures.png"):
                assert (d / fig).stat().st_size > 0, f"{name}/{fig}"
            assert len(json.loads((d / "failures.json").read_text())["failures"]) == 8
    # Phase 1 mixes reference sets (synthetic, RAW, ALIGNED): the minority settings are marked, by reference set.
    with open(res / "phase1.csv") as f:
        flags = {r["run"]: r["settings_flag"] for r in csv.DictReader(f)}
    assert flags["phase1-1A-64px"] == flags["phase1-1C-flip"] == ""
    assert flags["phase1-1B-aligned"] == flags["phase1-1D-aligned"] == flags["phase1-1D-combined"] != ""
    assert flags["phase1-1B-full"] not in ("", flags["phase1-1B-aligned"])
    with open(res / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(ROWS)
    text = readme.read_text()
    assert "old text" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| 4.1 | DDPM linear + ε |" in text and "README" in proc.stdout
    # run_table.sh built the phase-2 table on its own.
    assert {r["run"] for r in csv.DictReader(open(root / "run_table" / "phase2.csv"))} == expected["phase2"]


def test_photo_rows_refuse_to_run_without_photos(env):
    for stem in ("phase1_1B_full", "phase1_1B_aligned", "phase1_1D_aligned", "phase1_1D_combined", "phase1_align"):
        proc = subprocess.run(["bash", f"scripts/{stem}.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 2, stem
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "photos" in lines[0], (stem, proc.stderr)


def test_quickstart_falls_back_to_the_tiny_network_without_inception(tmp_path, env):
    e = {**env, "OUT": str(tmp_path), "STEPS": "2", "SAMPLES": "16", "SYNTHETIC_SIZE": "48",
         "FACEGEN_FID_WEIGHTS": str(tmp_path / "missing-inception.pt"), "EVAL_ARGS": "--metrics fid,kid,params"}
    proc = check(subprocess.run(["bash", "scripts/quickstart.sh", "--resolution", "16", "--ngf", "8", "--ndf", "8",
                                 "--batch-size", "4"], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300),
                 "scripts/quickstart.sh")
    assert "notice: Inception weights unavailable" in proc.stdout and "missing-inception.pt" in proc.stdout
    m = read_metrics(tmp_path / "quickstart" / "export_eval" / "metrics.json")
    assert m["feature_extractor"]["name"] == "tiny-random-conv-v1" and math.isfinite(m["metrics"]["fid"]["value"])
    assert m["samples"]["n"] == 16 and m["real"]["n"] == 16
    assert (tmp_path / "quickstart" / "samples.png").stat().st_size > 0
    assert str(tmp_path / "quickstart" / "export_eval" / "metrics.json") in proc.stdout


def test_row_scripts_read_as_data():
    """utils.row_scripts: a row's name and method flags come from its script, without the place flags or the
    values the shell fills in."""
    from utils.row_scripts import row_script, run_name, trainer_flags

    assert row_script("gan", "2.3") == "gan_2.3_wgan-gp-sn-attn" and run_name("phase5_gan") == "phase5-gan"
    flags = trainer_flags("phase5_gan")
    assert "--sn" in flags and "--attn" in flags and flags[flags.index("--n-critic") + 1] == "2"
    assert not {"--data", "--out", "--name", "--resolution"} & set(flags)   # --resolution "$RESOLUTION" dropped
    combined = trainer_flags("phase1_1D_combined")
    assert "--combined" not in combined and combined[combined.index("--seed") + 1] == "1"
    for stem in ROWS:
        assert run_name(stem) == ROWS[stem][0]
