"""compare.py: grouping rows into the plan's tables, Markdown/CSV/README output, settings flags, and the figures
(grid, progression, slerp interpolation incl. DDIM from slerped noise, failure modes, curves) on tiny random
exports of every family evaluated by evaluate.py with the seeded 'tiny' feature network."""
from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import compare
import evaluate
from models import build_model
from utils.export import atomic_write_json, load_export, save_export
from utils.figures import slerp
from utils.metrics_schema import read_metrics
from utils.row_scripts import row_of_run_name
from utils.table_render import read_notes, replace_marked
from utils.table_rows import find_metrics_files, load_rows
from utils.table_specs import CompareError, classify

TRAIN_CONFIG = {"data": "synthetic", "synthetic_size": 48, "n_real": 8, "resolution": 16, "batch_size": 4, "crop": "center"}
CONFIGS = {
    "gan": {"resolution": 16, "latent_dim": 8, "ngf": 8, "ndf": 8},
    "vae": {"resolution": 16, "latent_dim": 8, "base_channels": 8, "max_channels": 16},
    "ddpm": {"resolution": 16, "base_channels": 16, "layers_per_block": 1, "attn_res": [8], "beta_schedule": "cosine"},
}
RUN_NAMES = {"gan": "gan-2.1-dcgan", "vae": "vae-3.1-mse", "ddpm": "ddpm-4.2-cosine"}
EVAL = ["--num-samples", "16", "--batch-size", "8", "--feature-extractor", "tiny", "--metrics", "fid,kid,pr,params",
        "--save-samples", "0"]


def make_run(root: Path, family: str, name: str, epochs=(10, 20, 50, 100, 150, 200)) -> Path:
    """A run directory as a trainer leaves it: config.json, exports/step*.safetensors, export.safetensors,
    stats.jsonl (train losses and training-time FID).  Weights are random; 10 steps per epoch (40 images / 4)."""
    run = root / name
    torch.manual_seed(0)
    model = build_model(family, CONFIGS[family])
    extra = {"data": {"num_train": 40}}
    for e in epochs:
        save_export(run / "exports" / f"step{e * 10:07d}.safetensors", family, model, CONFIGS[family], TRAIN_CONFIG,
                    step=e * 10, epoch=e, train_seconds=e, extra=extra)
    save_export(run / "export.safetensors", family, model, CONFIGS[family], TRAIN_CONFIG, step=epochs[-1] * 10,
                epoch=epochs[-1], train_seconds=123.0, extra=extra)
    atomic_write_json(run / "config.json", {"family": family, "name": name, **TRAIN_CONFIG})
    lines = [{"kind": "train", "step": s, "loss": 1.0 / s} for s in range(1, 2001, 100)]
    lines += [{"kind": "fid", "step": s, "fid": 100.0 - s / 100, "num_samples": 8, "extractor": "tiny"}
              for s in (500, 1000, 2000)]
    (run / "stats.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    return run


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tests/conftest.py: the shared runs too


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs (one per family), each evaluated by evaluate.py."""
    import os

    from accelerate.state import AcceleratorState

    root = tmp_path_factory.mktemp("compare")
    old = os.environ.get("FACEGEN_CACHE")
    os.environ["FACEGEN_CACHE"] = str(root / "cache")
    try:
        for family, name in RUN_NAMES.items():
            run = make_run(root / "runs", family, name)
            evaluate.main(["--ckpt", str(run / "export.safetensors"), *EVAL]
                          + (["--sample-steps", "2"] if family == "ddpm" else []))
            AcceleratorState._reset_state(reset_partial_state=True)
        yield root
    finally:
        if old is None:
            os.environ.pop("FACEGEN_CACHE", None)
        else:
            os.environ["FACEGEN_CACHE"] = old


# ------------------------------------------------------------------------------------------------ tables

@pytest.mark.parametrize("name, table, lead", [
    ("phase1-1A-128px", "phase1", ("1A", "Resolution", "128×128")),
    ("phase1-1D-combined", "phase1", ("1D", "Combined dataset", "Aligned + raw mixed")),
    ("gan-2.3-wgan-gp-sn-attn", "phase2", ("2.3", "WGAN-GP + SN + Attn")),
    ("vae-3.2-perceptual", "phase3", ("3.2", "+ Perceptual")),
    ("gan-2.3-my-variant", "other", ("gan-2.3-my-variant", "gan")),   # no script's name: not guessed from its form
    ("phase5-ddpm", "phase5", ("Best DDPM (4.4)",)),
    ("gan-s004-wgan-clip", "s004", ("WGAN (weight clipping)",)),
    ("gan-dcgan-synthetic-64px-1a2b3c", "other", ("gan-dcgan-synthetic-64px-1a2b3c", "gan")),
])
def test_run_names_map_to_plan_tables(name, table, lead):
    """A run without a stored row is placed by the row of the script that gives it exactly its name."""
    t, _, got_lead, _ = classify(row_of_run_name(name), name, "gan")
    assert (t, got_lead) == (table, lead)


def test_row_order_follows_the_plan():
    rows = ["2.4", "2.1", "2.3", "2.2"]
    assert sorted(rows, key=lambda r: classify(r, "run")[3]) == ["2.1", "2.2", "2.3", "2.4"]
    p1 = ["1D-combined", "1A-128px", "1B-full", "1A-64px"]
    assert sorted(p1, key=lambda r: classify(r, "run")[3]) == ["1A-64px", "1A-128px", "1B-full", "1D-combined"]


def test_a_stored_row_places_the_run_whatever_its_name(runs, tmp_path):
    """config.json's row (the --row a row script passes to its trainer) decides the table; a run without one that
    no script names lands in 'other', however much its name looks like a row's."""
    src = runs / "runs" / "gan-2.1-dcgan"
    metrics = read_metrics(src / "export_eval" / "metrics.json")
    metrics["source"]["path"] = "/nonexistent/export.safetensors"   # placed by its run directory's config.json
    paths = []
    for name, row in (("my-experiment", "2.3"), ("gan-2.3-my-variant", None), ("gan-2.2-wgan-gp", "s004-lsgan")):
        atomic_write_json(tmp_path / name / "export_eval" / "metrics.json", metrics)
        atomic_write_json(tmp_path / name / "config.json", {**json.loads((src / "config.json").read_text()),
                                                            "name": name, "row": row})
        paths.append(tmp_path / name / "export_eval" / "metrics.json")
    rows, skipped = load_rows(paths)
    assert not skipped
    assert {r.name: (r.table, r.lead) for r in rows} == {
        "my-experiment": ("phase2", ("2.3", "WGAN-GP + SN + Attn")),
        "gan-2.3-my-variant": ("other", ("gan-2.3-my-variant", "gan")),
        "gan-2.2-wgan-gp": ("s004", ("LSGAN",))}                     # the stored row wins over a script's name


def clone_row(runs_root: Path, src: str, name: str, **changes) -> Path:
    """A copy of a real evaluation under another run name, with some metrics.json fields changed."""
    m = read_metrics(runs_root / "runs" / src / "export_eval" / "metrics.json")
    m = copy.deepcopy(m)
    for path, value in changes.items():
        d = m
        *parents, leaf = path.split(".")
        for p in parents:
            d = d[p]
        d[leaf] = value
    m["source"]["path"] = "/nonexistent/export.safetensors"
    out = runs_root / "clones" / name / "metrics.json"
    atomic_write_json(out, m)
    return out


def test_tables_markdown_csv_flags_and_readme(runs, tmp_path):
    gan = runs / "runs" / "gan-2.1-dcgan" / "export_eval" / "metrics.json"
    other = clone_row(runs, "gan-2.1-dcgan", "gan-2.2-wgan-gp", **{"metrics.fid": {"value": 12.345678},
                                                                   "metrics.kid": {"value": None,
                                                                                   "not_computed": "not requested"}})
    diff = clone_row(runs, "gan-2.1-dcgan", "gan-2.4-128px", **{"samples.n": 5000})
    # Clones have no export next to them: name them by folder (the fallback) via their config-less layout.
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:phase2 -->\nstale\n<!-- /results:phase2 -->\n<!-- results:phase9 -->\nkeep\n"
                      "<!-- /results:phase9 -->\n")
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"gan-2.1-dcgan": "mode collapse | oscillating losses",
                                 "gan-2.2-wgan-gp": {"observed": "slow start", "motivates": "spectral norm (2.3)"}}))
    tables = compare.main([str(gan), str(other), str(diff), "--out", str(tmp_path / "res"), "--figures", "none",
                           "--readme", str(readme), "--notes", str(notes)])
    rows = tables["phase2"]
    assert [r.name for r in rows] == ["gan-2.1-dcgan", "gan-2.2-wgan-gp", "gan-2.4-128px"]
    md = (tmp_path / "res" / "phase2.md").read_text()
    assert "| 2.2 | WGAN-GP | 12.35ᵇ | n/a |" in md                 # 16 samples for 64-d features: biased
    assert "mode collapse \\| oscillating losses |  |" in md     # notes column, pipe escaped
    assert "| Main observed failure | Motivates next step |" in md and "| slow start | spectral norm (2.3) |" in md
    # Row 2.4's variable is the size: its label is the size it trained at (16 px here), not the plan's 128.
    assert "| 2.4† | + 16×16 |" in md and "† Evaluated under different settings" in md
    assert "5000 generated samples" in md and "16 generated samples per model (seed 0)" in md
    assert "not comparable with published FIDs" in md           # tiny extractor is called out
    with open(tmp_path / "res" / "phase2.csv") as f:
        recs = {r["run"]: r for r in csv.DictReader(f)}
    assert float(recs["gan-2.2-wgan-gp"]["fid"]) == 12.345678 and recs["gan-2.2-wgan-gp"]["kid"] == ""
    real_fid = read_metrics(gan)["metrics"]["fid"]["value"]
    assert float(recs["gan-2.1-dcgan"]["fid"]) == real_fid      # exact round trip, no rounding in the CSV
    assert recs["gan-2.4-128px"]["settings_flag"] == "†" and recs["gan-2.1-dcgan"]["settings_flag"] == ""
    text = readme.read_text()
    assert "stale" not in text and "keep" in text and "| 2.1 | DCGAN |" in text
    assert text.count("<!-- results:phase2 -->") == 1 and "res/phase2.md" in text
    once = text
    compare.main([str(gan), str(other), str(diff), "--out", str(tmp_path / "res"), "--figures", "none",
                  "--readme", str(readme), "--notes", str(notes)])
    assert readme.read_text() == once                             # idempotent


def test_ddpm_tables_state_the_sampler(runs, tmp_path):
    """A DDPM's FID depends on its DDIM settings as much as on its weights: evaluate.py records them and the table
    says what the rows were sampled with (evaluate.py --sample-steps 2 in the fixture)."""
    ddpm = runs / "runs" / "ddpm-4.2-cosine" / "export_eval" / "metrics.json"
    sampler = read_metrics(ddpm)["samples"]["sampler"]
    assert sampler["sampler"] == "ddim" and sampler["steps"] == 2 and sampler["eta"] == 0.0
    older = clone_row(runs, "ddpm-4.2-cosine", "ddpm-4.3-vpred", **{"samples.sampler": None})
    compare.main([str(ddpm), str(older), "--out", str(tmp_path / "res"), "--figures", "none"])
    md = (tmp_path / "res" / "phase4.md").read_text()
    spacing = sampler["timestep_spacing"]
    assert (f"Sampling: 4.2: DDIM, 2 steps, η = 0, `{spacing}` timesteps, fp32; 4.3: DDIM (evaluate.py steps=2)."
            in md), md
    gan = runs / "runs" / "gan-2.1-dcgan" / "export_eval" / "metrics.json"
    compare.main([str(gan), "--out", str(tmp_path / "gan"), "--figures", "none"])
    assert "Sampling:" not in (tmp_path / "gan" / "phase2.md").read_text()


def test_tables_state_precision_recall_features(runs, tmp_path):
    gan = runs / "runs" / "gan-2.1-dcgan" / "export_eval" / "metrics.json"
    vgg = {"features": "vgg16 fc2 (4096-d)", "features_name": "vgg16-fc2", "features_sha256": "ab" * 32, "k": 3}
    m = read_metrics(gan)["metrics"]
    other = clone_row(runs, "gan-2.1-dcgan", "gan-2.2-wgan-gp", **{"metrics.precision": {**m["precision"], **vgg},
                                                                   "metrics.recall": {**m["recall"], **vgg}})
    tables = compare.main([str(gan), str(other), "--out", str(tmp_path / "res"), "--figures", "none"])
    assert [r.flag for r in tables["phase2"]] == ["", "†"]       # P/R on other features: not comparable
    md = (tmp_path / "res" / "phase2.md").read_text()
    assert "precision/recall on `tiny random conv (64-d; tests only)` features" in md
    assert "not the VGG-16 fc2 features of the paper" in md
    footnote = next(line for line in md.splitlines() if line.startswith("† "))
    assert "precision/recall on `vgg16 fc2 (4096-d)` features (sha256 `abababababab`, k=3)" in footnote
    with open(tmp_path / "res" / "phase2.csv") as f:
        recs = {r["run"]: r for r in csv.DictReader(f)}
    assert recs["gan-2.2-wgan-gp"]["pr_features"] == "vgg16 fc2 (4096-d)"
    assert recs["gan-2.1-dcgan"]["pr_features"] == "tiny random conv (64-d; tests only)"


def test_replace_marked_only_touches_its_block():
    text = "a\n<!-- results:phase3 -->x<!-- /results:phase3 -->\nb <!-- results:phase2 -->y<!-- /results:phase2 -->"
    new, found = replace_marked(text, "phase2", "TABLE")
    assert found and new == "a\n<!-- results:phase3 -->x<!-- /results:phase3 -->\nb <!-- results:phase2 -->\nTABLE\n" \
                            "<!-- /results:phase2 -->"
    assert replace_marked(text, "phase4", "T") == (text, False)


def test_duplicate_run_names_keep_the_newest(runs):
    a = clone_row(runs, "vae-3.1-mse", "dup-a", created="2030-01-01T00:00:00+0000")
    b = clone_row(runs, "vae-3.1-mse", "dup-b", created="2020-01-01T00:00:00+0000")
    rows, skipped = load_rows([a, b])
    assert len(rows) == 2                   # different folders, different names ("dup-a", "dup-b")
    src = runs / "runs" / "vae-3.1-mse" / "export_eval" / "metrics.json"
    newer = clone_row(runs, "vae-3.1-mse", "x/export_eval", created="2031-01-01T00:00:00+0000")
    m = json.loads(newer.read_text())
    m["source"]["path"] = str(runs / "runs" / "vae-3.1-mse" / "export.safetensors")
    newer.write_text(json.dumps(m))
    rows, skipped = load_rows([src, newer])
    assert [r.metrics_path for r in rows] == [newer] and "also evaluated" in skipped[0]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(CompareError, match="does not exist"):
        compare.main([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        compare.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert str(e.value).startswith("error: no usable metrics.json") and "\n" not in str(e.value)
    bad = tmp_path / "bad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text("{\"schema_version\": 1}")
    files, _ = find_metrics_files([str(bad.parent)])
    rows, skipped = load_rows(files)
    assert rows == [] and "missing or mistyped" in skipped[0]
    notes = tmp_path / "n.json"
    notes.write_text("[1, 2]")
    with pytest.raises(CompareError, match="must be a JSON object"):
        read_notes(str(notes))
    with pytest.raises(SystemExit):
        compare.build_parser().parse_args(["x", "--figures", "grid,movie"])
    assert "unknown figure(s) movie" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ figures

def test_slerp_endpoints_norm_and_constant_angle():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)   # equal norms: the path stays on the sphere
    t = torch.linspace(0, 1, 5)
    path = slerp(a, b, t)
    assert path.shape == (3, 5, 64)
    torch.testing.assert_close(path[:, 0], a)
    torch.testing.assert_close(path[:, -1], b)
    torch.testing.assert_close(path.norm(dim=2), a.norm(dim=1, keepdim=True).expand(3, 5))
    cos = torch.nn.functional.cosine_similarity(path[:, :-1], path[:, 1:], dim=2)
    torch.testing.assert_close(cos, cos[:, :1].expand_as(cos))        # equal angular steps
    same = slerp(a, a, t)                                     # parallel vectors: no division by sin(0)
    assert torch.isfinite(same).all()
    torch.testing.assert_close(same[:, 2], a)


def test_snapshot_choice():
    snaps = [{"step": e * 10, "epoch": e, "path": None} for e in (5, 10, 20, 45, 55, 100, 150, 200)]
    assert [s["epoch"] for s in compare.choose_snapshots(snaps)] == [10, 45, 100, 200]   # 45/55 tie → earlier
    short = [{"step": s, "epoch": 0, "path": None} for s in (1, 2, 3, 4, 8)]
    assert [s["step"] for s in compare.choose_snapshots(short)] == [2, 4, 8]              # fractions 1/4…1 of 8
    assert compare.choose_snapshots([]) == []


def test_failure_modes_pick_the_samples_farthest_from_any_real_image():
    real = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    fake = np.array([[0.5, 0.0], [4.0, 6.0], [10.0, 0.2], [30.0, 25.0], [0.0, 9.0]])
    dist, idx = compare.nearest_real(fake, real)
    np.testing.assert_allclose(dist, [0.5, math.hypot(4, 4), 0.2, math.hypot(20, 25), 1.0])
    assert list(idx) == [0, 2, 1, 1, 2]
    assert list(compare.worst_samples(dist, 2)) == [3, 1]


def test_ddim_from_slerped_noise_matches_the_models_sampler(runs):
    ex = load_export(runs / "runs" / "ddpm-4.2-cosine" / "export.safetensors")
    g = torch.Generator().manual_seed(3)
    reference = ex.model.sample(2, generator=g, steps=3)
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(compare.ddim_from_noise(ex.model, x_T, steps=3), reference)


def test_figures_for_every_family(runs, tmp_path):
    out = tmp_path / "res"
    tables = compare.main([str(runs / "runs"), "--out", str(out), "--interp-pairs", "2", "--interp-steps", "5",
                           "--failure-k", "4", "--failure-samples", "12"])
    assert set(tables) == {"phase2", "phase3", "phase4"}
    for family, name in RUN_NAMES.items():
        d = out / "figures" / name
        grid = np.asarray(Image.open(d / "grid.png"))
        assert grid.shape == (4 * 18 + 2, 4 * 18 + 2, 3)                       # 16 samples of 16 px, 2 px padding
        prog = Image.open(d / "progression.png")
        assert prog.height == 4 * (48 + 4)       # epochs 10, 50, 100, 200, enlarged 16 → 48 px, padded
        interp = Image.open(d / "interp.png")
        assert interp.size == (5 * 50 + 2, 2 * 50 + 2)
        gif = Image.open(d / "interp.gif")
        assert gif.n_frames == 2 * 5 - 2                                          # forth and back
        fail = json.loads((d / "failures.json").read_text())
        dists = [f["nn_distance"] for f in fail["failures"]]
        assert len(dists) == 4 and dists == sorted(dists, reverse=True) and fail["searched_samples"] == 12
        assert Image.open(d / "failures.png").height == 2 * 50 + 2
    ex = load_export(runs / "runs" / "gan-2.1-dcgan" / "export.safetensors")
    row = next(r for r in tables["phase2"])
    images = compare.interpolation_images(ex, row, seed=0, pairs=2, steps=5)
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(images[:, 0], ex.model.sample(2, z=z[0::2]))     # paths start and end at the
    torch.testing.assert_close(images[:, -1], ex.model.sample(2, z=z[1::2]))    # fixed latents
    for t in ("phase2", "phase3", "phase4"):
        assert (out / "figures" / f"{t}_fid.png").stat().st_size > 0
        assert (out / "figures" / f"{t}_losses.png").stat().st_size > 0
    assert compare.steps_per_epoch(row) == 10
    results = (out / "results.md").read_text()
    assert results.count("figures/gan-2.1-dcgan/grid.png") == 1 and "interp.gif" in results


def test_biased_fid_footnote_and_new_metric_columns(runs, tmp_path):
    """A Fréchet distance from fewer samples than feature dimensions is marked in every table with a footnote
    giving the counts; density/coverage/FD-DINOv2 get columns only where some row has them; files written before
    those metrics (and before entries carried their counts) still make rows."""
    src = runs / "runs" / "gan-2.1-dcgan" / "export_eval" / "metrics.json"
    m = read_metrics(src)["metrics"]
    fid = {k: v for k, v in m["fid"].items() if k not in ("biased", "num_samples", "num_real", "feature_dim", "note")}
    old_style = clone_row(runs, "gan-2.1-dcgan", "phase5-gan", **{   # an Inception-sized, pre-2026 metrics.json
        "samples.n": 1000, "real.n": 1000, "feature_extractor.dim": 2048, "metrics.fid": fid})
    raw = json.loads(old_style.read_text())
    for name in ("density", "coverage", "fd_dinov2"):
        raw["metrics"].pop(name, None)
    old_style.write_text(json.dumps(raw))
    dino = {"value": 123.456, "features": "dinov2 vit-l/14 CLS (1024-d)", "features_name": "dinov2-vitl14",
            "features_sha256": "cd" * 32, "num_samples": 5000, "num_real": 5000, "feature_dim": 1024, "biased": False}
    new = clone_row(runs, "gan-2.1-dcgan", "phase5-vae", **{
        "metrics.density": {"value": 0.912, "k": 5, "features": m["precision"]["features"], "num_samples": 16,
                            "num_real": 8},
        "metrics.coverage": {"value": 0.75, "k": 5, "features": m["precision"]["features"], "num_samples": 16,
                             "num_real": 8},
        "metrics.fd_dinov2": dino})
    tables = compare.main([str(old_style), str(new), "--out", str(tmp_path / "res"), "--figures", "none"])
    assert [r.name for r in tables["phase5"]] == ["phase5-gan", "phase5-vae"]
    md = (tmp_path / "res" / "phase5.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    assert "| FID ↓ | KID ↓ | FD-DINOv2 ↓ | Precision ↑ | Recall ↑ | Density ↑ | Coverage ↑ | IS ↑ |" in header
    gan_line = next(line for line in md.splitlines() if line.startswith("| Best GAN"))
    assert f"| {m['fid']['value']:.2f}ᵇ |" in gan_line and "| n/a | n/a |" in gan_line   # no density in an old file
    vae_line = next(line for line in md.splitlines() if line.startswith("| Best VAE"))
    assert "| 123.46 |" in vae_line and "| 0.912 | 0.750 |" in vae_line
    note = next(line for line in md.splitlines() if line.startswith("ᵇ Biased"))
    assert "FID from 1000 generated / 1000 real images with 2048-d features (`phase5-gan`)" in note
    assert "FID from 16 generated / 8 real images with 64-d features (`phase5-vae`)" in note
    assert "KID, unbiased at any n" in note
    assert "FD-DINOv2 (Fréchet distance in DINOv2 features; Stein et al. 2023) on `dinov2 vit-l/14 CLS (1024-d)`" in md
    with open(tmp_path / "res" / "phase5.csv") as f:
        recs = {r["run"]: r for r in csv.DictReader(f)}
    assert recs["phase5-gan"]["fid_biased"] == "true" and recs["phase5-gan"]["density"] == ""
    assert recs["phase5-vae"]["fd_dinov2"] == "123.456" and recs["phase5-vae"]["fd_dinov2_biased"] == "false"
    # Enough samples: no mark, no footnote.
    fine = clone_row(runs, "gan-2.1-dcgan", "phase5-ddpm", **{"samples.n": 5000, "real.n": 5000,
                                                                "feature_extractor.dim": 2048, "metrics.fid": fid})
    compare.main([str(fine), "--out", str(tmp_path / "fine"), "--figures", "none"])
    md = (tmp_path / "fine" / "phase5.md").read_text()
    assert "ᵇ" not in md and "Density" not in md


def test_failure_figures_only_for_the_tables_asked(runs, tmp_path):
    """--failure-tables phase3: the VAE row gets its failures figure, the GAN and DDPM rows (other tables) do not."""
    out = tmp_path / "res"
    compare.main([str(runs / "runs"), "--out", str(out), "--figures", "failures", "--failure-tables", "phase3",
                  "--failure-k", "2", "--failure-samples", "6"])
    made = {name for name in RUN_NAMES.values() if (out / "figures" / name / "failures.png").exists()}
    assert made == {RUN_NAMES["vae"]}
    # --failure-real hide: one row of samples, no real image; the JSON still names each sample's nearest real one.
    hidden = tmp_path / "hidden"
    compare.main([str(runs / "runs"), "--out", str(hidden), "--figures", "failures", "--failure-tables", "phase3",
                  "--failure-k", "2", "--failure-samples", "6", "--failure-real", "hide"])
    d = hidden / "figures" / RUN_NAMES["vae"]
    shown, kept = Image.open(d / "failures.png"), Image.open(out / "figures" / RUN_NAMES["vae"] / "failures.png")
    assert kept.height == 2 * 50 + 2 and shown.height == 50 + 2 and shown.width == kept.width
    assert np.array_equal(np.asarray(shown)[:50], np.asarray(kept)[:50])    # the same samples on top
    fail = json.loads((d / "failures.json").read_text())
    assert fail["real_images_shown"] is False and all("nearest_real_index" in f for f in fail["failures"])
