"""train_vae.py end to end on CPU: each plan row's script through `accelerate launch`, two processes,
exact resume, and one-line flag errors (in-process).  Runs are tiny (16–32 px, batch 4, a few steps)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import vae_flags, vae_training
from utils.export import load_export
from utils.vae_latent_plot import latent_plot, match_attribute, read_attribute

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synthetic-size", "64", "--n-real", "16", "--batch-size", "4", "--fid-every", "0", "--sample-every", "2",
        "--save-every", "2", "--log-every", "1", "--base-channels", "8", "--max-channels", "32", "--latent-dim", "16",
        "--disc-ndf", "8", "--latent-plot", "pca"]
VGG_ENV = os.environ.get("FACEGEN_VGG_WEIGHTS")


@pytest.fixture(scope="module")
def env(cache_dir) -> dict:
    e = {**os.environ, "FACEGEN_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "SKIP_EVAL": "1", "PYTHONPATH": str(ROOT),
         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    e.pop("VGG_WEIGHTS", None)
    return e


def run_cmd(cmd: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    return proc


def launch(args: list[str], env: dict, processes: int = 1) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", str(processes)]
    if processes > 1:  # without CUDA, --multi_gpu alone starts N independent single-process runs
        cmd.append("--multi_gpu")
        env = {**env, "ACCELERATE_USE_CPU": "true"}
    return run_cmd(cmd + ["train_vae.py", *args], env)


def records(run_dir: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def check_run(run_dir: Path, resolution: int, steps: int) -> None:
    """The export rebuilds from the file alone and samples/reconstructs; logs and pictures are there."""
    ex = load_export(run_dir / "export.safetensors", family="vae")
    assert ex.weights == "ema" and ex.step == steps and ex.model_config["resolution"] == resolution
    x = ex.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, resolution, resolution) and torch.isfinite(x).all() and x.abs().max() <= 1
    mu, logvar = ex.model.encode(x)
    assert mu.shape == logvar.shape == (3, ex.model_config["latent_dim"])
    held = ex.extra["heldout"]
    assert held["images"] == 16 and held["mse"] > 0 and held["mse_255"] == pytest.approx(held["mse"] * 127.5 ** 2)
    evals = records(run_dir, "eval")
    assert [r["step"] for r in evals][0] == 0 and evals[-1]["step"] == steps  # from step 0 to the end
    assert evals[-1]["mse"] == pytest.approx(held["mse"])
    train = records(run_dir, "train")
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert all(r["kl"] >= 0 and np.isfinite(r["loss"]) for r in train)
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "loss.png", "kl.png",
                 "heldout_mse.png", "recon/step0000002.png", "samples/step0000002.png"):
        assert (run_dir / name).stat().st_size > 0, name


def row(script: str, args: list[str], env: dict, **extra_env) -> subprocess.CompletedProcess:
    return run_cmd(["bash", f"scripts/{script}", *args], {**env, **extra_env})


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> tuple[Path, Path]:
    """40 rendered faces as PNGs in a folder, plus a CelebA-format attribute file for them."""
    from PIL import Image

    from utils.synthetic import face_attributes, render_faces

    folder = tmp_path_factory.mktemp("faces")
    imgs, attrs = render_faces(range(40), 48), face_attributes(range(40))["short_hair"]
    lines = ["40", "Smiling Male"]
    for i, (img, male) in enumerate(zip(imgs, attrs)):
        # align_faces.py writes PNGs; CelebA's file lists the original .jpg names: they match by stem.
        Image.fromarray(img).save(folder / f"{i + 1:06d}.png")
        lines.append(f"{i + 1:06d}.jpg -1 {' 1' if male else '-1'}")
    attr = tmp_path_factory.mktemp("attr") / "list_attr_celeba.txt"
    attr.write_text("\n".join(lines) + "\n")
    return folder, attr


# ------------------------------------------------------------------------------------------- rows

def test_row_3_1_on_an_image_folder_with_attribute_file(tmp_path, env, face_folder):
    folder, attr = face_folder
    proc = row("vae_3.1_mse.sh", [*TINY, "--resolution", "16", "--max-steps", "3", "--out", str(tmp_path),
                                  "--attr-file", str(attr), "--attr", "Male",
                                  "--fid-every", "2", "--fid-extractor", "tiny", "--fid-samples", "16"],
               env, DATA=str(folder))
    run_dir = tmp_path / "vae-3.1-mse"
    check_run(run_dir, 16, 3)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["beta"] == 1.0 and cfg["lambda_perc"] == 0 and cfg["lambda_adv"] == 0 and cfg["lr"] == 1e-3
    assert "16 of 16 held-out images have a row" in proc.stdout
    assert (run_dir / "latent_pca.png").stat().st_size > 0
    assert "d_loss" not in records(run_dir, "train")[-1] and "perc" not in records(run_dir, "train")[-1]
    fid = records(run_dir, "fid")  # the training-time FID hook samples the EMA VAE through .sample
    assert [r["step"] for r in fid] == [2] and np.isfinite(fid[0]["fid"])


def test_row_3_2_perceptual(tmp_path, env):
    vgg = [] if VGG_ENV else ["--vgg-init", "random"]
    proc = row("vae_3.2_perceptual.sh", [*TINY, "--resolution", "32", "--max-steps", "3", "--out", str(tmp_path),
                                         *vgg], env, **({"VGG_WEIGHTS": VGG_ENV} if VGG_ENV else {}))
    run_dir = tmp_path / "vae-3.2-perceptual"
    check_run(run_dir, 32, 3)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["lambda_perc"] == 0.1 and (cfg["vgg_weights"] == VGG_ENV if VGG_ENV else cfg["vgg_init"] == "random")
    assert all(r["perc"] > 0 for r in records(run_dir, "train"))
    assert "perceptual loss: VGG-16 from" in proc.stdout
    assert (run_dir / "latent_pca.png").stat().st_size > 0  # synthetic faces bring their own attributes


@pytest.fixture(scope="module")
def row_3_3(tmp_path_factory, env) -> Path:
    """Row 3.3 for 4 steps at 16 px, discriminator on from step 1 (the script's 10ep would be after the run)."""
    out = tmp_path_factory.mktemp("row33")
    row("vae_3.3_patchgan.sh", [*TINY, "--resolution", "16", "--disc-layers", "2", "--disc-start", "1",
                                "--max-steps", "4", "--vgg-init", "random", "--out", str(out)], env)
    return out / "vae-3.3-patchgan"


def test_row_3_3_patchgan(row_3_3):
    check_run(row_3_3, 16, 4)
    cfg = json.loads((row_3_3 / "config.json").read_text())
    assert cfg["beta"] == 1e-4 and cfg["lambda_perc"] == 0.1 and cfg["lambda_adv"] == 0.1
    train = records(row_3_3, "train")
    assert "d_loss" not in train[0]                                      # step 0: discriminator still off
    assert all(np.isfinite(r["d_loss"]) and "adv" in r for r in train[1:])
    # VQGAN's adaptive weight (the default): λ_adv times a gradient-norm ratio, logged as adv_w, not λ_adv itself.
    assert cfg["adv_weight"] == "adaptive"
    assert all(r["adv_w"] > 0 and r["adv_w"] != pytest.approx(0.1) for r in train[1:])


def test_prior_gap_bench_recomputes_the_trainers_heldout_figures(tmp_path, env, row_3_3):
    """bench/vae_prior_gap.py rebuilds the export's held-out split from the file alone: its reconstruction MSE and KL
    on all 16 held-out images are the ones the trainer stored in the export."""
    out = tmp_path / "gap.json"
    run_cmd([sys.executable, "bench/vae_prior_gap.py", str(row_3_3 / "export.safetensors"), "--n", "16",
             "--batch-size", "8", "--feature-extractor", "tiny", "--out", str(out)], env)
    r = json.loads(out.read_text())["exports"][str(row_3_3 / "export.safetensors")]
    held = load_export(row_3_3 / "export.safetensors").extra["heldout"]
    assert r["heldout_mse"] == pytest.approx(held["mse"], rel=1e-5)
    assert r["heldout_kl_nats"] == pytest.approx(held["kl"], rel=1e-5)
    assert r["fid_reconstructions"] > 0 and r["fid_prior_samples"] > 0 and r["posterior_second_moment"]["mean"] > 0
    for part in ("precision_recall_reconstructions", "precision_recall_prior_samples"):
        assert set(r[part]) == {"precision", "recall"} and all(0 <= v <= 1 for v in r[part].values())
    # the held-out features went to evaluate.py's reference cache, under evaluate.py's key: a second run reads them
    stats = Path(env["FACEGEN_CACHE"]) / "fid_stats"
    keys = {f: json.loads(str(np.load(f)["key"])) for f in stats.glob("*.npz")}
    assert any(k["n"] == 16 and k["resolution"] == 16 and k["extractor"].startswith("tiny") for k in keys.values()), keys
    stamps = {f: f.stat().st_mtime_ns for f in keys}
    run_cmd([sys.executable, "bench/vae_prior_gap.py", str(row_3_3 / "export.safetensors"), "--n", "16",
             "--batch-size", "8", "--feature-extractor", "tiny", "--out", str(out)], env)
    assert {f: f.stat().st_mtime_ns for f in stats.glob("*.npz")} == stamps
    assert json.loads(out.read_text())["exports"][str(row_3_3 / "export.safetensors")] == r
    proc = subprocess.run([sys.executable, "bench/vae_prior_gap.py", str(row_3_3 / "export.safetensors"), "--n", "17",
                           "--feature-extractor", "tiny"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].endswith("fewer than --n 17"), proc.stderr


def test_resume_from_a_checkpoint_is_bitwise_identical(tmp_path, env, row_3_3):
    """Resuming the step-2 checkpoint and training to step 4 gives the uninterrupted run's EMA weights."""
    from safetensors.torch import load_file

    step2 = row_3_3 / "checkpoints" / "step-00000002"
    assert (step2 / "train_state.json").exists()
    row("vae_3.3_patchgan.sh", [*TINY, "--resolution", "16", "--disc-layers", "2", "--disc-start", "1",
                                "--vgg-init", "random", "--out", str(tmp_path), "--max-steps", "4",
                                "--resume", str(step2)], env)
    a = load_file(str(row_3_3 / "export.safetensors"))
    b = load_file(str(tmp_path / "vae-3.3-patchgan" / "export.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in records(tmp_path / "vae-3.3-patchgan", "train")] == [3, 4]


def test_two_processes_with_discriminator(tmp_path, env):
    launch(["--data", "synthetic", *TINY, "--resolution", "16", "--batch-size", "8", "--max-steps", "3",
            "--lambda-perc", "0.1", "--vgg-init", "random", "--lambda-adv", "0.1", "--disc-layers", "2",
            "--out", str(tmp_path), "--name", "ddp"], env, processes=2)
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["num_processes"] == 2
    check_run(tmp_path / "ddp", 16, 3)


# ------------------------------------------------------------------------------------------- flag errors

@pytest.mark.parametrize("argv, message", [
    (["--resolution", "16", "--lambda-adv", "0.1"], "--disc-layers 3 needs --resolution ≥ 24"),
    (["--grad-accum", "2"], "does not support --grad-accum"),
    (["--lambda-perc", "0.1", "--vgg-weights", "/nonexistent/vgg.safetensors"], "VGG weights file not found"),
    (["--recon", "bce"], "invalid choice"),
    (["--beta", "-1"], "must be a number ≥ 0"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        vae_flags.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_attribute_file_is_checked_before_training(tmp_path, capsys):
    attr = tmp_path / "attrs.txt"
    attr.write_text("2\nSmiling Young\n000001.jpg 1 -1\n000002.jpg -1 1\n")
    with pytest.raises(SystemExit):
        vae_flags.parse_args(["--attr-file", str(attr), "--attr", "Male"])
    assert "attribute 'Male' is not in" in capsys.readouterr().err
    args = vae_flags.parse_args(["--attr-file", str(attr), "--attr", "Young"])
    assert read_attribute(args.attr_file, "Young") == {"000001.jpg": False, "000002.jpg": True}


def test_vgg_weights_fall_back_to_environment_and_are_recorded(monkeypatch, tmp_path):
    f = tmp_path / "vgg.safetensors"
    f.write_bytes(b"x")
    monkeypatch.setenv("FACEGEN_VGG_WEIGHTS", str(f))
    assert vae_flags.parse_args(["--lambda-perc", "0.1"]).vgg_weights == str(f)
    assert vae_flags.parse_args(["--lambda-perc", "0.1", "--vgg-init", "random"]).vgg_weights is None
    assert vae_flags.parse_args([]).vgg_weights is None  # no perceptual term: not needed, not recorded


def test_heldout_names_match_attribute_rows_by_file_name_or_stem():
    table = {"000001.jpg": True, "000002.jpg": False, "000003.jpg": True}
    names = ["a/000001.png", "b/000002.jpg.png", "000003.jpg", "missing.png"]
    assert match_attribute(table, names) == [(0, True), (1, False), (2, True)]


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_latent_plot_draws_both_embeddings(tmp_path, method):
    from models.vae import VAE, VAEConfig

    g = torch.Generator().manual_seed(0)
    data = types.SimpleNamespace(heldout=torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g))
    labels = (np.arange(24), np.arange(24) % 2 == 0, "Male")
    model = VAE(VAEConfig(resolution=16, latent_dim=8, base_channels=8)).eval()
    out = tmp_path / f"latent_{method}.png"
    latent_plot(model, data, labels, method, max_points=20, seed=0, path=out)
    from PIL import Image
    assert Image.open(out).size == (600, 600)


@pytest.mark.parametrize("poison", ["vae", "disc"])
def test_finite_loss_with_non_finite_gradients_skips_the_update(poison):
    """A finite loss can still back-propagate NaN (a hook stands in for an overflow inside a layer): the step is
    reported as skipped and neither network moves, so the Loop does not count it."""
    from accelerate import Accelerator

    from models.losses import LOSSES
    from models.patchgan import PatchDiscriminator
    from models.vae import VAE, VAEConfig

    torch.manual_seed(0)
    args = vae_flags.parse_args(["--resolution", "16", "--disc-layers", "2", "--lambda-adv", "0.1"])
    acc = Accelerator(cpu=True)
    vae, disc = VAE(VAEConfig(resolution=16, latent_dim=8, base_channels=8)), PatchDiscriminator(ndf=8, n_layers=2)
    opt, opt_d = torch.optim.Adam(vae.parameters()), torch.optim.Adam(disc.parameters())
    net = vae if poison == "vae" else disc
    hook = next(net.parameters()).register_hook(lambda g: g * float("nan"))
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in (("vae", vae), ("disc", disc))}

    terms, ok = vae_training.vae_update(acc, vae, opt, disc, opt_d, LOSSES["hinge"], None, x, args)
    assert not ok and torch.isfinite(terms["loss"]) and torch.isfinite(terms["d_loss"])
    assert all(torch.equal(a, b) for a, b in zip(before[poison], net.parameters()))
    assert not (opt if poison == "vae" else opt_d).state           # Adam never saw the step

    hook.remove()
    terms, ok = vae_training.vae_update(acc, vae, opt, disc, opt_d, LOSSES["hinge"], None, x, args)
    assert ok and not all(torch.equal(a, b) for a, b in zip(before[poison], net.parameters()))
