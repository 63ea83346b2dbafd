"""Feature extraction for the metrics: clean-resize + feature network over image batches, split across
Accelerate processes and gathered back in sample order, and sampling a generator straight into features.

Every sample's block, seed and position depend on (seed, block size) only, so a run on any number of
processes gives the numbers of a single process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from utils.feature_nets import FeatureExtractor, MetricsError
from utils.fid_images import clean_resize
from utils.progress import track


def _batches(images, batch_size: int):
    """Yield uint8 N×3×H×W tensors; a list of arrays is grouped into runs of equal size."""
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    run: list[np.ndarray] = []
    for arr in images:
        if run and (arr.shape != run[0].shape or len(run) == batch_size):
            yield torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2)
            run = []
        run.append(arr)
    if run:
        yield torch.from_numpy(np.stack(run)).permute(0, 3, 1, 2)


@torch.no_grad()
def extract(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None,
            classifier: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(features float32 N×dim, classifier logits N×1000 or None) of uint8 images, clean-resized on ``device``."""
    if device is None:
        device = next(extractor.parameters()).device
    feats, logits = [], []
    for batch in _batches(images, batch_size):
        x = clean_resize(batch.to(device), extractor.input_size)
        feats.append(extractor(x).float().cpu())
        if classifier is not None:
            logits.append(classifier(x).float().cpu())
    if not feats:
        raise MetricsError("no images to extract features from")
    return torch.cat(feats).numpy(), (torch.cat(logits).numpy() if classifier is not None else None)


def extract_features(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None) -> np.ndarray:
    """float32 N×dim features of uint8 images (tensor N×3×H×W or list of H×W×3 arrays)."""
    return extract(images, extractor, batch_size=batch_size, device=device)[0]


def block_seed(seed: int, block: int) -> int:
    """Seed of sample block ``block``: a function of (seed, block index) only, never of the process layout."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] & ((1 << 63) - 1))


def my_blocks(n: int, block_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """Blocks [start, stop) of n items owned by process ``rank`` (round robin, so shares differ by ≤ 1 block)."""
    starts = range(0, n, block_size)
    return [(s, min(s + block_size, n)) for b, s in enumerate(starts) if b % world == rank]


def gather_ordered(accelerator, rows: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """All processes' ``rows`` concatenated and sorted by their global ``indices`` (available on every rank).

    Shares may differ in length, so they are padded to the longest and the padding dropped after the gather.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return rows[torch.argsort(indices.to(rows.device))]
    dev = accelerator.device
    rows, indices = rows.to(dev), indices.to(dev, torch.long)
    longest = int(accelerator.gather(torch.tensor([len(rows)], device=dev)).max())
    pad = longest - len(rows)
    rows_p = torch.cat([rows, rows.new_zeros((pad, *rows.shape[1:]))])
    idx_p = torch.cat([indices, indices.new_full((pad,), -1)])
    all_rows, all_idx = accelerator.gather(rows_p), accelerator.gather(idx_p)
    keep = all_idx >= 0
    all_rows, all_idx = all_rows[keep], all_idx[keep]
    return all_rows[torch.argsort(all_idx)]


def _progress(blocks: list[tuple[int, int]], desc: str | None, rank: int):
    """The blocks, under a progress bar counting images when ``desc`` is given (rank 0, terminal only)."""
    if not desc or rank != 0:
        return blocks
    return track(blocks, total=sum(stop - start for start, stop in blocks), desc=desc, unit="img",
                 size=lambda block: block[1] - block[0])


class BlockFeatures:
    """Features (and classifier logits) of sample blocks, extracted block by block and gathered in global order.

    ``distributed_extract`` and ``generate_and_extract`` collect into one; passed to them as the
    ``on_block(start, uint8 block)`` callback, a second one lets precision/recall use other features than FID on
    the very same samples, without a second pass.
    """

    def __init__(self, extractor: FeatureExtractor, *, batch_size: int = 64, device=None, classifier=None):
        self.extractor, self.batch_size, self.device, self.classifier = extractor, batch_size, device, classifier
        self.feats: list[torch.Tensor] = []
        self.logits: list[torch.Tensor | None] = []
        self.idx: list[torch.Tensor] = []

    def __call__(self, start: int, block) -> None:
        self.add(start, start + len(block), block)

    def add(self, start: int, stop: int, block) -> None:
        """Extract ``block``, the samples [start, stop) in global order."""
        f, lg = extract(block, self.extractor, batch_size=self.batch_size, device=self.device,
                        classifier=self.classifier)
        self.feats.append(torch.from_numpy(f))
        self.logits.append(torch.from_numpy(lg) if lg is not None else None)
        self.idx.append(torch.arange(start, stop))

    def gather(self, accelerator=None) -> np.ndarray:
        """All processes' features in sample order (every process must call this)."""
        return self.gather_with_logits(accelerator)[0]

    def gather_with_logits(self, accelerator=None) -> tuple[np.ndarray, np.ndarray | None]:
        """(features, classifier logits or None) of all processes in sample order (every process must call this)."""
        all_idx = torch.cat(self.idx) if self.idx else torch.zeros(0, dtype=torch.long)
        feats = torch.cat(self.feats) if self.feats else torch.zeros(0, self.extractor.dim)
        f = gather_ordered(accelerator, feats, all_idx)
        lg = None
        if self.classifier is not None:
            logits = torch.cat(self.logits) if self.logits else torch.zeros(0, 1000)
            lg = gather_ordered(accelerator, logits, all_idx).cpu().numpy()
        return f.cpu().numpy(), lg


def distributed_extract(images, extractor: FeatureExtractor, *, batch_size: int = 64, device=None,
                        classifier=None, accelerator=None,
                        transform: Callable[[Any], torch.Tensor] | None = None,
                        on_block: Callable[[int, Any], None] | None = None,
                        desc: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``extract`` with batches split across processes and gathered in order: same numbers as one process.

    ``transform(block) -> uint8 images`` is applied to each block first (e.g. an image-to-image translation, so it
    is split across processes too); ``on_block(start, block)`` sees the block that is measured (to save PNGs).
    ``desc``: show a progress bar with this label (main process, terminal only; utils.progress).
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    out = BlockFeatures(extractor, batch_size=batch_size, device=device, classifier=classifier)
    for start, stop in _progress(my_blocks(len(images), batch_size, rank, world), desc, rank):
        block = images[start:stop] if transform is None else transform(images[start:stop])
        if on_block is not None:
            on_block(start, block)
        out.add(start, stop, block)
    return out.gather_with_logits(accelerator)


@dataclass
class Generated:
    """Everything gathered from sampling: features (+ IS logits), the first images, and timing."""
    features: np.ndarray
    logits: np.ndarray | None
    head_images: torch.Tensor          # uint8, the first `keep_images` samples in global order
    sampling_seconds: float            # slowest process's time inside sample_fn (synchronised)
    num_processes: int = 1
    block_size: int = 0


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate_and_extract(sample_fn: Callable[[int, torch.Generator], torch.Tensor], n: int,
                         extractor: FeatureExtractor, *, block_size: int = 64, seed: int = 0, device=None,
                         classifier=None, accelerator=None, keep_images: int = 0,
                         on_block: Callable[[int, torch.Tensor], None] | None = None,
                         desc: str | None = None) -> Generated:
    """Sample n images in blocks, extract features per block, gather in global order.

    ``sample_fn(num, generator) -> float N×3×R×R in [-1, 1]``.  Block b holds samples [b·B, (b+1)·B) and is drawn
    with a CPU generator seeded by ``block_seed(seed, b)``: the images depend on (seed, block size) only, not on
    the number of processes or the device.  ``on_block(start, uint8_images)`` lets the caller save PNGs on the
    process that drew them; ``keep_images`` first samples are gathered as uint8 (for LPIPS diversity).
    ``desc``: show a progress bar with this label (main process, terminal only; utils.progress).
    """
    from utils.data import to_uint8

    device = torch.device(device or next(extractor.parameters()).device)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    out = BlockFeatures(extractor, batch_size=block_size, device=device, classifier=classifier)
    head = []
    sampling = 0.0
    for start, stop in _progress(my_blocks(n, block_size, rank, world), desc, rank):
        # A CPU generator: every family draws its noise on the generator's device and moves it, so the same
        # seed gives the same images on CPU and GPU.
        g = torch.Generator().manual_seed(block_seed(seed, start // block_size))
        _sync(device)
        t0 = time.perf_counter()
        imgs = sample_fn(stop - start, g)
        _sync(device)
        sampling += time.perf_counter() - t0
        if imgs.shape[0] != stop - start or imgs.ndim != 4 or imgs.shape[1] != 3:
            raise MetricsError(f"sample_fn returned shape {tuple(imgs.shape)}, expected {stop - start}×3×R×R")
        u8 = to_uint8(imgs)
        if on_block is not None:
            on_block(start, u8)
        out.add(start, stop, u8)
        if start < keep_images:
            head.append((torch.arange(start, min(stop, keep_images)), u8[:keep_images - start].cpu()))
    features, all_logits = out.gather_with_logits(accelerator)
    head_images = torch.zeros(0, dtype=torch.uint8)
    if keep_images:
        shape = tuple(head[0][1].shape[1:]) if head else (0, 0, 0)
        if accelerator is not None and accelerator.num_processes > 1:
            # Ranks without head images still send a (0, *shape) tensor, and gather needs one common shape.
            shapes = accelerator.gather(torch.tensor(shape, device=accelerator.device)).view(-1, 3)
            shape = tuple(int(s) for s in shapes.max(dim=0).values)
        h_imgs = torch.cat([h[1] for h in head]) if head else torch.zeros((0, *shape), dtype=torch.uint8)
        h_idx = torch.cat([h[0] for h in head]) if head else torch.zeros(0, dtype=torch.long)
        head_images = gather_ordered(accelerator, h_imgs, h_idx).cpu()
    if accelerator is not None and accelerator.num_processes > 1:
        sampling = float(accelerator.gather(torch.tensor([sampling], device=accelerator.device)).max())
    return Generated(features, all_logits, head_images, sampling, world, block_size)
