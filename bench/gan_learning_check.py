"""Learning check for the GAN track: does a few minutes of DCGAN training on CPU lower a fixed-extractor FID?

    OMP_NUM_THREADS=1 python bench/gan_learning_check.py       # 32 px synthetic faces, ~7 min on one CPU core
    python bench/gan_learning_check.py --steps 2000 --out /tmp/gan-check

Trains with train_gan.py itself (through its command line, a subprocess: plan-2.1 DCGAN losses and optimiser,
narrower nets) and scores the EMA generator with FID and KID in the feature space of the 'tiny' extractor (a fixed,
seeded random conv net, utils/feature_nets.py) against the held-out synthetic split:

  * step 0: the initial weights, rebuilt from the run's config.json exactly as the trainer builds them
    (utils.gan_training.build_nets);
  * every exported snapshot (--export-every) and the final export.

A real-vs-real row (training images vs the held-out images) gives the floor the score can approach.  Tiny-extractor
numbers are comparable only with each other, never with Inception FIDs.  Prints a table and writes
<out>/learning_check.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from utils.data import face_data_from_args  # noqa: E402
from utils.export import atomic_write_json, load_export  # noqa: E402
from utils.features import generate_and_extract  # noqa: E402
from utils.fid_evaluator import FIDEvaluator  # noqa: E402
from utils.gan_training import build_nets, model_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1000, help="generator steps to train")
    p.add_argument("--resolution", type=int, default=32, choices=[16, 32, 64], help="image size")
    p.add_argument("--width", type=int, default=32, help="ngf = ndf")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--synthetic-size", type=int, default=6000, help="synthetic faces rendered (train + held-out)")
    p.add_argument("--n-real", type=int, default=1000, help="held-out reference images")
    p.add_argument("--samples", type=int, default=1000, help="generated images per evaluation")
    p.add_argument("--export-every", type=int, default=250, help="snapshot (and evaluation) period in steps")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", type=str, default="/tmp/facegen-gan-learning-check", help="run parent folder")
    return p.parse_args(argv)


def trainer_argv(a) -> list[str]:
    return ["--data", "synthetic", "--synthetic-size", str(a.synthetic_size), "--n-real", str(a.n_real),
            "--resolution", str(a.resolution), "--ngf", str(a.width), "--ndf", str(a.width),
            "--batch-size", str(a.batch_size), "--max-steps", str(a.steps), "--loss", "bce", "--seed", str(a.seed),
            "--export-every", str(a.export_every), "--sample-every", str(a.export_every), "--save-every", str(a.steps),
            "--log-every", "100", "--fid-every", "0", "--out", a.out, "--name", f"dcgan-{a.resolution}px-check"]


def score(ev: FIDEvaluator, generator, n: int) -> dict:
    t0 = time.perf_counter()
    feats = generate_and_extract(lambda k, g: generator.sample(k, generator=g), n, ev.extractor, seed=0).features
    m = ev.metrics(feats, want=("fid", "kid"))
    return {"fid": m["fid"]["value"], "kid": m["kid"]["value"], "eval_seconds": time.perf_counter() - t0}


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    argv_train = trainer_argv(a)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train_gan.py"), *argv_train], cwd=ROOT, check=True)
    train_seconds = time.perf_counter() - t0
    run_dir = Path(a.out) / f"dcgan-{a.resolution}px-check"
    # The trainer's resolved flags (per-loss defaults filled in), as it wrote them beside the run.
    args = argparse.Namespace(**json.loads((run_dir / "config.json").read_text()))
    data = face_data_from_args(args)
    ev = FIDEvaluator.from_face_data(data, "tiny", device="cpu")
    rows = []

    floor = ev.metrics(ev.features(data.train[:a.samples]), want=("fid", "kid"))
    rows.append({"what": "real train vs held-out", "step": None, "fid": floor["fid"]["value"],
                 "kid": floor["kid"]["value"]})
    g0, _ = build_nets(args, model_config(args))
    rows.append({"what": "generator at step 0", "step": 0, **score(ev, g0.eval(), a.samples)})
    print(f"step 0: FID {rows[-1]['fid']:.2f}, KID {rows[-1]['kid']:.4f}", flush=True)
    for path in sorted((run_dir / "exports").glob("step*.safetensors")) + [run_dir / "export.safetensors"]:
        ex = load_export(path, family="gan")
        if any(r["step"] == ex.step for r in rows):
            continue
        rows.append({"what": f"EMA generator ({path.name})", "step": ex.step, **score(ev, ex.model, a.samples)})

    print(f"\nDCGAN {a.resolution}px, width {a.width}, batch {a.batch_size}: {a.steps} steps in {train_seconds:.0f} s "
          f"(incl. periodic snapshots); {a.samples} samples vs {len(data.heldout)} held-out, tiny extractor")
    print(f"{'':28s} {'step':>6s} {'FID':>9s} {'KID':>9s}")
    for r in rows:
        step = "" if r["step"] is None else str(r["step"])
        print(f"{r['what'][:28]:28s} {step:>6s} {r['fid']:9.3f} {r['kid']:9.4f}")
    start, end = rows[1], rows[-1]
    print(f"FID {start['fid']:.3f} -> {end['fid']:.3f} ({end['fid'] / start['fid']:.1%} of the step-0 value); "
          f"samples: {run_dir / 'samples.png'}")
    atomic_write_json(run_dir / "learning_check.json", {"config": vars(a), "train_seconds": train_seconds,
                                                         "rows": rows, "trainer_argv": argv_train})


if __name__ == "__main__":
    main()
