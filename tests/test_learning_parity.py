"""bench/learning_parity.py end to end at toy size: both loops train on exactly our training split, and the
result file holds per-seed scores of ours, the reference and (GAN) the old copied-BatchNorm EMA."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", ["gan", "wgan-gp"])
def test_gan_parity_at_toy_size(tmp_path, family):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(48):  # smooth random blobs: any image folder works
        img = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(img).resize((24, 24), Image.BILINEAR).save(faces / f"{i:03d}.png")
    out = tmp_path / "parity.json"
    env = {**os.environ, "FACEGEN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bench" / "learning_parity.py"), "--family", family, "--data", str(faces),
           "--resolution", "16", "--steps", "4", "--batch-size", "8", "--width", "8", "--n-real", "16",
           "--samples", "16", "--extractor", "tiny", "--work", str(tmp_path / "work"), "--out", str(out),
           "--grids", str(tmp_path / "grids"), "--n-critic", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["data"]["num_train"] == 32 and result["data"]["num_heldout"] == 16
    # The reference's ImageFolder holds the 32 training files and none of the held-out ones.
    manifest = next((tmp_path / "cache" / "splits").glob("*.json"))
    held = set(json.loads(manifest.read_text())["heldout"])
    tree = next((tmp_path / "work").glob("imagefolder-*")) / "faces"
    linked = {p.resolve().name for p in tree.iterdir()}
    assert len(linked) == 32 and not linked & held
    (row,) = result["seeds"]
    for which in ("ours", "reference") + (("ours_copied_bn_stats",) if family == "gan" else ()):
        assert np.isfinite(row[which]["fid"]) and row[which]["samples"] == 16
    assert row["ours"]["steps"] == 4 and row["reference"]["steps"] == 4
    if family == "gan":
        assert row["ours"]["fid"] != row["ours_copied_bn_stats"]["fid"]   # recomputed statistics change the samples
    assert (tmp_path / "grids" / f"{family}_s0_reference.png").is_file()
    assert result["ours_command"].startswith("python train_gan.py")
    if family == "wgan-gp":   # the same objective, critic and optimiser on both sides
        assert "--loss wgan-gp" in result["ours_command"] and "--d-norm layer" in result["ours_command"]
        assert "--n-critic 2" in result["ours_command"] and "--beta1 0.5" in result["ours_command"]
