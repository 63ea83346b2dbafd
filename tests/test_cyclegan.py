"""CycleGAN: losses, image pool, shapes, domain loading, export/translate, end-to-end training and exact resume."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from models.cyclegan import (CycleGAN, CycleGANConfig, Generator, ImagePool, build_discriminator, config_dict,
                             cycle_loss, discriminator_loss, generator_losses, identity_loss)
from tests.runs import run_script
from utils.attributes import load_domains, read_attribute_file
from utils.cyclegan_flags import parse_args
from utils.data_sources import DataError
from utils.export import load_export, save_export

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "16", "--batch-size", "4", "--gen-width", "4", "--gen-blocks", "1", "--disc-width", "4",
        "--log-every", "1", "--grid-size", "3"]


# ----------------------------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def two_folders(tmp_path_factory):
    """Domain X: crops of skimage's astronaut; domain Y: crops of its cat (chelsea). 10 images each."""
    from skimage import data

    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(0)
    for name, img in (("astronaut", data.astronaut()), ("chelsea", data.chelsea())):
        folder = root / name
        folder.mkdir()
        h, w = img.shape[:2]
        for i in range(10):
            s = int(rng.integers(min(h, w) // 3, min(h, w) // 2))
            top, left = rng.integers(0, h - s), rng.integers(0, w - s)
            Image.fromarray(img[top:top + s, left:left + s]).save(folder / f"{name}_{i:02d}.png")
    return root / "astronaut", root / "chelsea"


class ConstantD(nn.Module):
    """A discriminator whose output does not depend on its input (adversarial gradients are exactly 0)."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)) * 0.0


# ----------------------------------------------------------------------------------------------- losses

def test_cycle_loss_zero_for_identity_generators_positive_otherwise():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    ident = nn.Identity()
    _, parts, fake_y, _ = generator_losses(ident, ident, ConstantD(), ConstantD(), x, y, cycle_weight=10.0,
                                           identity_weight=5.0)
    assert parts["cycle"].item() == 0.0 and parts["identity"].item() == 0.0
    assert torch.equal(fake_y, x)
    g_xy, g_yx = Generator(4, 1), Generator(4, 1)
    _, parts, _, _ = generator_losses(g_xy, g_yx, ConstantD(), ConstantD(), x, y, cycle_weight=10.0)
    assert parts["cycle"].item() > 0.05
    assert cycle_loss(x, x + 0.5).item() == pytest.approx(0.5)
    assert identity_loss(y, -y).item() == pytest.approx(2 * y.abs().mean().item())


def test_cycle_weight_zero_removes_the_term():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    g_xy, g_yx = Generator(4, 1), Generator(4, 1)
    total, parts, _, _ = generator_losses(g_xy, g_yx, ConstantD(), ConstantD(), x, y, cycle_weight=10.0)
    assert set(parts) == {"adv_xy", "adv_yx", "cycle"}
    assert total.item() == pytest.approx((parts["adv_xy"] + parts["adv_yx"] + 10 * parts["cycle"]).item(), rel=1e-6)
    total.backward()
    assert sum(p.grad.abs().sum().item() for p in g_yx.parameters() if p.grad is not None) > 0
    g_xy.zero_grad(set_to_none=True), g_yx.zero_grad(set_to_none=True)
    # With the discriminators constant, the cycle term is the only path for gradients: none must flow now.
    total, parts, _, _ = generator_losses(g_xy, g_yx, ConstantD(), ConstantD(), x, y, cycle_weight=0.0)
    assert set(parts) == {"adv_xy", "adv_yx"}
    assert total.item() == pytest.approx((parts["adv_xy"] + parts["adv_yx"]).item())
    total.backward()
    assert all(p.grad is None or p.grad.abs().sum().item() == 0 for p in [*g_xy.parameters(), *g_yx.parameters()])


def test_cli_cycle_weight_zero_and_identity_default():
    args = parse_args(["--cycle-weight", "0"])
    assert args.cycle_weight == 0 and args.identity_weight == 0
    assert parse_args([]).identity_weight == 5.0
    assert parse_args(["--identity-weight", "0"]).identity_weight == 0


def test_discriminator_loss_lsgan_targets():
    class Echo(nn.Module):  # logit = the image's mean value
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))
    real, fake = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    assert discriminator_loss(Echo(), real, fake, "lsgan").item() == 0.0
    assert discriminator_loss(Echo(), fake, real, "lsgan").item() == pytest.approx(1.0)  # ½(1 + 1)


# ----------------------------------------------------------------------------------------------- image pool

def _ids(images):
    return images[:, 0, 0, 0].round().long().tolist()


def _batch(ids):
    return torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()


def test_image_pool_passthrough_until_full():
    pool = ImagePool(6, generator=torch.Generator().manual_seed(0))
    a, b = torch.randn(4, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert torch.equal(pool.query(a), a) and pool.count == 4
    assert torch.equal(pool.query(b), b) and pool.count == 6
    assert torch.equal(pool.images, torch.cat([a, b]))
    assert torch.equal(ImagePool(0).query(a), a)


def test_image_pool_swaps_half_once_full():
    pool = ImagePool(50, generator=torch.Generator().manual_seed(1))
    pool.query(_batch(range(50)))
    next_id, from_pool, returned = 50, 0, []
    for _ in range(400):
        ids = list(range(next_id, next_id + 5))
        out = _ids(pool.query(_batch(ids)))
        for new, got in zip(ids, out):
            if got != new:
                from_pool += 1
                assert got < new  # something stored earlier (possibly earlier in this very batch)
                returned.append(got)
        next_id += 5
    assert 0.45 < from_pool / 2000 < 0.55
    # A stored image leaves the pool when it is returned, so none can come back twice.
    assert len(returned) == len(set(returned))
    stored = set(_ids(pool.images))
    assert len(stored) == 50 and not stored & set(returned)
    # Same seed, same decisions.
    p1, p2 = ImagePool(4, torch.Generator().manual_seed(3)), ImagePool(4, torch.Generator().manual_seed(3))
    for k in range(5):
        assert torch.equal(p1.query(_batch(range(4 * k, 4 * k + 4))), p2.query(_batch(range(4 * k, 4 * k + 4))))


# ----------------------------------------------------------------------------------------------- shapes, export

@pytest.mark.parametrize("disc,shape", [("patch", (3, 1, 2, 2)), ("dc", (3,))])
def test_shapes_at_32(disc, shape):
    cfg = CycleGANConfig(resolution=32, gen_width=8, gen_blocks=1, disc=disc, disc_width=8)
    model, d = CycleGAN(cfg), build_discriminator(cfg)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = model.translate(x, "xy")
    assert out.shape == x.shape and out.abs().max() <= 1
    assert model.translate(x, "yx").shape == x.shape
    assert tuple(d(x).shape) == shape


def test_export_round_trip(tmp_path):
    cfg = CycleGANConfig(resolution=16, gen_width=4, gen_blocks=1)
    model = CycleGAN(cfg).eval()
    path = save_export(tmp_path / "c.safetensors", "cyclegan", model, config_dict(cfg), {}, step=3)
    ex = load_export(path, family="cyclegan")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert ex.model.resolution == 16
    assert torch.equal(ex.model.translate(x, "xy"), model.translate(x, "xy"))
    assert torch.equal(ex.model.translate(x, "yx"), model.translate(x, "yx"))
    torch.testing.assert_close(ex.model.translate(x, "yx", batch_size=1), model.translate(x, "yx"))
    with pytest.raises(NotImplementedError, match="translate"):
        ex.model.sample(4)
    with pytest.raises(ValueError, match="direction"):
        ex.model.translate(x, "xx")


# ----------------------------------------------------------------------------------------------- domains

def _attr_folder(root: Path, signs: dict, fmt: str) -> Path:
    """Images coloured by attribute (−1 dark, +1 bright) plus an attribute file listing them."""
    folder = root / "faces"
    folder.mkdir()
    for name, s in signs.items():
        Image.new("RGB", (20, 24), (30, 30, 30) if s < 0 else (220, 220, 220)).save(folder / name)
    Image.new("RGB", (20, 24), (120, 0, 0)).save(folder / "unlisted.png")
    rows = [(n, s) for n, s in signs.items()]
    if fmt == "txt":
        text = f"{len(rows)}\nYoung Smiling\n" + "".join(f"{n} 1 {s:2d}\n" for n, s in rows)
    else:
        text = "image_id,Young,Smiling\n" + "".join(f"{n},1,{s}\n" for n, s in rows)
    (root / f"attr.{fmt}").write_text(text)
    return folder


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_attribute_split_of_a_folder(tmp_path, cache_dir, fmt):
    signs = {f"{i:06d}.png": (1 if i % 3 == 0 else -1) for i in range(1, 13)}
    folder = _attr_folder(tmp_path, signs, fmt)
    attr_file = str(tmp_path / f"attr.{fmt}")
    args = parse_args(["--data", str(folder), "--attr", "Smiling", "--attr-file", attr_file, "--resolution", "16",
                       "--cache-dir", str(cache_dir)])
    dx, dy = load_domains(args)
    assert len(dx.train) + len(dx.heldout) == 8 and len(dy.train) + len(dy.heldout) == 4
    for d, value in ((dx, 30), (dy, 220)):
        assert set(torch.cat([d.train, d.heldout]).unique().tolist()) == {value}
    assert (dx.info["domain"], dy.info["domain"]) == ("not_Smiling", "Smiling")
    assert dx.info["skipped"]["no attribute row"] == 1
    with pytest.raises(DataError, match="Blond_Hair"):
        read_attribute_file(tmp_path / f"attr.{fmt}", "Blond_Hair")


def test_attribute_split_of_synthetic_faces(cache_dir):
    from utils.synthetic import face_attributes

    args = parse_args(["--synthetic-size", "24", "--n-real", "6", "--resolution", "16", "--cache-dir", str(cache_dir)])
    assert (args.data, args.attr) == ("synthetic", "Smiling")
    dx, dy = load_domains(args)
    smiling = int(face_attributes(range(24), seed=0)["Smiling"].sum())
    assert len(dy.train) + len(dy.heldout) == smiling and len(dx.train) + len(dx.heldout) == 24 - smiling
    assert len(dx.heldout) + len(dy.heldout) == 6
    bad = parse_args(["--attr", "Wavy_Hair", "--synthetic-size", "24", "--resolution", "16",
                      "--cache-dir", str(cache_dir)])
    with pytest.raises(DataError, match="no attribute"):
        load_domains(bad)


def test_attribute_split_of_shared_celeba(tmp_path, cache_dir):
    shared = os.environ.get("FACEGEN_SHARED_DATA")
    if not shared:
        pytest.skip("FACEGEN_SHARED_DATA not set (CelebA photos + attribute file)")
    src, attr_file = Path(shared) / "celeba-10k-89x109", Path(shared) / "celeba-10k-89x109.attr.txt"
    folder = tmp_path / "celeba"
    folder.mkdir()
    files = sorted(src.glob("*.jpg"))[:16]
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    truth = read_attribute_file(attr_file, "Smiling")
    args = parse_args(["--data", str(folder), "--attr-file", str(attr_file), "--resolution", "16",
                       "--cache-dir", str(cache_dir)])
    dx, dy = load_domains(args)
    n_smiling = sum(truth[f.name] > 0 for f in files)
    assert len(dy.train) + len(dy.heldout) == n_smiling and len(dx.train) + len(dx.heldout) == 16 - n_smiling


@pytest.mark.parametrize("argv", [["--data-x", "a"], ["--data-x", "a", "--data-y", "b", "--attr", "Smiling"],
                                  ["--fid-every", "5"], ["--combined", "x"], ["--attr-file", "f.txt"],
                                  ["--disc", "global"], ["--grad-accum", "2"]])
def test_cli_rejects_bad_combinations(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------- end to end

def _launch(argv, cache_dir, procs=1, timeout=240):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(procs),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--num_cpu_threads_per_process", "1"]  # tiny convs: more threads only add contention
    env = {**os.environ, "FACEGEN_CACHE": str(cache_dir)}
    if procs > 1:  # without CUDA, --multi_gpu starts N independent processes unless Accelerate is told to use the CPU
        launch.append("--multi_gpu")
        env["ACCELERATE_USE_CPU"] = "true"
    else:
        launch.append("--cpu")
    r = subprocess.run([*launch, str(ROOT / "train_cyclegan.py"), *argv], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _main_in_process(argv, cache_dir, monkeypatch):
    monkeypatch.setenv("FACEGEN_CACHE", str(cache_dir))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # main() installs its own
    assert torch.get_num_threads() == 1  # (fixture one_thread) as in the launched runs: bitwise comparable
    try:
        run_script("train_cyclegan.py", argv)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def _tensors(path):
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.mark.slow
def test_train_two_folders_end_to_end_and_resume_exactly(tmp_path, cache_dir, two_folders, monkeypatch):
    """accelerate launch on two image folders → export that translates; 2 steps + resume to 4 == 4 steps."""
    x_dir, y_dir = two_folders
    common = ["--data-x", str(x_dir), "--data-y", str(y_dir), *TINY, "--pool-size", "3", "--aug", "flip",
              "--lr-decay", "none", "--sample-every", "2", "--save-every", "2"]
    _launch([*common, "--max-steps", "4", "--out", str(tmp_path / "a")], cache_dir)
    a = _run_dir(tmp_path / "a")
    assert a.name.startswith("cyclegan-patch-lsgan-astronaut2chelsea-16px-")
    ex = load_export(a / "export.safetensors", family="cyclegan")
    assert ex.step == 4 and ex.weights == "ema" and ex.extra["domains"] == {"x": "astronaut", "y": "chelsea"}
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for direction in ("xy", "yx"):
        out = ex.model.translate(x, direction)
        assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    # Grids: 3 rows (input | translated | reconstructed) of --grid-size 3 held-out images, 16 px + 2 px gutters.
    for name in ("samples/xy_step0000002.png", "samples/yx_step0000004.png", "samples_xy.png", "samples_yx.png"):
        assert np.asarray(Image.open(a / name)).shape == (3 * 18 + 2, 3 * 18 + 2, 3)
    stats = [json.loads(l) for l in (a / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3, 4]
    assert all(np.isfinite(r[k]) for r in stats for k in ("loss_G", "cycle", "identity", "loss_D_x", "loss_D_y"))
    assert (a / "loss.png").exists()
    # What evaluate.py --mode translate needs: both domains' held-out images, rebuilt from the export alone.
    monkeypatch.setenv("FACEGEN_CACHE", str(cache_dir))
    dx, dy = load_domains(ex.train_config)
    assert (len(dx.heldout), len(dy.heldout)) == (5, 5) and dx.info["domain"] == "astronaut"

    _main_in_process([*common, "--max-steps", "2", "--out", str(tmp_path / "b")], cache_dir, monkeypatch)
    _main_in_process([*common, "--max-steps", "4", "--out", str(tmp_path / "b"), "--resume", "latest"],
                     cache_dir, monkeypatch)
    b = _run_dir(tmp_path / "b")
    assert a.name == b.name
    for name in ("ema.safetensors", "model.safetensors", "model_1.safetensors", "model_2.safetensors",
                 "model_3.safetensors"):
        ta, tb = _tensors(a / "checkpoints/step-00000004" / name), _tensors(b / "checkpoints/step-00000004" / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    pools = _tensors(a / "checkpoints/step-00000004/ema.safetensors")
    assert pools["pools.x_count"].tolist() == [3]  # the image pools are part of the resume state
    ea, eb = _tensors(a / "export.safetensors"), _tensors(b / "export.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    sa, sb = (json.loads((r / "checkpoints/step-00000004/train_state.json").read_text()) for r in (a, b))
    assert sa["extra"] == sb["extra"] and sa["data"] == sb["data"]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, cache_dir, monkeypatch):
    """Attribute split of synthetic faces under 2-process DDP: the same weights as one process with the same global
    batch (no pool, no augmentation, so nothing random differs between the two)."""
    common = ["--attr", "Smiling", "--synthetic-size", "40", "--n-real", "8", *TINY, "--disc", "dc",
              "--pool-size", "0", "--aug", "none", "--max-steps", "2", "--sample-every", "0", "--save-every", "2"]
    _launch([*common, "--out", str(tmp_path / "two")], cache_dir, procs=2)
    two = _run_dir(tmp_path / "two")
    assert json.loads((two / "config.json").read_text())["num_processes"] == 2
    assert two.name.startswith("cyclegan-dc-lsgan-Smiling-synthetic-16px-")
    ex = load_export(two / "export.safetensors")
    assert ex.extra["domains"] == {"x": "not_Smiling", "y": "Smiling"} and ex.step == 2
    assert ex.model.translate(torch.zeros(1, 3, 16, 16), "yx").shape == (1, 3, 16, 16)
    _main_in_process([*common, "--out", str(tmp_path / "one")], cache_dir, monkeypatch)
    one = _run_dir(tmp_path / "one")
    for name in ("model.safetensors", "model_1.safetensors", "model_2.safetensors", "model_3.safetensors"):
        t2, t1 = _tensors(two / "checkpoints/step-00000002" / name), _tensors(one / "checkpoints/step-00000002" / name)
        for k in t1:
            torch.testing.assert_close(t2[k], t1[k], rtol=1e-4, atol=1e-5, msg=f"{name}:{k}")


def test_evaluate_translate_mode_scores_each_direction(tmp_path, cache_dir, two_folders, monkeypatch):
    """evaluate.py on a CycleGAN export: every held-out image of each domain translated, FID per direction against
    the other domain's held-out images — equal to computing it by hand — plus the untranslated baseline."""
    import evaluate
    from utils.data import to_float, to_uint8
    from utils.feature_nets import load_feature_extractor
    from utils.features import extract_features
    from utils.metric_math import fid_from_features
    from utils.metrics_schema import read_metrics

    x_dir, y_dir = two_folders
    _main_in_process(["--data-x", str(x_dir), "--data-y", str(y_dir), *TINY, "--max-steps", "2", "--sample-every",
                      "0", "--out", str(tmp_path / "run")], cache_dir, monkeypatch)
    export = _run_dir(tmp_path / "run") / "export.safetensors"
    out = tmp_path / "eval"
    common = ["--ckpt", str(export), "--feature-extractor", "tiny", "--batch-size", "3", "--out", str(out),
              "--stats-cache", str(tmp_path / "stats")]
    res = evaluate.main([*common, "--metrics", "fid,kid,pr,params,throughput", "--save-samples", "2"])
    assert read_metrics(out / "metrics.json") == json.loads(json.dumps(res))
    assert res["source"]["family"] == "cyclegan" and res["samples"]["mode"] == "translate"

    ex = load_export(export)
    dx, dy = load_domains(ex.train_config)
    ext = load_feature_extractor("tiny")
    feats = lambda u8: extract_features(u8, ext)  # noqa: E731
    for direction, src, tgt in (("xy", dx, dy), ("yx", dy, dx)):
        entry = res["translate"][direction]
        fake = to_uint8(ex.model.translate(to_float(src.heldout), direction).clamp(-1, 1))
        assert entry["n_translated"] == len(src.heldout) == 5 and entry["real"]["n"] == len(tgt.heldout)
        assert entry["metrics"]["fid"]["value"] == pytest.approx(fid_from_features(feats(fake), feats(tgt.heldout)),
                                                                 rel=1e-6)
        assert entry["untranslated_baseline"]["value"] == pytest.approx(
            fid_from_features(feats(src.heldout), feats(tgt.heldout)), rel=1e-6)
        saved = sorted((out / "samples" / direction).glob("*.png"))
        assert [p.name for p in saved] == ["000000.png", "000001.png"]
        assert np.array_equal(np.asarray(Image.open(saved[1])), fake[1].permute(1, 2, 0).numpy())
    m = res["metrics"]
    assert m["fid"]["value"] == pytest.approx((res["translate"]["xy"]["metrics"]["fid"]["value"]
                                               + res["translate"]["yx"]["metrics"]["fid"]["value"]) / 2)
    assert m["params_generator"]["value"] == sum(p.numel() for p in ex.model.parameters())
    assert m["sampling_throughput"]["value"] > 0 and m["lpips_diversity"]["value"] is None
    # --num-samples caps the images per direction.
    assert evaluate.main([*common, "--num-samples", "3", "--metrics", "fid"])["translate"]["xy"]["n_translated"] == 3

    # precision/recall on VGG-16 features (random relu3_3-only weights; 32² input keeps the test fast)
    from safetensors.torch import save_file

    from models.perceptual import vgg16_features_to_relu3_3
    from utils.aux_metric_nets import VGG16Features, load_vgg16_features
    from utils.metric_math import precision_recall

    save_file({f"features.{k}": v for k, v in vgg16_features_to_relu3_3().state_dict().items()},
              str(tmp_path / "vgg.safetensors"))
    monkeypatch.setattr(VGG16Features, "input_size", 32)
    vgg = evaluate.main([*common, "--metrics", "fid,pr", "--pr-features", "vgg16", "--pr-vgg-weights",
                         str(tmp_path / "vgg.safetensors")])
    net = load_vgg16_features(tmp_path / "vgg.safetensors")
    for direction, src, tgt in (("xy", dx, dy), ("yx", dy, dx)):
        fake = to_uint8(ex.model.translate(to_float(src.heldout), direction).clamp(-1, 1))
        entry = vgg["translate"][direction]["metrics"]
        assert entry["fid"]["value"] == pytest.approx(res["translate"][direction]["metrics"]["fid"]["value"])
        assert (entry["precision"]["value"], entry["recall"]["value"]) == pytest.approx(
            precision_recall(extract_features(tgt.heldout, net), extract_features(fake, net), k=3))
    assert vgg["metrics"]["precision"]["features"] == "vgg16 relu3_3 global-avg-pool (256-d)"
    assert vgg["metrics"]["fid"]["features_name"] == "tiny-random-conv-v1"

    with pytest.raises(SystemExit, match=r"^error: --mode sample does not fit a 'cyclegan' export"):
        evaluate.main([*common, "--mode", "sample"])
