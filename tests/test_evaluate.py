"""evaluate.py end to end on a toy family (tests/toy_family.py) with the seeded 'tiny' extractor: metrics.json
schema and provenance, PNG samples, folder equality with clean-fid, held-out split from the export's
train_config, reference cache, multi-process = single-process numbers, and one-line errors."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from tests.toy_family import make_toy_model
from utils import aux_metric_nets, feature_nets
from utils.data import to_uint8
from utils.export import save_export
from utils.features import block_seed
from utils.metrics_schema import METRIC_NAMES, MetricsFileError, read_metrics, validate_metrics, write_metrics

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--feature-extractor", "tiny", "--lpips-weights", "random", "--lpips-samples", "12"]


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    import models
    monkeypatch.setitem(models.FAMILIES, "toy", "tests.toy_family")
    yield
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)   # do not leak our Accelerator into other tests


def blobs(n: int, seed: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((size, size),
                                                                                               Image.BICUBIC))
            for _ in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A real-image folder, a toy export whose train_config points at it, and one evaluation run."""
    root = tmp_path_factory.mktemp("eval")
    real = root / "real"
    real.mkdir()
    for i, a in enumerate(blobs(40, seed=0)):
        Image.fromarray(a).save(real / f"{i:03d}.png")
    model, cfg = make_toy_model(seed=0)
    export = save_export(root / "toy.safetensors", "toy", model, cfg,
                         {"data": str(real), "n_real": 16, "resolution": 32, "cache_dir": str(root / "data_cache")},
                         step=7, epoch=1, train_seconds=12.5)
    return root, real, model, export


def run_eval(argv, monkeypatch, cache):
    monkeypatch.setenv("FACEGEN_CACHE", str(cache))
    import models
    monkeypatch.setitem(models.FAMILIES, "toy", "tests.toy_family")
    return evaluate.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def first_run(setup, tmp_path_factory):
    root, real, model, export = setup
    mp = pytest.MonkeyPatch()
    try:
        out = root / "run1"
        result = run_eval(["--ckpt", export, "--real", real, "--num-samples", 24, "--batch-size", 8, "--out", out,
                           *FAST], mp, root / "cache1")
    finally:
        mp.undo()
        from accelerate.state import AcceleratorState
        AcceleratorState._reset_state(reset_partial_state=True)
    return out, result


def test_export_run_writes_metrics_and_pngs(setup, first_run):
    root, real, model, export = setup
    out, result = first_run
    assert read_metrics(out / "metrics.json") == json.loads(json.dumps(result))   # schema round trip
    m = result["metrics"]
    assert set(METRIC_NAMES) <= set(m)
    for name in ("fid", "kid", "precision", "recall", "lpips_diversity", "params_generator", "params_total",
                 "train_seconds", "sampling_throughput"):
        assert isinstance(m[name]["value"], (int, float)), name
    assert m["inception_score"]["value"] is None and "--is-weights" in m["inception_score"]["not_computed"]
    assert "random" in m["lpips_diversity"]["backbone"]           # a test-only trunk is labelled as such
    for name in ("fid", "kid", "precision", "recall"):            # each metric names its feature network
        assert m[name]["features"] == feature_nets.TinyFeatures.label, name
    assert m["lpips_diversity"]["features"].startswith("lpips alex")
    assert m["params_generator"]["value"] == sum(p.numel() for p in model.generator.parameters())
    assert m["params_total"]["value"] == sum(p.numel() for p in model.parameters())
    assert m["train_seconds"]["value"] == 12.5
    assert result["source"]["family"] == "toy" and result["source"]["step"] == 7
    assert result["feature_extractor"]["name"] == "tiny-random-conv-v1"
    assert result["real"]["n"] == 40 and result["real"]["split"] == "folder"
    assert result["samples"]["n"] == 24 and result["samples"]["seed"] == 0
    pngs = sorted((out / "samples").glob("*.png"))
    assert len(pngs) == 24 and not list((out / "samples").glob("*.jp*g"))
    # Sample 9 = image 1 of block 1, drawn with block_seed(seed=0, block=1).
    expected = to_uint8(model.sample(8, generator=torch.Generator().manual_seed(block_seed(0, 1))))[1]
    assert np.array_equal(np.asarray(Image.open(pngs[9])), expected.permute(1, 2, 0).numpy())


def test_saved_pngs_give_the_same_fid_and_match_cleanfid(setup, first_run, monkeypatch, tmp_path):
    from cleanfid import fid as cleanfid

    root, real, _, _ = setup
    out, result = first_run
    res = run_eval(["--fake-dir", out / "samples", "--real", real, "--out", tmp_path / "folder_eval",
                    "--metrics", "fid,kid,pr", "--feature-extractor", "tiny"], monkeypatch, root / "cache1")
    assert res["real"]["cache_hit"]                                   # same reference as the first run
    assert res["metrics"]["fid"]["value"] == pytest.approx(result["metrics"]["fid"]["value"], abs=1e-9)
    assert res["metrics"]["params_total"]["value"] is None and res["source"]["kind"] == "folder"
    ref = cleanfid.compute_fid(str(out / "samples"), str(real), mode="clean",
                               custom_feat_extractor=feature_nets.TinyFeatures(), device=torch.device("cpu"),
                               num_workers=0, batch_size=8, verbose=False, use_dataparallel=False)
    assert res["metrics"]["fid"]["value"] == pytest.approx(ref, abs=1e-3)


def test_heldout_split_from_train_config_and_cache(setup, monkeypatch, tmp_path):
    root, _, _, export = setup
    argv = ["--ckpt", export, "--num-samples", 16, "--batch-size", 8, "--metrics", "fid",
            "--feature-extractor", "tiny", "--save-samples", 4]
    a = run_eval([*argv, "--out", tmp_path / "a"], monkeypatch, tmp_path / "cache")
    b = run_eval([*argv, "--out", tmp_path / "b"], monkeypatch, tmp_path / "cache")
    assert a["real"]["split"] == "heldout" and a["real"]["n"] == 16 and len(a["real"]["split_sha256"]) == 64
    assert not a["real"]["cache_hit"] and b["real"]["cache_hit"]
    assert a["metrics"]["fid"]["value"] == b["metrics"]["fid"]["value"]
    assert len(list((tmp_path / "a" / "samples").glob("*.png"))) == 4
    assert a["metrics"]["kid"]["not_computed"] == "not requested (--metrics)"


def test_two_processes_give_the_same_numbers(setup, first_run, tmp_path):
    root, real, _, export = setup
    out, single = first_run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEGEN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "toy_family.py"), "--ckpt", str(export), "--real", str(real), "--num-samples", "24",
           "--batch-size", "8", "--out", str(tmp_path / "mp"), *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    multi = read_metrics(tmp_path / "mp" / "metrics.json")
    assert multi["runtime"]["num_processes"] == 2 and not multi["real"]["cache_hit"]   # reference split too
    for name in ("fid", "kid", "precision", "recall", "params_total"):
        assert multi["metrics"][name]["value"] == pytest.approx(single["metrics"][name]["value"], rel=1e-9), name
    assert multi["metrics"]["lpips_diversity"]["value"] == pytest.approx(
        single["metrics"]["lpips_diversity"]["value"], rel=1e-6)
    for i in (0, 9, 23):   # every block, whichever process drew it, holds the same images
        name = f"{i:06d}.png"
        assert (tmp_path / "mp" / "samples" / name).read_bytes() == (out / "samples" / name).read_bytes()


def test_precision_recall_on_vgg16_features(setup, first_run, monkeypatch, tmp_path):
    from safetensors.torch import save_file

    from models.perceptual import vgg16_features_to_relu3_3
    from utils.features import extract_features
    from utils.fid_images import load_image_folder
    from utils.metric_math import precision_recall

    root, real, _, export = setup
    _, first = first_run
    torch.manual_seed(3)
    weights = tmp_path / "vgg.safetensors"   # a random stand-in for the offline relu3_3-only file
    save_file({f"features.{k}": v for k, v in vgg16_features_to_relu3_3().state_dict().items()}, str(weights))
    monkeypatch.setattr(aux_metric_nets.VGG16Features, "input_size", 32)   # 224² is needlessly slow for a test
    out = tmp_path / "vgg"
    res = run_eval(["--ckpt", export, "--real", real, "--num-samples", 24, "--batch-size", 8, "--out", out,
                    "--metrics", "fid,kid,pr", "--feature-extractor", "tiny", "--pr-features", "vgg16",
                    "--pr-vgg-weights", weights], monkeypatch, root / "cache1")
    m = res["metrics"]
    assert read_metrics(out / "metrics.json")["metrics"]["precision"] == m["precision"]
    for name in ("fid", "kid"):   # FID/KID keep the FID network
        assert m[name]["value"] == first["metrics"][name]["value"] and m[name]["features_name"] == "tiny-random-conv-v1"
    for name in ("precision", "recall"):
        assert m[name]["features"] == "vgg16 relu3_3 global-avg-pool (256-d)", name
        assert m[name]["features_sha256"] == feature_nets.file_sha256(weights) and m[name]["k"] == 3
    assert res["pr_feature_extractor"]["layer"] == "relu3_3-gap"
    # independently: VGG features of the saved PNG samples and of the real folder
    net = aux_metric_nets.load_vgg16_features(weights)
    fake_f = extract_features(load_image_folder(out / "samples")[0], net)
    real_f = extract_features(load_image_folder(real)[0], net)
    assert (m["precision"]["value"], m["recall"]["value"]) == pytest.approx(precision_recall(real_f, fake_f, k=3))
    monkeypatch.delenv("FACEGEN_VGG_WEIGHTS", raising=False)
    with pytest.raises(SystemExit, match="--pr-vgg-weights"):
        run_eval(["--ckpt", export, "--real", real, "--out", tmp_path / "none", "--pr-features", "vgg16", *FAST],
                 monkeypatch, root / "cache1")


def test_metrics_json_validation_rejects_bad_files(first_run, tmp_path):
    _, result = first_run
    good = json.loads(json.dumps(result))
    validate_metrics(copy.deepcopy(good))
    bad = []
    for mutate in (lambda d: d["metrics"].pop("fid"),
                   lambda d: d["metrics"]["fid"].update(value=float("nan")),
                   lambda d: d["metrics"]["kid"].update(value="0.1"),
                   lambda d: d["metrics"]["fid"].update(value=True),
                   lambda d: d["metrics"]["inception_score"].pop("not_computed"),
                   lambda d: d.update(schema_version=99),
                   lambda d: d.pop("real")):
        d = copy.deepcopy(good)
        mutate(d)
        bad.append(d)
    for d in bad:
        with pytest.raises(MetricsFileError):
            validate_metrics(d)
    legacy = copy.deepcopy(good)
    legacy["metrics"]["precision"].pop("features")
    validate_metrics(legacy)                        # files from before entries named their features still read
    with pytest.raises(MetricsFileError, match="features"):
        write_metrics(tmp_path / "new.json", legacy)   # but new files must say
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(MetricsFileError, match="not readable JSON"):
        read_metrics(tmp_path / "m.json")


def test_ddpm_options_reach_the_sampler(setup, monkeypatch, tmp_path):
    import models

    root, real, model, _ = setup
    monkeypatch.setitem(models.FAMILIES, "ddpm", "tests.toy_family")   # the toy accepts steps/eta like DDPM
    export = save_export(tmp_path / "ddpm.safetensors", "ddpm", model, {"z_dim": 8, "resolution": 32})
    argv = ["--ckpt", export, "--real", real, "--num-samples", 8, "--batch-size", 8, "--metrics", "fid",
            "--feature-extractor", "tiny"]
    plain = run_eval([*argv, "--out", tmp_path / "plain"], monkeypatch, tmp_path / "cache")
    opts = run_eval([*argv, "--out", tmp_path / "opts", "--sample-steps", 1, "--eta", 0, "--sample-precision", "bf16",
                     "--channels-last"], monkeypatch, tmp_path / "cache")
    assert opts["samples"]["sample_kwargs"] == {"steps": 1, "eta": 0.0, "precision": "bf16", "channels_last": True}
    assert opts["metrics"]["fid"]["value"] != plain["metrics"]["fid"]["value"]


def test_too_few_samples_give_reasons_not_numbers(setup, monkeypatch, tmp_path):
    root, real, _, export = setup
    res = run_eval(["--ckpt", export, "--real", real, "--num-samples", 1, "--out", tmp_path / "one", *FAST],
                   monkeypatch, tmp_path / "cache")
    for name in ("fid", "kid", "precision", "recall", "lpips_diversity"):
        assert res["metrics"][name]["value"] is None and res["metrics"][name]["not_computed"], name
    assert res["metrics"]["params_total"]["value"] > 0
    ten = run_eval(["--ckpt", export, "--real", real, "--num-samples", 10, "--metrics", "fid",
                    "--feature-extractor", "tiny", "--out", tmp_path / "ten"], monkeypatch, tmp_path / "cache")
    assert ten["metrics"]["fid"]["value"] > 0 and "biased" in ten["metrics"]["fid"]["note"]


@pytest.mark.parametrize("case", ["missing_ckpt", "garbage_ckpt", "fake_without_real", "steps_on_gan", "no_weights"])
def test_bad_inputs_exit_with_one_line(case, setup, monkeypatch, tmp_path):
    root, real, _, export = setup
    argv = {"missing_ckpt": ["--ckpt", tmp_path / "nope.safetensors"],
            "garbage_ckpt": ["--ckpt", tmp_path / "garbage.safetensors"],
            "fake_without_real": ["--fake-dir", real],
            "steps_on_gan": ["--ckpt", export, "--real", real, "--sample-steps", 10],
            "no_weights": ["--ckpt", export, "--real", real]}[case]
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    if case == "no_weights":   # offline, no local Inception file
        monkeypatch.delenv("FACEGEN_FID_WEIGHTS", raising=False)
        monkeypatch.setattr(feature_nets, "INCEPTION_DEFAULT_PATH", tmp_path / "inception-2015-12-05.pt")
        monkeypatch.setattr(feature_nets, "download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    else:
        argv += ["--feature-extractor", "tiny"]
    with pytest.raises(SystemExit) as e:
        run_eval([*argv, "--out", tmp_path / "o", "--num-samples", 8], monkeypatch, tmp_path / "cache")
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg, msg
    if case == "no_weights":
        assert feature_nets.INCEPTION_URL in msg and "--fid-weights" in msg


def test_unknown_metric_is_rejected_by_argparse():
    with pytest.raises(SystemExit) as e:
        evaluate.build_parser().parse_args(["--fake-dir", "x", "--metrics", "fid,bogus"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------- density/coverage, FD-DINOv2

def test_density_coverage_and_fd_dinov2_in_metrics_json(setup, monkeypatch, tmp_path, capsys):
    """density/coverage on the P/R features and FD-DINOv2 on a tiny random ViT of timm's DINOv2 class: each entry
    names its network and its sample counts; a biased FD is marked and warned about."""
    from utils.features import extract_features
    from utils.fid_images import load_image_folder
    from utils.metric_math import fid_from_features

    root, real, _, export = setup
    out = tmp_path / "new"
    res = run_eval(["--ckpt", export, "--real", real, "--num-samples", 24, "--batch-size", 8, "--out", out,
                    "--feature-extractor", "tiny", "--metrics", "fid,kid,pr,dc,fd_dinov2", "--dinov2-weights", "tiny"],
                   monkeypatch, tmp_path / "cache")
    m = read_metrics(out / "metrics.json")["metrics"]
    assert m == json.loads(json.dumps(res["metrics"]))
    for name in ("density", "coverage"):
        e = m[name]
        assert isinstance(e["value"], float) and e["k"] == 5 and e["features_name"] == "tiny-random-conv-v1", name
        assert (e["num_samples"], e["num_real"]) == (24, 40)
    d = m["fd_dinov2"]
    assert d["features_name"] == "tiny-random-dinov2-vit" and (d["num_samples"], d["num_real"]) == (24, 40)
    assert d["feature_dim"] == 32 and d["biased"] is True and d["value"] > 0
    assert res["dinov2_feature_extractor"]["input_size"] == 224
    assert m["fid"]["biased"] is True and m["fid"]["feature_dim"] == 64 and m["fid"]["num_samples"] == 24
    err = capsys.readouterr().err
    assert "warning: FID from 24 samples with 64-d" in err and "warning: FD-DINOv2 from 24 samples with 32-d" in err
    # FD-DINOv2 recomputed independently from the saved PNGs and the real folder.
    net = feature_nets.load_feature_extractor("dinov2", weights="tiny")
    fake_f = extract_features(load_image_folder(out / "samples")[0], net)
    real_f = extract_features(load_image_folder(real)[0], net)
    assert d["value"] == pytest.approx(fid_from_features(fake_f, real_f), rel=1e-6)


def test_reference_statistics_written_and_read_back(setup, first_run, monkeypatch, tmp_path):
    root, real, _, export = setup
    _, first = first_run
    stats = tmp_path / "shared" / "toy_clean_custom_na.npz"
    argv = ["--ckpt", export, "--num-samples", 24, "--batch-size", 8, "--feature-extractor", "tiny", "--metrics",
            "fid,kid,pr,dc"]
    a = run_eval([*argv, "--real", real, "--out", tmp_path / "a", "--write-ref-stats", stats], monkeypatch,
                 root / "cache1")
    side = json.loads(stats.with_suffix(".json").read_text())
    assert side["n"] == 40 and side["split_sha256"] == a["real"]["split_sha256"] and side["num_files"] == 40
    assert side["feature_extractor"]["name"] == "tiny-random-conv-v1" and "crop" in side
    b = run_eval([*argv, "--ref-stats", stats, "--out", tmp_path / "b"], monkeypatch, tmp_path / "other-cache")
    for name in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert b["metrics"][name]["value"] == pytest.approx(a["metrics"][name]["value"], rel=1e-9), name
    assert a["metrics"]["fid"]["value"] == first["metrics"]["fid"]["value"]
    assert b["real"]["ref_stats"] == str(stats.resolve()) and b["real"]["split_sha256"] == a["real"]["split_sha256"]
    with pytest.raises(SystemExit, match="--ref-stats is the reference"):
        run_eval([*argv, "--ref-stats", stats, "--real", real, "--out", tmp_path / "c"], monkeypatch, tmp_path / "x")


def test_metrics_files_without_the_new_metrics_still_read(first_run, tmp_path):
    _, result = first_run
    old = json.loads(json.dumps(result))
    for name in ("density", "coverage", "fd_dinov2"):
        old["metrics"].pop(name)
    for e in old["metrics"].values():
        for k in ("num_samples", "num_real", "feature_dim", "biased"):
            e.pop(k, None)
    validate_metrics(old)
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    assert read_metrics(tmp_path / "metrics.json")["metrics"].keys() == set(METRIC_NAMES)


def test_model_card_beside_export_is_refreshed_by_evaluate(setup, monkeypatch, tmp_path):
    """export.safetensors gets a Hugging Face model card (YAML front matter + Markdown); evaluate.py refreshes it
    with its metrics, their sample counts and the sample grid."""
    from utils.images import save_grid
    from utils.model_card import parse_model_card

    root, real, model, _ = setup
    run = tmp_path / "run"
    extra = {"data": {"source": str(real), "split_sha256": "cd" * 32, "num_train": 24, "num_heldout": 16,
                      "crop": "center", "resolution": 32}}
    export = save_export(run / "export.safetensors", "toy", model, {"z_dim": 8, "resolution": 32},
                         {"data": str(real), "n_real": 16, "resolution": 32, "batch_size": 8, "seed": 0,
                          "crop": "center"}, step=7, epoch=1, train_seconds=12.5, extra=extra)
    meta, body = parse_model_card((run / "README.md").read_text())
    assert meta["library_name"] == "facegen" and meta["license"] == "other" and "toy" in meta["tags"]
    assert "not evaluated yet" in body
    save_grid(model.sample(4, generator=torch.Generator().manual_seed(0)), run / "samples.png")
    run_eval(["--ckpt", export, "--real", real, "--num-samples", 24, "--batch-size", 8, "--feature-extractor", "tiny",
              "--metrics", "fid,kid,pr,dc,params"], monkeypatch, tmp_path / "cache")
    meta, body = parse_model_card((run / "README.md").read_text())
    assert {"library_name", "license", "license_name", "license_link", "tags", "pipeline_tag", "metrics"} <= set(meta)
    assert {"fid", "kid", "density", "coverage"} <= set(meta["metrics"]) and "celeba" in meta["tags"]
    for needle in ("`toy`", '"z_dim": 8', "cdcdcdcdcdcdcdcd", "| Steps / epochs | 7 / 1 |", "| Train time | 12 s |",
                   "| FID ↓ |", "| 24 / 40 |", "| Density ↑ |", "| Coverage ↑ |", "biased", "![samples.png](samples.png)",
                   "export_eval/metrics.json", "non-commercial research", "## Licence"):
        assert needle in body, needle
