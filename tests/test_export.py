"""Self-describing exports, EMA, run setup helpers, resume-state layout."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import models
from utils.argtypes import Every
from utils.ema import EMA
from utils.export import ExportError, load_export, read_export_metadata, save_export

ROOT = Path(__file__).resolve().parents[1]


class TinyNet(nn.Module):
    def __init__(self, width=4, resolution=8):
        super().__init__()
        self.width, self.resolution = width, resolution
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 1)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        return torch.tanh(self.out(torch.relu(self.conv(x))))

    def sample(self, num, *, generator=None):
        z = torch.randn(num, 3, self.resolution, self.resolution, generator=generator).to(self.conv.weight.device)
        return self(z)


def build_from_config(cfg):
    return TinyNet(**cfg)


@pytest.fixture
def tiny_family(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, "tiny", __name__)
    return "tiny"


def test_save_load_same_output(tmp_path, tiny_family):
    net = TinyNet(width=5)
    with torch.no_grad():
        net.count.fill_(7)
    path = save_export(tmp_path / "m.safetensors", "tiny", net, {"width": 5, "resolution": 8}, {"lr": 1e-3},
                       step=12, epoch=3, weights="ema", train_seconds=4.5, extra={"note": "x"})
    ex = load_export(path)
    assert (ex.family, ex.step, ex.epoch, ex.weights, ex.train_seconds) == ("tiny", 12, 3, "ema", 4.5)
    assert ex.train_config == {"lr": 1e-3} and ex.extra == {"note": "x"}
    assert ex.model.count.item() == 7
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(ex.model(x), net.eval()(x))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(ex.model.sample(3, generator=g1), net.sample(3, generator=g2))
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["family"] == "tiny" and side["model_config"]["width"] == 5
    assert side["num_params"] == sum(p.numel() for p in net.state_dict().values())


def test_export_rejections_are_one_line(tmp_path, tiny_family):
    path = save_export(tmp_path / "m.safetensors", "tiny", TinyNet(), {"width": 4, "resolution": 8})
    with pytest.raises(ExportError, match="expected a 'gan' export"):
        load_export(path, family="gan")
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ExportError, match="not a readable safetensors"):
        read_export_metadata(trunc)
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ExportError, match="no facegen metadata"):
        load_export(tmp_path / "plain.safetensors")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "v99.safetensors"), metadata={"family": "tiny", "schema_version": "99"})
    with pytest.raises(ExportError, match="schema version 99"):
        load_export(tmp_path / "v99.safetensors")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "alien.safetensors"), metadata={"family": "alien", "schema_version": "1"})
    with pytest.raises(ExportError, match="known families"):
        load_export(tmp_path / "alien.safetensors")
    with pytest.raises(ExportError, match="not found"):
        load_export(tmp_path / "missing.safetensors")
    with pytest.raises(ExportError, match="directory"):
        load_export(tmp_path)
    # weights that do not fit the stored config
    save_export(tmp_path / "bad.safetensors", "tiny", TinyNet(width=6), {"width": 4, "resolution": 8})
    with pytest.raises(ExportError):
        load_export(tmp_path / "bad.safetensors")


def test_ema_tracks_weights_and_buffers():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.9, warmup=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(8, 2))  # moves BatchNorm running stats (buffers)
    before = [p.clone() for p in ema.module.parameters()]
    ema.update(net)
    for b, e, p in zip(before, ema.module.parameters(), net.parameters()):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    # warm-up: the first update copies most of the model (decay (1+0)/(10+0) = 0.1)
    warm = EMA(net, decay=0.9999)
    assert warm.current_decay() == pytest.approx(0.1)
    state = ema.state_dict()
    other = EMA(net, decay=0.9, warmup=False)
    other.load_state_dict(state)
    assert other.num_updates == 1 and all(torch.equal(a, b) for a, b in
                                          zip(other.module.parameters(), ema.module.parameters()))


def test_ema_standing_batchnorm_statistics_match_the_averaged_weights():
    """The EMA net's BN statistics must be those its own (averaged) weights produce, not the live net's."""
    from models.gan import GANConfig, build_generator
    from utils.ema import recompute_batchnorm

    torch.manual_seed(0)
    G = build_generator(GANConfig(resolution=16, ngf=8, ndf=8, latent_dim=8).validate())
    opt = torch.optim.Adam(G.parameters(), 5e-3)
    draws = []
    ema = EMA(G, decay=0.9, warmup=False, standing=lambda g: draws.append(1) or g(torch.randn(32, 8)),
              standing_batches=8)
    for _ in range(20):   # move the weights so that live and averaged statistics part ways
        loss = (G(torch.randn(32, 8)) - 0.5).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(G)
    z = torch.randn(256, 8)
    copied = ema.module.sample(256, z=z)
    rng_before = torch.get_rng_state()
    standing = ema.for_sampling().sample(256, z=z)
    assert torch.equal(torch.get_rng_state(), rng_before)          # the training RNG stream is untouched
    assert not ema.module.training and len(draws) == 8
    # Reference: the same EMA weights normalised by the statistics of the very batch being sampled.
    reference = copy.deepcopy(ema.module).train()(z)
    err_standing = (standing - reference).abs().mean().item()
    err_copied = (copied - reference).abs().mean().item()
    assert err_standing < 0.2 * err_copied, (err_standing, err_copied)
    ema.for_sampling()
    assert len(draws) == 8                                           # cached until the next update
    ema.update(G)
    ema.for_sampling()
    assert len(draws) == 16
    # nets without BatchNorm are left alone
    assert recompute_batchnorm(nn.Sequential(nn.Linear(2, 2)), lambda m: m(torch.randn(4, 2))) is False


def test_every_parses_steps_and_epochs():
    assert Every("500").steps(100) == 500
    assert Every("2ep").steps(100) == 200
    assert Every("0").steps(100) == 0
    assert Every("0.5ep").steps(3) == 2
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        Every("soon")
    with pytest.raises(argparse.ArgumentTypeError):
        Every("-1")


def test_final_export_gets_a_hugging_face_model_card(tiny_family, tmp_path):
    """export.safetensors (a run's final export) gets README.md in the Hub's model-card format, written from the
    export alone; snapshots under exports/ do not (they share a folder)."""
    from utils.model_card import parse_model_card

    net = TinyNet()
    extra = {"data": {"source": "synthetic", "split_sha256": "ef" * 32, "num_train": 40, "num_heldout": 8,
                      "crop": "center"}}
    save_export(tmp_path / "exports" / "step0000010.safetensors", "tiny", net, {"width": 4, "resolution": 8},
                {"data": "synthetic"}, step=10)
    assert not (tmp_path / "exports" / "README.md").exists()
    path = save_export(tmp_path / "export.safetensors", "tiny", net, {"width": 4, "resolution": 8},
                       {"data": "synthetic", "batch_size": 4, "seed": 1, "mixed_precision": "no"}, step=20, epoch=2,
                       train_seconds=90.0, extra=extra)
    meta, body = parse_model_card((tmp_path / "README.md").read_text())
    assert meta["library_name"] == "facegen" and meta["license"] == "other"
    assert meta["pipeline_tag"] == "unconditional-image-generation" and "synthetic-data" in meta["tags"]
    assert "metrics" not in meta                       # nothing evaluated yet: no metric is claimed
    for needle in ("`tiny`", "`synthetic`", "efefefefefefefef", "| Steps / epochs | 20 / 2 |", "| Train time | 90 s |",
                   '"width": 4', "| Batch size / seed | 4 / 1 |", "not evaluated yet", "CelebA", "non-commercial",
                   f"python evaluate.py --ckpt {path.name}"):
        assert needle in body, needle
