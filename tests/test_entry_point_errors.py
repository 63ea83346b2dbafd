"""Bad inputs at the USER ENTRY POINTS: train_*.py, evaluate.py and align_faces.py run as subprocesses.

Every bad input ends in a converted image, a counted skip, or a one-line error — never a traceback — and output
written earlier (a finished run directory, an evaluation folder, an aligned folder) is byte-for-byte unchanged.
The data-level corpus (read_image_rgb) and export rejections are unit-tested in tests/test_data.py and
tests/test_export.py (a directory as an export, missing files), tests/test_evaluate.py (missing/garbage
checkpoints) and tests/test_safe_loading.py (an unknown family); here the same kinds of files go through the scripts.  Flag ranges of the common flags are checked
in-process (argparse is the first thing each ``main`` does), one flag per script through a real process.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.test_data import make_bad_corpus
from tests.runs import ROOT, Proc, base_env

TINY_GAN = ["--resolution", "16", "--batch-size", "4", "--max-steps", "2", "--save-every", "1", "--fid-every", "0",
            "--sample-every", "0", "--log-every", "1", "--ngf", "8", "--ndf", "8", "--latent-dim", "16",
            "--grid-samples", "4"]
CORPUS_SKIPS = {"is a directory": 1, "not an image": 1, "too large (decompression-bomb guard)": 1,
                "too small (<8px)": 1, "truncated": 1, "zero-byte file": 1}


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming width×height pixels (a decompression bomb), with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_unchanged(before: dict, folder: Path, new_ok: str | None = None) -> None:
    """Every earlier file is byte-identical; new files only where ``new_ok`` (a path prefix) allows."""
    after = snapshot(folder)
    changed = [k for k, v in before.items() if after.get(k) != v]
    added = [k for k in after if k not in before and not (new_ok and k.startswith(new_ok))]
    assert not changed and not added, f"earlier output damaged: changed {changed}, added {added}"


def assert_one_line_error(proc: Proc, code: int, pattern: str) -> None:
    """Exit ``code``; stderr holds no traceback and exactly one 'error' line, matching ``pattern``.

    Either argparse's usage lines then 'prog: error: ...' (exit 2), or the single line 'error: ...'.
    """
    err = proc.stderr
    assert proc.p.returncode == code, f"exit {proc.p.returncode}\n{proc.stdout[-1500:]}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^(\S+\.py: )?error: ", line)]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-8:]
    if errors[0].startswith("error: "):
        assert len(lines) == 1, lines[-8:]                       # nothing but the one line
    else:
        assert code == 2 and lines[0].startswith("usage: "), lines[0]   # argparse: usage, then the error
    assert re.search(pattern, errors[0]), errors[0]


def run_all(cases: dict[str, list[str]], env: dict, log_dir: Path, width: int = 3) -> dict[str, Proc]:
    """Run the commands, ``width`` at a time (they are mostly interpreter start-up: overlap them)."""
    pending, running, done = list(cases.items()), {}, {}
    while pending or running:
        while pending and len(running) < width:
            tag, cmd = pending.pop(0)
            running[tag] = Proc(cmd, env, log_dir, tag)
        for tag, proc in list(running.items()):
            if proc.p.poll() is not None:
                proc.wait()
                done[tag] = running.pop(tag)
        time.sleep(0.05)
    return done


def script(name: str, *args) -> list[str]:
    return [sys.executable, str(ROOT / name), *map(str, args)]


def relabel_export(src: Path, dst: Path, **meta_changes: str) -> Path:
    """A copy of an export with some metadata replaced (what another tool or version might have written)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(dst), metadata={**meta, **meta_changes})
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_cache):
    """Phase 1: a finished GAN run on the bad-input corpus (it must train on what is usable), an aligned folder,
    and the inputs that fail before any output exists.  Phase 2: bad inputs aimed at those earlier outputs."""
    from skimage import data

    root = tmp_path_factory.mktemp("bad-inputs")
    corpus = root / "corpus"
    make_bad_corpus(corpus, data.astronaut())
    (corpus / "bomb.png").write_bytes(png_header_only(30000, 30000))
    (root / "empty").mkdir()
    env = base_env(shared_cache)
    runs, logs = root / "runs", root / "logs"
    train_corpus = script("train_gan.py", "--data", corpus, "--n-real", 4, *TINY_GAN, "--out", runs, "--name", "prev")
    phase1 = run_all({
        "corpus_gan": train_corpus,
        "flag_gan": script("train_gan.py", "--n-critic", 0),
        "flag_vae": script("train_vae.py", "--resolution", 100),
        "flag_ddpm": script("train_ddpm.py", "--lr", -1),
        "empty_vae": script("train_vae.py", "--data", root / "empty", "--out", runs, "--name", "empty"),
        "missing_ddpm": script("train_ddpm.py", "--data", root / "no-such-folder", "--out", runs, "--name", "missing"),
        "align_corpus": script("align_faces.py", "--input", corpus, "--output", root / "aligned", "--size", 32,
                               "--device", "cpu"),
    }, env, logs)
    phase1["corpus_gan"].ok()
    phase1["align_corpus"].ok()

    prev, aligned = runs / "prev", root / "aligned"
    export = prev / "export.safetensors"
    evals = root / "eval"
    evals.mkdir()
    (evals / "metrics.json").write_text('{"earlier": "evaluation"}\n')
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(export.read_bytes()[: export.stat().st_size // 2])
    damaged_ckpt = shutil.copytree(prev / "checkpoints" / "step-00000001", root / "damaged-step-1")
    model = damaged_ckpt / "model.safetensors"
    model.write_bytes(model.read_bytes()[:200])
    before = {"prev": snapshot(prev), "eval": snapshot(evals), "aligned": snapshot(aligned)}
    ev = ("--feature-extractor", "tiny", "--num-samples", 8, "--real", corpus, "--out", evals)
    phase2 = run_all({
        "rerun_fresh": train_corpus,
        "resume_damaged": train_corpus + ["--resume", str(damaged_ckpt)],
        "eval_truncated": script("evaluate.py", "--ckpt", truncated, *ev),
        "eval_schema": script("evaluate.py", "--ckpt", relabel_export(export, root / "v99.safetensors",
                                                                       schema_version="99"), *ev),
        "eval_other_family": script("evaluate.py", "--ckpt", relabel_export(export, root / "vae.safetensors",
                                                                             family="vae"), *ev),
        "align_bad_flag": script("align_faces.py", "--input", corpus, "--output", aligned, "--size", 4),
    }, env, logs)
    return {**phase1, **phase2, "root": root, "prev": prev, "evals": evals, "aligned": aligned, "before": before}


# ------------------------------------------------------------------------------------------------ counted skips

def test_trainer_on_the_bad_corpus_trains_on_what_is_usable_and_counts_the_rest(world):
    from utils.export import load_export

    out = world["corpus_gan"].stdout
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(CORPUS_SKIPS.items()))
    assert f"4 train, 4 held-out" in out and f"skipped: {skipped}" in out, out[-2000:]
    assert "Traceback" not in world["corpus_gan"].stderr
    ex = load_export(world["prev"] / "export.safetensors", family="gan")
    assert ex.step == 2 and ex.extra["data"]["skipped"] == CORPUS_SKIPS


def test_align_faces_on_the_bad_corpus_counts_failures(world):
    proc = world["align_corpus"]
    summary = proc.stdout.strip().splitlines()[-1]
    m = re.match(r"aligned (\d+), failed (\d+) \((.*)\), skipped 0 already done", summary)
    assert m, summary
    reasons = dict((k, int(v)) for v, k in (r.split(" ")[::-1] for r in m.group(3).split(", ")))
    assert reasons["unreadable"] == sum(CORPUS_SKIPS.values())                   # the same six files
    assert int(m.group(1)) >= 5                                                    # astronaut in every colour mode
    assert int(m.group(1)) + int(m.group(2)) == 14 and "Traceback" not in proc.stderr
    failures = [json.loads(line) for line in (world["aligned"] / "failures.jsonl").read_text().splitlines()]
    assert {f["detail"] for f in failures if f["reason"] == "unreadable"} == set(CORPUS_SKIPS)


# ------------------------------------------------------------------------------------------------ one-line errors

@pytest.mark.parametrize("case,code,pattern", [
    ("flag_gan", 2, r"--n-critic: .*must be a positive integer, got 0"),
    ("flag_vae", 2, r"--resolution: invalid choice: '?100'?"),
    ("flag_ddpm", 2, r"--lr: .*must be a positive number, got -1"),
    ("empty_vae", 1, r"^error: no images .* found under .*empty"),
    ("missing_ddpm", 1, r"^error: data folder not found: .*no-such-folder"),
    ("align_bad_flag", 2, r"^error: --size must be ≥ 8, got 4"),
])
def test_bad_input_fails_with_one_line(world, case, code, pattern):
    assert_one_line_error(world[case], code, pattern)


@pytest.mark.parametrize("case,pattern", [
    ("rerun_fresh", r"already holds a run \(checkpoints up to step-00000002\); add --resume latest"),
    ("resume_damaged", r"^error: cannot resume from .*damaged-step-1: "),
])
def test_a_finished_run_is_never_overwritten(world, case, pattern):
    """Training again into a finished run, or resuming it from a damaged checkpoint, changes none of its files
    (a resumed run's config.json is only rewritten once the resume succeeded)."""
    assert_one_line_error(world[case], 1, pattern)
    assert_unchanged(world["before"]["prev"], world["prev"], new_ok="tb/")   # TensorBoard opens a new event file


@pytest.mark.parametrize("case,pattern", [
    ("eval_truncated", r"is not a readable safetensors file"),
    ("eval_schema", r"has export schema version 99; this code reads version 1"),
    ("eval_other_family", r"cannot build a 'vae' model from its stored config"),
])
def test_evaluate_rejects_bad_exports_and_keeps_earlier_metrics(world, case, pattern):
    assert_one_line_error(world[case], 1, pattern)
    assert_unchanged(world["before"]["eval"], world["evals"])


def test_align_output_survives_a_failed_rerun(world):
    assert_unchanged(world["before"]["aligned"], world["aligned"])


# ------------------------------------------------------------------------------------------------ flag ranges

@pytest.mark.parametrize("module", ["train_gan", "train_vae", "train_ddpm"])
@pytest.mark.parametrize("argv,message", [
    (["--resolution", "100"], "invalid choice"),
    (["--seed", "-1"], "must be an integer in [0, 2**31)"),
    (["--batch-size", "0"], "must be a positive integer"),
    (["--n-real", "-5"], "must be an integer ≥ 0"),
    (["--synthetic-size", "0"], "must be a positive integer"),
    (["--max-bad-steps", "0"], "must be a positive integer"),
    (["--keep-checkpoints", "0"], "must be a positive integer"),
    (["--save-every", "-1"], "period must be ≥ 0"),
    (["--ema-decay", "1.5"], "must be in [0, 1]"),
    (["--mixed-precision", "fp8"], "invalid choice"),
])
def test_common_flags_out_of_range_exit_2_with_one_line(module, argv, message, capsys):
    mod = __import__(module)
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: ") and re.match(r"^\S+: error: ", err[-1]) and message in err[-1], err


@pytest.mark.parametrize("module,argv,message", [
    ("train_gan", ["--lr-g", "-1"], "must be a positive number"),
    ("train_gan", ["--lr-d", "0"], "must be a positive number"),
    ("train_gan", ["--n-critic", "0"], "must be a positive integer"),
    ("train_vae", ["--lr", "-1"], "must be a positive number"),
    ("train_ddpm", ["--lr", "nan"], "must be a positive number"),
    ("train_ddpm", ["--warmup-steps", "-3"], "--warmup-steps must be ≥ 0"),
])
def test_family_flags_out_of_range_exit_2_with_one_line(module, argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        __import__(module).main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
