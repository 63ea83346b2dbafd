"""ACGAN: conditional generator / two-headed discriminator, attribute-file labels, per-class evaluation on a toy
set whose classes are trivially separable, and a few training steps through `accelerate launch train_gan.py
--cond-attr` (class conditioning is an option of the GAN trainer)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from models.acgan import ACGANConfig, ACGANDiscriminator, ACGANGenerator
from models.layers import SelfAttention
from models.losses import gradient_penalty
from utils.attributes import load_labelled_data
from utils.class_eval import class_grid, evaluate_acgan
from utils.data import Batches
from utils.data_sources import DataError
from utils.export import load_export
from utils.gan_flags import parse_args

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 40


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """40 noise images: 'Smiling' ones bright, the others dark; one image has no row in the attribute file."""
    root = tmp_path_factory.mktemp("attr-faces")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_IMAGES):
        smiling = i % 2 == 0
        base = 190 if smiling else 60
        img = np.clip(base + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:06d}.png")
        if i != 7:
            rows.append(f"{i:06d}.jpg {1 if smiling else -1} {-1 if smiling else 1}")   # CelebA lists .jpg names
    (root.parent / "list_attr.txt").write_text(f"{len(rows)}\nSmiling Male\n" + "\n".join(rows) + "\n")
    return root, root.parent / "list_attr.txt"


def tiny_cfg(**kw) -> ACGANConfig:
    return ACGANConfig(**{**dict(resolution=16, latent_dim=8, ngf=4, ndf=4, embed_dim=4), **kw}).validate()


def data_args(folder, attr_file, cache_dir, **kw):
    return argparse.Namespace(**{**dict(data=str(folder), resolution=16, n_real=10, cache_dir=str(cache_dir), synthetic_size=0,
                                        data_seed=0, combined=None, download=False, data_root=None, crop="center",
                                        attr="Smiling", attr_file=str(attr_file)), **kw})


@pytest.mark.parametrize("embed", ["concat", "multiply"])
def test_generator_conditions_on_label_and_samples_balanced(embed):
    torch.manual_seed(0)
    G = ACGANGenerator(tiny_cfg(embed=embed)).eval()
    z = torch.randn(3, 8)
    a = G.sample(3, z=z, labels=torch.zeros(3, dtype=torch.long))
    b = G.sample(3, z=z, labels=torch.ones(3, dtype=torch.long))
    assert a.shape == (3, 3, 16, 16) and (a - b).abs().max() > 1e-4          # the label changes the image
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    bal = G.sample(4, generator=g1)                                          # labels None → 0, 1, 0, 1
    z4 = torch.randn(4, 8, generator=g2)
    assert torch.allclose(bal, G.sample(4, z=z4, labels=torch.tensor([0, 1, 0, 1])), atol=1e-6)
    grid = class_grid(G, z)                                                  # rows share z, columns = classes
    assert torch.allclose(grid[0::2], a, atol=1e-6) and torch.allclose(grid[1::2], b, atol=1e-6)


def test_discriminator_heads_and_gradient_penalty():
    D = ACGANDiscriminator(tiny_cfg(d_norm="instance"))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    score, logits = D(x)
    assert score.shape == (2,) and logits.shape == (2, 2)
    gp, norm = gradient_penalty(lambda v: D(v, fp32=True)[0], x, -x, 10.0)
    gp.backward()
    assert torch.isfinite(gp) and norm > 0 and D.critic.blocks[0][0].weight.grad is not None


def test_labels_from_attribute_file(labelled_folder, cache_dir):
    folder, attr_file = labelled_folder
    lab = load_labelled_data(data_args(folder, attr_file, cache_dir))
    assert len(lab.data.train) + len(lab.data.heldout) == N_IMAGES - 1 and lab.data.info["skipped"]["no attribute row"] == 1
    # bright images are class 1 (Smiling = +1)
    for imgs, labels in ((lab.data.train, lab.train_labels), (lab.data.heldout, lab.heldout_labels)):
        assert torch.equal((imgs.float().mean(dim=(1, 2, 3)) > 128).long(), labels)
    with pytest.raises(DataError, match="not in list_attr.txt"):
        load_labelled_data(data_args(folder, attr_file, cache_dir, attr="Eyeglasses"))


class ClassPicker(torch.nn.Module):
    """A 'generator' that returns real training images of the requested class (or of the other class)."""

    def __init__(self, images, labels, swap=False):
        super().__init__()
        self.images, self.labels, self.swap, self.num_classes = images, labels, swap, 2
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def sample(self, num, *, generator=None, labels=None, batch_size=64):
        want = (labels + int(self.swap)) % 2
        pool = [self.images[self.labels == c] for c in range(2)]
        return torch.stack([pool[int(c)][i % len(pool[int(c)])] for i, c in enumerate(want)]).float() / 127.5 - 1


def test_evaluate_acgan_per_class_fid_and_accuracy(labelled_folder, cache_dir):
    folder, attr_file = labelled_folder
    tc = vars(data_args(folder, attr_file, cache_dir))
    lab = load_labelled_data(tc)
    good = SimpleNamespace(family="acgan", train_config=tc, model=ClassPicker(lab.data.train, lab.train_labels))
    bad = SimpleNamespace(family="acgan", train_config=tc, model=ClassPicker(lab.data.train, lab.train_labels, True))
    r_good = evaluate_acgan(good, num_per_class=8, extractor="tiny")
    r_bad = evaluate_acgan(bad, num_per_class=8, extractor="tiny")
    assert r_good["classifier"]["heldout_real_accuracy"] == 1.0
    assert r_good["classifier"]["generated_accuracy"] == 1.0 and r_bad["classifier"]["generated_accuracy"] == 0.0
    for name in ("not_Smiling", "Smiling"):
        assert r_good["per_class"][name]["fid"] < r_bad["per_class"][name]["fid"]
        assert r_good["per_class"][name]["n_real"] == int((lab.heldout_labels == (name == "Smiling")).sum())
    with pytest.raises(ValueError, match="'acgan' export"):
        evaluate_acgan(SimpleNamespace(family="gan"), num_per_class=2, extractor="tiny")


def test_flag_errors():
    with pytest.raises(SystemExit) as e:
        parse_args(["--cond-attr", "Smiling", "--attr-file", "x.txt"])   # synthetic faces carry their own attributes
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(["--cond-attr", "Smiling", "--loss", "wgan-gp", "--d-norm", "batch"])
    for argv in (["--aux-weight", "2"], ["--attr-file", "x.txt"], ["--cond-attr", "Smiling", "--combined", "raw"]):
        with pytest.raises(SystemExit) as e:                               # conditional flags need --cond-attr
            parse_args(argv)
        assert e.value.code == 2


def test_train_acgan_end_to_end(labelled_folder, cache_dir, tmp_path):
    """train_gan.py --cond-attr with attention, DiffAugment and an LR schedule (train_gan.py features) switched on."""
    folder, attr_file = labelled_folder
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", "1", str(ROOT / "train_gan.py"),
           "--data", str(folder), "--attr-file", str(attr_file), "--cond-attr", "Smiling", "--loss", "wgan-gp",
           "--attn-res", "8", "--diffaug", "translation", "--lr-schedule", "cosine",
           "--n-real", "10", "--resolution", "16", "--batch-size", "4", "--max-steps", "3", "--fid-every", "0",
           "--sample-every", "2", "--save-every", "3", "--log-every", "1", "--ngf", "4", "--ndf", "4", "--latent-dim", "8",
           "--grid-rows", "3", "--class-eval-samples", "4", "--fid-extractor", "tiny", "--out", str(tmp_path),
           "--name", "ac"]
    env = {**os.environ, "FACEGEN_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "ac"
    ex = load_export(run / "export.safetensors")
    assert ex.family == "acgan" and ex.model_config["class_names"] == ["not_Smiling", "Smiling"]
    assert ex.model_config["attn_res"] == [8] and sum(isinstance(m, SelfAttention) for m in ex.model.modules()) == 1
    assert ex.model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 3, 16, 16)
    grid = np.asarray(Image.open(run / "class_grid.png"))
    assert grid.shape == (3 * 18 + 2, 2 * 18 + 2, 3)                             # 3 z rows × 2 classes
    metrics = json.loads((run / "class_metrics.json").read_text())
    assert set(metrics["per_class"]) == {"not_Smiling", "Smiling"} and 0 <= metrics["classifier"]["generated_accuracy"] <= 1
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert {"aux_d", "aux_g", "gp", "cls_acc_real"} <= set(stats[-1])
    assert stats[-1]["lr_g"] < stats[0]["lr_g"]                                  # the cosine schedule ran
    assert (run / "samples_Smiling.png").is_file() and (run / "samples_not_Smiling.png").is_file()


@pytest.mark.parametrize("arch", ["dcgan", "stylegan-lite"])
def test_conditional_nets_take_every_gan_option(arch):
    """The ACGAN config is GANConfig plus classes: attention, spectral norm and the StyleGAN-lite generator apply."""
    torch.manual_seed(0)
    cfg = tiny_cfg(resolution=32, arch=arch, attn_res=[16], spectral_norm=True, d_norm="none",
                   upsample="bilinear" if arch == "stylegan-lite" else "transposed")
    G, D = ACGANGenerator(cfg).eval(), ACGANDiscriminator(cfg)
    assert sum(isinstance(m, SelfAttention) for m in D.modules()) == 1
    z = torch.randn(2, 8)
    a, b = G.sample(2, z=z, labels=torch.tensor([0, 0])), G.sample(2, z=z, labels=torch.tensor([1, 1]))
    assert a.shape == (2, 3, 32, 32) and (a - b).abs().max() > 1e-4
    score, logits = D(a)
    assert score.shape == (2,) and logits.shape == (2, 2)


def test_old_acgan_config_loads():
    """An export config written by the former train_acgan.py (no GANConfig-only keys) still builds."""
    old = dict(resolution=16, latent_dim=8, num_classes=2, class_names=["not_Smiling", "Smiling"], attr="Smiling",
               embed="concat", embed_dim=4, ngf=4, ndf=4, g_norm="batch", d_norm="batch", upsample="transposed",
               spectral_norm=False)
    cfg = ACGANConfig.from_dict(old)
    assert cfg.arch == "dcgan" and cfg.attn_res == [] and ACGANGenerator(cfg).sample(2).shape == (2, 3, 16, 16)


def test_batches_yield_labels_that_follow_the_images_and_resume():
    images = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 2, 2).contiguous()
    labels = torch.arange(12) * 10
    b = Batches(images, 4, seed=3, labels=labels)
    seen = [b.next() for _ in range(2)]
    state = b.state_dict()
    after = [b.next() for _ in range(4)]
    for x, y in seen + after:   # each label is its own image's (image value v in [-1, 1] ↔ label 10·index)
        assert torch.equal(((x[:, 0, 0, 0] + 1) * 127.5).round().long() * 10, y)
    again = Batches(images, 4, seed=3, labels=labels)
    again.load_state_dict(state)
    assert all(torch.equal(a[1], e[1]) for a, e in zip([again.next() for _ in range(4)], after))
