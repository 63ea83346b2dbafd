"""Learning parity: our trainer against a reference implementation of the same model, same data, same budget.

    python bench/learning_parity.py --family gan --data faces/aligned --seeds 0 1
    python bench/learning_parity.py --family vae --data faces/aligned
    python bench/learning_parity.py --family ddpm --data faces/aligned --steps 3000 --sample-steps 50
    python bench/learning_parity.py --family wgan-gp --data faces/aligned --steps 1200 --n-critic 2

For each seed it trains, on the same training images (the project's hashed split of ``--data``, held-out
images excluded), at the same resolution, batch size and number of steps:

  (a) ours: ``train_<family>.py`` run through its command line (a subprocess: the code path a user runs), scored
      from its export (EMA weights, as every export is);
  (b) the reference, written in this file the way its project writes it:
      * gan:  the PyTorch examples DCGAN loop (examples/dcgan/main.py: torchvision ImageFolder + DataLoader,
              ConvTranspose generator / conv discriminator with BatchNorm, DCGAN init, BCELoss, Adam 2e-4 β1 0.5,
              fp32), one up/down block fewer at 32 px, samples from the live generator in train mode, as the
              example draws its grids;
      * wgan-gp: Gulrajani et al. 2017's DCGAN-architecture loop (improved_wgan_training, gan_64x64.py): the same
              generator, the critic without BatchNorm or Sigmoid and with layer norm (their choice for a WGAN-GP
              critic), E[D(fake)] − E[D(real)] + 10·GP, ``--n-critic`` critic updates per generator step each on
              its own real batch, Adam 1e-4 β (0.5, 0.9);
      * vae:  a textbook VAE loop (the PyTorch examples VAE, as in docs/plan.md s003: summed squared error + KL, Adam
              1e-3) on the same nets (models/vae.py), samples decoded from the prior by the live model;
      * ddpm: the diffusers train_unconditional.py loop (UNet2DModel of the same config, DDPMScheduler.add_noise,
              ε-MSE, AdamW with its defaults, cosine LR with warm-up, diffusers' EMAModel), sampled with
              DDIMPipeline from the EMA weights with our sampler's DDIM settings (steps, η 0, timestep spacing).

Both are scored by one evaluator (utils/fid_evaluator.FIDEvaluator): clean-fid Inception FID and KID, precision/recall,
``--samples`` generated images against the same ``--n-real`` held-out images.  Results (per seed and the
seed-to-seed spread) go to ``--out`` as JSON with the command and machine, and 8×8 sample grids to ``--grids``.
Every phase is resumable: a finished training or score is read back instead of recomputed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from utils import fastpath  # noqa: E402
from utils.data import load_face_data  # noqa: E402
from utils.data_sources import list_images  # noqa: E402
from utils.export import atomic_write_json, load_export  # noqa: E402
from utils.features import generate_and_extract  # noqa: E402
from utils.fid_evaluator import FIDEvaluator  # noqa: E402
from utils.images import save_grid  # noqa: E402

DEFAULT_STEPS = {"gan": 1500, "vae": 1500, "ddpm": 3000, "wgan-gp": 1200}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family", required=True, choices=sorted(DEFAULT_STEPS), help="which pair to train and score")
    p.add_argument("--data", required=True, help="folder of (aligned) face images")
    p.add_argument("--resolution", type=int, default=32, help="training resolution")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: gan/vae 1500, ddpm 3000)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of both loops")
    p.add_argument("--width", type=int, default=32, help="GAN ngf = ndf, VAE base channels, UNet base channels")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--n-real", type=int, default=2048, help="held-out images (the FID reference; never trained on)")
    p.add_argument("--samples", type=int, default=2048, help="generated images per score")
    p.add_argument("--n-critic", type=int, default=5, help="critic updates per generator step (wgan-gp; the paper's 5)")
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of both DDPMs (eta 0)")
    p.add_argument("--layers-per-block", type=int, default=2, help="UNet residual blocks per level (ddpm)")
    p.add_argument("--attn-res", default="8,16", help="UNet feature-map sizes with self-attention (ddpm)")
    p.add_argument("--fid-weights", default=None, help="clean-fid Inception file (default $FACEGEN_FID_WEIGHTS)")
    p.add_argument("--extractor", default="inception", choices=["inception", "tiny"],
                   help="'tiny' is for smoke tests only (numbers comparable with themselves)")
    p.add_argument("--work", default="/tmp/facegen-parity", help="runs, reference checkpoints and cached scores")
    p.add_argument("--out", default=None, help="result JSON (default docs/results/parity_<family>.json)")
    p.add_argument("--grids", default="docs/results/parity", help="folder for the side-by-side sample grids")
    a = p.parse_args(argv)
    a.steps = a.steps or DEFAULT_STEPS[a.family]
    a.out = a.out or str(ROOT / "docs" / "results" / f"parity_{a.family}.json")
    return a


# ------------------------------------------------------------------------------------------------ data

def reference_folder(a, data) -> Path:
    """An ImageFolder tree (one class folder of symlinks) holding exactly our training split of ``--data``."""
    root = Path(a.data).resolve()
    held = set(json.loads(Path(data.info["manifest_path"]).read_text())["heldout"])
    names = [p.relative_to(root).as_posix() for p in list_images(root)]
    train = [n for n in names if n not in held]
    if len(train) != data.info["num_train"]:
        raise SystemExit(f"error: {len(train)} training files in {root} but the split has {data.info['num_train']} "
                         "(unreadable files?); the reference must see exactly our training images")
    tree = Path(a.work) / f"imagefolder-{data.info['split_sha256'][:12]}" / "faces"
    if not tree.is_dir() or len(list(tree.iterdir())) != len(train):
        tree.mkdir(parents=True, exist_ok=True)
        for n in train:
            link = tree / n.replace("/", "__")
            if not link.exists():
                link.symlink_to(root / n)
    return tree.parent


def image_loader(a, folder: Path, seed: int):
    """torchvision ImageFolder + DataLoader with the examples' transforms (resize, center crop, [-1, 1])."""
    import torchvision.datasets as dset
    import torchvision.transforms as T

    ds = dset.ImageFolder(str(folder), transform=T.Compose([
        T.Resize(a.resolution), T.CenterCrop(a.resolution), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]))
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=a.batch_size, shuffle=True, num_workers=2, generator=g,
                                       drop_last=True, persistent_workers=True)


def batches_forever(loader):
    while True:
        for x, _ in loader:
            yield x


# ------------------------------------------------------------------------------------------------ references

class RefGenerator(nn.Module):
    """examples/dcgan Generator: z (nz×1×1) → 4×4 → … → R×R, ConvTranspose + BatchNorm + ReLU, Tanh."""

    def __init__(self, nz: int, ngf: int, resolution: int):
        super().__init__()
        n = int(np.log2(resolution)) - 2          # 4 → R doublings
        c = ngf * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z)


class RefDiscriminator(nn.Module):
    """examples/dcgan Discriminator: conv 4×4 s2 + (BatchNorm) + LeakyReLU(0.2) down to 4×4, conv → Sigmoid.
    ``critic=True`` is Gulrajani et al.'s WGAN-GP critic of the same shape: layer norm for BatchNorm (GroupNorm
    with one group: per-sample statistics over C×H×W, per-channel scale and offset), no Sigmoid."""

    def __init__(self, ndf: int, resolution: int, critic: bool = False):
        super().__init__()
        n = int(np.log2(resolution)) - 2
        layers, c = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)], ndf
        for _ in range(n - 1):
            norm = nn.GroupNorm(1, c * 2) if critic else nn.BatchNorm2d(c * 2)
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), norm, nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False)] + ([] if critic else [nn.Sigmoid()])
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


def weights_init(m):
    """examples/dcgan weights_init: conv N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def reference_gan(a, folder: Path, seed: int, ckpt: Path, wgan_gp: bool = False):
    """The examples/dcgan training loop (``wgan_gp``: Gulrajani et al.'s on the same nets, the critic with layer
    norm and no Sigmoid); returns sample_fn(num, generator) drawing from the live generator with train-mode
    BatchNorm, as the example draws netG(fixed_noise)."""
    nz = 100
    torch.manual_seed(seed)
    netG, netD = RefGenerator(nz, a.width, a.resolution), RefDiscriminator(a.width, a.resolution, critic=wgan_gp)
    netG.apply(weights_init), netD.apply(weights_init)
    if ckpt.exists():
        netG.load_state_dict(torch.load(ckpt, weights_only=True)["netG"])
    else:
        betas = (0.5, 0.9) if wgan_gp else (0.5, 0.999)
        lr = 1e-4 if wgan_gp else 2e-4
        optimizerD = torch.optim.Adam(netD.parameters(), lr=lr, betas=betas)
        optimizerG = torch.optim.Adam(netG.parameters(), lr=lr, betas=betas)
        data = batches_forever(image_loader(a, folder, seed))
        t0 = time.perf_counter()
        for step in range(a.steps):
            if wgan_gp:
                for _ in range(a.n_critic):   # each critic update on its own real batch
                    real = next(data)
                    with torch.no_grad():
                        fake = netG(torch.randn(real.size(0), nz, 1, 1))
                    errD, info = wgan_gp_critic_loss(netD, real, fake)
                    netD.zero_grad()
                    errD.backward()
                    optimizerD.step()
                fake = netG(torch.randn(a.batch_size, nz, 1, 1))
                errG = -netD(fake).mean()
            else:
                real = next(data)
                b = real.size(0)
                # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
                netD.zero_grad()
                criterion = nn.BCELoss()
                errD_real = criterion(netD(real).view(-1), torch.full((b,), 1.0))
                errD_real.backward()
                fake = netG(torch.randn(b, nz, 1, 1))
                errD_fake = criterion(netD(fake.detach()).view(-1), torch.full((b,), 0.0))
                errD_fake.backward()
                optimizerD.step()
                info = f"Loss_D {(errD_real + errD_fake).item():.4f}"
                # (2) Update G: maximize log(D(G(z)))
                errG = criterion(netD(fake).view(-1), torch.full((b,), 1.0))
            netG.zero_grad()
            errG.backward()
            optimizerG.step()
            if step % 100 == 0:
                print(f"[ref {a.family} s{seed}] {step}/{a.steps} {info} Loss_G {errG.item():.4f}", flush=True)
        torch.save({"netG": netG.state_dict(), "train_seconds": time.perf_counter() - t0, "steps": a.steps}, ckpt)

    def sample(num, g):
        netG.train()
        with torch.no_grad():
            return netG(torch.randn(num, nz, 1, 1, generator=g))
    return sample


def wgan_gp_critic_loss(netD, real, fake) -> tuple[torch.Tensor, str]:
    """Gulrajani et al. 2017, Algorithm 1: E[D(fake)] − E[D(real)] + 10·E[(‖∇D(x̂)‖ − 1)²], x̂ on real–fake lines."""
    w_dist = netD(real).mean() - netD(fake).mean()
    eps = torch.rand(real.size(0), 1, 1, 1)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(netD(x_hat).sum(), x_hat, create_graph=True)
    gp = 10.0 * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    return gp - w_dist, f"W {w_dist.item():.3f} GP {gp.item():.3f}"


def reference_vae(a, folder: Path, seed: int, ckpt: Path):
    """A textbook VAE loop on our nets: loss = Σ(x̂ − x)² + KL summed over the batch, Adam 1e-3."""
    from models.vae import VAE, VAEConfig

    torch.manual_seed(seed)
    model = VAE(VAEConfig(resolution=a.resolution, base_channels=a.width))
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        data = batches_forever(image_loader(a, folder, seed))
        model.train()
        t0 = time.perf_counter()
        for step in range(a.steps):
            x = next(data)
            recon, mu, logvar = model(x)
            sse = ((recon - x) ** 2).sum()
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = sse + kld
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0:
                print(f"[ref vae s{seed}] {step}/{a.steps} loss/image {loss.item() / len(x):.2f}", flush=True)
        torch.save({"model": model.state_dict(), "train_seconds": time.perf_counter() - t0, "steps": a.steps}, ckpt)
    model.eval()
    return lambda num, g: model.sample(num, generator=g)


def reference_ddpm(a, folder: Path, seed: int, ckpt: Path, model_config: dict):
    """diffusers examples/unconditional_image_generation/train_unconditional.py, single process, its defaults:
    AdamW(1e-4, β (0.95, 0.999), wd 1e-6, eps 1e-8), cosine schedule with 500 warm-up steps, EMAModel
    (inv_gamma 1, power 3/4, max 0.9999), ε-prediction MSE; sampled with DDIMPipeline from the EMA UNet."""
    import torch.nn.functional as F
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from models.ddpm import DiffusionConfig, build_unet

    cfg = DiffusionConfig.from_dict(model_config)
    torch.manual_seed(seed)
    model = build_unet(cfg)
    noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule
                                    if cfg.beta_schedule != "cosine" else "squaredcos_cap_v2",
                                    prediction_type="epsilon")
    ema_model = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                         model_cls=type(model), model_config=model.config)
    state = torch.load(ckpt, weights_only=True) if ckpt.exists() else None
    if state is None or state["step"] < a.steps:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
        lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=a.steps)
        start = 0
        if state is not None:  # resume: the loop is long on a CPU
            model.load_state_dict(state["model"]), optimizer.load_state_dict(state["optimizer"])
            lr_scheduler.load_state_dict(state["lr_scheduler"]), ema_model.load_state_dict(state["ema"])
            torch.set_rng_state(state["rng"])
            start = state["step"]
        data = batches_forever(image_loader(a, folder, seed + start))
        t0 = time.perf_counter() - (state or {}).get("train_seconds", 0.0)
        model.train()
        for step in range(start, a.steps):
            clean_images = next(data)
            noise = torch.randn(clean_images.shape)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean_images.shape[0],)).long()
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
            model_output = model(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            ema_model.step(model.parameters())
            if step % 100 == 0:
                print(f"[ref ddpm s{seed}] {step}/{a.steps} loss {loss.item():.4f} lr {lr_scheduler.get_last_lr()[0]:.2e}",
                      flush=True)
            if (step + 1) % 500 == 0 or step + 1 == a.steps:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "lr_scheduler": lr_scheduler.state_dict(), "ema": ema_model.state_dict(),
                            "rng": torch.get_rng_state(), "step": step + 1,
                            "train_seconds": time.perf_counter() - t0}, tmp)
                tmp.replace(ckpt)
    else:
        model.load_state_dict(state["model"]), ema_model.load_state_dict(state["ema"])
    ema_model.copy_to(model.parameters())
    model.eval()
    # The same DDIM settings as our sampler (parity is about training, not the sampler's defaults).
    ddim = DDIMScheduler.from_config(noise_scheduler.config, timestep_spacing=cfg.timestep_spacing,
                                     set_alpha_to_one=cfg.set_alpha_to_one, clip_sample=cfg.clip_sample)
    pipeline = DDIMPipeline(unet=model, scheduler=ddim)
    pipeline.set_progress_bar_config(disable=True)

    def sample(num, g):
        out = pipeline(generator=g, batch_size=num, num_inference_steps=a.sample_steps, output_type="np").images
        return torch.from_numpy(out).permute(0, 3, 1, 2).float() * 2 - 1
    return sample


# ------------------------------------------------------------------------------------------------ ours

def trainer_argv(a, seed: int, name: str) -> list[str]:
    common = ["--data", a.data, "--resolution", str(a.resolution), "--batch-size", str(a.batch_size),
              "--max-steps", str(a.steps), "--n-real", str(a.n_real), "--seed", str(seed), "--aug", "none",
              "--mixed-precision", "no", "--fid-every", "0", "--export-every", "0", "--save-every", "250",
              "--sample-every", "250", "--log-every", "50", "--out", str(Path(a.work) / "runs"), "--name", name,
              "--resume", "latest"]
    if a.family == "gan":   # plan 2.1 DCGAN losses and optimiser at the reference's widths
        return ["train_gan.py", *common, "--loss", "bce", "--ngf", str(a.width), "--ndf", str(a.width),
                "--latent-dim", "100"]
    if a.family == "wgan-gp":   # the reference's critic, loss and optimiser through our flags
        return ["train_gan.py", *common, "--loss", "wgan-gp", "--gp-lambda", "10", "--n-critic", str(a.n_critic),
                "--optimizer", "adam", "--lr-g", "1e-4", "--lr-d", "1e-4", "--beta1", "0.5", "--beta2", "0.9",
                "--g-norm", "batch", "--d-norm", "layer", "--upsample", "transposed", "--ngf", str(a.width),
                "--ndf", str(a.width), "--latent-dim", "100"]
    if a.family == "vae":   # plain ELBO (β = 1 under our per-pixel normalisation), Adam 1e-3
        return ["train_vae.py", *common, "--base-channels", str(a.width), "--beta", "1", "--lr", "1e-3",
                "--latent-plot", "none", "--eval-images", "512"]
    return ["train_ddpm.py", *common, "--base-channels", str(a.width), "--layers-per-block", str(a.layers_per_block),
            "--attn-res", a.attn_res, "--beta-schedule", "linear",
            "--prediction-type", "epsilon", "--sample-steps", str(a.sample_steps), "--grid-samples", "16"]


def train_ours(a, seed: int) -> Path:
    name = f"ours-{a.family}-s{seed}"
    export = Path(a.work) / "runs" / name / "export.safetensors"
    argv = trainer_argv(a, seed, name)
    # A finished run is reused; an interrupted one (a stopped trainer still exports the step it reached) resumes.
    if not export.exists() or load_export(export).step < a.steps:
        print("[ours] python " + " ".join(argv), flush=True)
        subprocess.run([sys.executable, *argv], cwd=ROOT, check=True)
    return export


def with_live_batchnorm(ema_model: nn.Module, run_dir: Path) -> nn.Module:
    """A copy of the exported EMA generator carrying the live generator's BatchNorm running statistics from the
    run's last resume checkpoint: what EMA copies sampled with before the statistics were recomputed."""
    import copy

    from safetensors.torch import load_file

    ckpt_dir = run_dir / "checkpoints"
    live = load_file(str(ckpt_dir / (ckpt_dir / "latest").read_text().strip() / "model.safetensors"))
    model = copy.deepcopy(ema_model)
    buffers = dict(model.named_buffers())
    stats = {k: v for k, v in live.items() if k.endswith(("running_mean", "running_var"))}
    if not stats or set(stats) - set(buffers):
        raise SystemExit(f"error: {run_dir}'s checkpoint does not hold the generator's BatchNorm statistics")
    for k, v in stats.items():
        buffers[k].copy_(v)
    return model.eval()


# ------------------------------------------------------------------------------------------------ scoring

def score(a, ev, key: str, sample_fn, grid_path: Path) -> dict:
    cache = Path(a.work) / "scores" / f"{key}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    t0 = time.perf_counter()
    gen = generate_and_extract(sample_fn, a.samples, ev.extractor, seed=12345, block_size=64, keep_images=64)
    m = ev.metrics(gen.features, want=("fid", "kid", "pr"))
    out = {k: m[k]["value"] for k in ("fid", "kid", "precision", "recall") if k in m}
    out.update(samples=a.samples, eval_seconds=time.perf_counter() - t0, features=m["fid"].get("features"))
    save_grid(gen.head_images.float() / 127.5 - 1, grid_path, nrow=8)
    atomic_write_json(cache, out)
    print(f"[score] {key}: " + ", ".join(f"{k} {out[k]:.4g}" for k in ("fid", "kid", "precision", "recall")),
          flush=True)
    return out


def main(argv=None) -> None:
    a = parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    grids = Path(a.grids)
    data = load_face_data(a.data, a.resolution, n_real=a.n_real)
    if len(data.heldout) < a.n_real:
        raise SystemExit(f"error: only {len(data.heldout)} held-out images (asked for {a.n_real})")
    ev = FIDEvaluator.from_face_data(data, a.extractor, weights=a.fid_weights or os.environ.get("FACEGEN_FID_WEIGHTS"),
                                     device="cpu")
    folder = reference_folder(a, data)
    floor_n = min(a.samples, len(data.train))
    floor_cache = Path(a.work) / "scores" / f"floor-{data.info['split_sha256'][:12]}-{a.extractor}-{floor_n}.json"
    if floor_cache.exists():
        floor = json.loads(floor_cache.read_text())
    else:  # the same train-vs-held-out floor for every family on this split
        floor = ev.metrics(ev.features(data.train[:floor_n]), want=("fid", "kid", "pr"))
        atomic_write_json(floor_cache, floor)
    rows = []
    for seed in a.seeds:
        export_path = train_ours(a, seed)
        ex = load_export(export_path, family="gan" if a.family == "wgan-gp" else a.family)
        kw = {"steps": a.sample_steps, "eta": 0.0} if a.family == "ddpm" else {}
        ours = score(a, ev, f"{a.family}-s{seed}-ours", lambda n, g: ex.model.sample(n, generator=g, **kw),
                     grids / f"{a.family}_s{seed}_ours.png")
        ours.update(train_seconds=ex.train_seconds, steps=ex.step)
        row = {"seed": seed, "ours": ours}
        if a.family == "gan":  # the same EMA weights with the live generator's BatchNorm statistics (the old export)
            copied = with_live_batchnorm(ex.model, export_path.parent)
            row["ours_copied_bn_stats"] = score(a, ev, f"gan-s{seed}-ours-copied-bn", lambda n, g: copied.sample(
                n, generator=g), grids / f"gan_s{seed}_ours_copied_bn.png")
        ckpt = Path(a.work) / f"ref-{a.family}-s{seed}.pt"
        if a.family == "gan":
            ref_fn = reference_gan(a, folder, seed, ckpt)
        elif a.family == "wgan-gp":
            ref_fn = reference_gan(a, folder, seed, ckpt, wgan_gp=True)
        elif a.family == "vae":
            ref_fn = reference_vae(a, folder, seed, ckpt)
        else:
            ref_fn = reference_ddpm(a, folder, seed, ckpt, ex.model_config)
        ref = score(a, ev, f"{a.family}-s{seed}-reference", ref_fn, grids / f"{a.family}_s{seed}_reference.png")
        state = torch.load(ckpt, weights_only=True)
        ref.update(train_seconds=state["train_seconds"], steps=state["steps"] if "steps" in state else state["step"])
        rows.append({**row, "reference": ref})
        print(f"seed {seed}: FID ours {ours['fid']:.2f} vs reference {ref['fid']:.2f}", flush=True)

    def spread(which, key):
        v = np.array([r[which][key] for r in rows], float)
        return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
    summary = {w: {k: spread(w, k) for k in ("fid", "kid", "precision", "recall")} for w in ("ours", "reference")}
    result = {"bench": "learning_parity", **fastpath.bench_invocation(), "family": a.family,
              "machine": f"{fastpath.cpu_description()}, {os.cpu_count()} cores", "config": vars(a),
              "data": {k: data.info.get(k) for k in ("num_train", "num_heldout", "split_sha256", "resolution")},
              "ours_command": "python " + " ".join(trainer_argv(a, a.seeds[0], f"ours-{a.family}-s{a.seeds[0]}")),
              "evaluator": {"features": ev.extractor.describe(), "samples": a.samples, "n_real": len(data.heldout)},
              "real_floor": {"what": f"{floor_n} training images vs the held-out images",
                             **{k: floor[k]["value"] for k in floor}},
              "seeds": rows, "summary": summary}
    atomic_write_json(a.out, result)
    print(json.dumps(summary, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
