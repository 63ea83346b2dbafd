"""The VAE's latent plot (train_vae.py, docs/plan.md s003): a binary attribute of the held-out images (a CelebA
attribute file, or the synthetic faces' own) and the 2-D t-SNE/PCA figure of their posterior means coloured by it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.vae import VAE
from utils.data import to_float

# The synthetic faces have no 'Male'; the renderer marks 'short_hair' as its stand-in (utils/synthetic.py).
SYNTHETIC_STAND_INS = {"Male": "short_hair"}


def attribute_names(path: str, fail=None) -> list[str]:
    """Attribute names from line 2 of a CelebA list_attr file."""
    try:
        with open(path) as f:
            f.readline()
            names = f.readline().split()
    except OSError as e:
        (fail or _exit)(f"cannot read attribute file {path}: {e.strerror}")
    if not names:
        (fail or _exit)(f"{path} is not a CelebA attribute file (line 2 should list attribute names)")
    return names


def _exit(msg: str):
    raise SystemExit(f"error: {msg}")


def read_attribute(path: str, attr: str) -> dict[str, bool]:
    """{image file name: attribute is +1} from a CelebA list_attr file (line 1 count, line 2 names, rows
    ``filename v1 v2 …`` with ±1).  Malformed rows are skipped."""
    col = attribute_names(path).index(attr)
    out = {}
    with open(path) as f:
        f.readline(), f.readline()
        for line in f:
            parts = line.split()
            if len(parts) > col + 1 and parts[col + 1] in ("1", "-1"):
                out[Path(parts[0]).name] = parts[col + 1] == "1"
    return out


def match_attribute(table: dict[str, bool], names: list[str]) -> list[tuple[int, bool]]:
    """(position, label) for held-out names found in the table.  Names are relative paths; they match by
    file name, or by stem because align_faces.py writes b.jpg as b.png (and b.jpg as b.jpg.png on a clash)."""
    by_stem = {Path(k).stem: v for k, v in table.items()}
    found = []
    for i, n in enumerate(names):
        base = Path(n).name
        for key, lookup in ((base, table), (Path(base).stem, table), (Path(base).stem, by_stem)):
            if key in lookup:
                found.append((i, lookup[key]))
                break
    return found


def heldout_labels(args, data, say) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(held-out indices with a known label, boolean labels, attribute name), or None with a message."""
    try:
        names = json.loads(Path(data.info["manifest_path"]).read_text())["heldout"]
    except (KeyError, OSError, ValueError):
        say("latent plot skipped: no split manifest with held-out names")
        return None
    if len(names) != len(data.heldout):
        say("latent plot skipped: the split manifest does not match the held-out images")
        return None
    attr = args.attr
    if args.attr_file:
        found = match_attribute(read_attribute(args.attr_file, attr), names)
        say(f"latent plot: {len(found)} of {len(names)} held-out images have a row in {args.attr_file}")
    elif all(n.startswith("synthetic/") for n in names):
        try:
            from utils.synthetic import face_attributes
            from utils.synthetic_params import ATTRIBUTE_NAMES
        except ImportError:
            say("latent plot skipped: utils.synthetic has no face_attributes")
            return None
        if attr not in ATTRIBUTE_NAMES and SYNTHETIC_STAND_INS.get(attr) in ATTRIBUTE_NAMES:
            say(f"latent plot: synthetic faces have no {attr!r}; using its stand-in {SYNTHETIC_STAND_INS[attr]!r}")
            attr = SYNTHETIC_STAND_INS[attr]
        if attr not in ATTRIBUTE_NAMES:
            say(f"latent plot skipped: synthetic faces have no attribute {attr!r} ({', '.join(ATTRIBUTE_NAMES)})")
            return None
        seed, idx = int(names[0].split("/")[1]), [int(n.rsplit("/", 1)[1]) for n in names]
        found = list(enumerate(face_attributes(idx, seed)[attr].astype(bool)))
    else:
        say("latent plot skipped: pass --attr-file list_attr_celeba.txt to colour it")
        return None
    if len(found) < 2:
        say("latent plot skipped: fewer than 2 held-out images have a label")
        return None
    idx, labels = map(np.array, zip(*found))
    return idx, labels.astype(bool), attr


@torch.no_grad()
def latent_plot(model: VAE, data, labels, method: str, max_points: int, seed: int, path: Path) -> None:
    """2-D t-SNE or PCA of held-out posterior means, coloured by a binary attribute (docs/plan.md, s003)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx, lab, attr = labels
    keep = np.random.default_rng(seed).permutation(len(idx))[:max_points]
    idx, lab = idx[keep], lab[keep]
    mus = [model.encode(to_float(data.heldout[torch.as_tensor(c)].to(model.device)))[0].float().cpu()
           for c in np.array_split(idx, max(1, len(idx) // 256))]
    mu = torch.cat(mus).numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE
        tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(mu) - 1) / 3), random_state=seed)
        xy = tsne.fit_transform(mu)
    else:  # PCA: projection on the two leading right-singular vectors of the centred means
        centred = mu - mu.mean(0)
        xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    fig, ax = plt.subplots(figsize=(6, 6))
    for value, colour in ((False, "tab:orange"), (True, "tab:blue")):
        m = lab == value
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, c=colour, label=f"{attr} ({m.sum()})" if value
                   else f"not {attr} ({m.sum()})")
    ax.set_title(f"VAE posterior means, {method.upper()} of {len(mu)} held-out images")
    ax.legend(markerscale=3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
