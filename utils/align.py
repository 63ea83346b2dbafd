"""MTCNN face detection and 5-point similarity alignment (library part of align_faces.py).

Detection is MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks", IEEE SPL 2016) with facenet-pytorch's pretrained P/R/O-nets
and its box helpers.  ``detect_batch`` re-drives the three stages itself instead of calling
``MTCNN.detect`` for three reasons, all measured in bench/align_throughput.py:

* the R/O-net input crops are cut and area-resized for all candidate windows of a batch at
  once from a summed-area table, instead of one ``interpolate`` call per window (identical
  values: adaptive average pooling *is* a box mean);
* on CPU the nets run channels-last: PyTorch's NCHW max-pool kernel (ceil_mode, 3×3/2) takes
  about a third of MTCNN's CPU time, and channels-last makes the R/O-net forward passes
  2.4-3.3× faster with the same maths;
* candidate windows that fall outside the image are dropped together with their image index
  (facenet-pytorch drops the crop but keeps the box, which misaligns a batch).

Everything else (pyramid, thresholds, NMS order, box regression) follows facenet-pytorch, so
landmarks match ``MTCNN.detect`` to float rounding.

Alignment maps the five landmarks (eyes, nose, mouth corners) onto fixed reference points by a
least-squares similarity transform (Umeyama 1991, via scikit-image) and warps bicubically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy, bbreg, generateBoundingBox, imresample, rerec
from torchvision.ops import batched_nms

REFERENCE_SIZE = 128
# Left eye, right eye, nose tip, left and right mouth corner, as (x, y) in a 128×128 crop.
# "plan": the project plan's points.  Their proportions are not a real face's (eye distance 52 px
# but mouth 44 px below the eyes; MTCNN's mean face has eyes ~44 px apart), so even a perfect
# similarity fit leaves ~5 px mean residual.  "celeba-mean": the generalized-Procrustes mean of
# MTCNN landmarks on the last 500 photos of celeba-6k, placed by least squares onto the plan's
# points (same centre, scale, roll) and mirror-symmetrised; see bench/align_quality.py --fit-template.
TEMPLATES_128 = {
    "plan": np.array([[38.0, 51.0], [90.0, 51.0], [64.0, 71.0], [45.0, 95.0], [83.0, 95.0]]),
    "celeba-mean": np.array([[41.9, 48.2], [86.1, 48.2], [64.0, 76.1], [44.8, 95.2], [83.2, 95.2]]),
}
REF_LANDMARKS_128 = TEMPLATES_128["plan"]
WEIGHT_FILES = {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"}
# Upper bound on image pixels per MTCNN call: keeps the pyramid, the summed-area table and the
# P-net activations of one batch to a few hundred MB.
MAX_BATCH_PIXELS = 32 * 512 * 512
NET_CHUNK = 512  # R/O-net windows per forward pass (facenet-pytorch uses the same)


class AlignError(ValueError):
    """A problem the user must fix (missing weights, degenerate landmarks); one-line message."""


class Detection(NamedTuple):
    box: np.ndarray        # (4,) x0, y0, x1, y1 in source pixels
    prob: float            # O-net face probability
    landmarks: np.ndarray  # (5, 2) x, y: left eye, right eye, nose, left mouth, right mouth


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is an AlignError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AlignError("--device cuda requested but torch sees no CUDA GPU")
    return torch.device(name)


def load_mtcnn(device: str | torch.device = "cpu", weights_dir: str | os.PathLike | None = None, *,
               min_face_size: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
               factor: float = 0.709):
    """facenet-pytorch MTCNN(keep_all=False) in eval mode on ``device``.

    The default weights ship inside the facenet-pytorch package (no download).  ``weights_dir``
    points at a folder holding pnet.pt / rnet.pt / onet.pt state dicts (the files facenet-pytorch
    ships in ``facenet_pytorch/data``), loaded with ``weights_only=True``.
    """
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    mtcnn = MTCNN(keep_all=False, min_face_size=min_face_size, thresholds=list(thresholds), factor=factor)
    if weights_dir is not None:
        _load_weights_dir(mtcnn, Path(weights_dir))
    mtcnn.eval().to(device)
    mtcnn.device = device
    if device.type == "cpu":
        # Channels-last avoids PyTorch's slow NCHW max-pool on CPU (same maths; see module docstring).
        for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet):
            net.to(memory_format=torch.channels_last)
    return mtcnn


def _load_weights_dir(mtcnn, folder: Path) -> None:
    if not folder.is_dir():
        raise AlignError(f"--weights-dir {folder} is not a folder")
    for attr, fname in WEIGHT_FILES.items():
        path = folder / fname
        if not path.is_file():
            raise AlignError(f"MTCNN weights {path} not found (need {', '.join(WEIGHT_FILES.values())})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            getattr(mtcnn, attr).load_state_dict(state)
        except Exception as e:  # any unpickling / key / shape problem is a bad weights file
            raise AlignError(f"cannot load MTCNN weights {path}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------
# Batched detection
# ---------------------------------------------------------------------------------------------

def detect_batch(mtcnn, images: list[np.ndarray], *, batch_size: int = 32,
                 max_side: int = 1024) -> list[Detection | None]:
    """Detect the largest face in each uint8 H×W×3 RGB image; None where MTCNN finds none.

    Images are grouped by size so that each MTCNN pass sees a stack of equal-size images
    (mixed sizes still batch).  Images whose longer side exceeds ``max_side`` are detected on an
    antialiased downscaled copy (faces too small to survive that are useless for alignment
    anyway); returned coordinates are always in the original image's pixels.
    """
    det_inputs, scales = zip(*(_detection_input(img, max_side) for img in images)) if images else ((), ())
    results: list[Detection | None] = [None] * len(images)
    for idx in _size_batches(det_inputs, batch_size):
        stack = np.stack([det_inputs[i] for i in idx])
        for i, (boxes, points) in zip(idx, run_mtcnn(mtcnn, stack)):
            if len(boxes):
                results[i] = _largest_face(boxes, points, scales[i])
    return results


def _detection_input(img: np.ndarray, max_side: int) -> tuple[np.ndarray, tuple[float, float]]:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 H×W×3 RGB, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img, (1.0, 1.0)
    from PIL import Image
    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))  # PIL resize antialiases
    return small, (w / nw, h / nh)


def _size_batches(images, batch_size: int) -> list[list[int]]:
    """Indices grouped by image size, split into batches of ≤ batch_size images and ≤ MAX_BATCH_PIXELS."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.shape[:2], []).append(i)
    batches = []
    for (h, w), idx in groups.items():
        per = max(1, min(batch_size, MAX_BATCH_PIXELS // (h * w)))
        batches += [idx[k:k + per] for k in range(0, len(idx), per)]
    return batches


def _largest_face(boxes: np.ndarray, points: np.ndarray, scale: tuple[float, float]) -> Detection:
    # Same choice as facenet-pytorch's default MTCNN(select_largest=True).
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    k = int(np.argmax(area))
    sx, sy = scale
    box = boxes[k, :4].astype(np.float64) * [sx, sy, sx, sy]
    return Detection(box=box, prob=float(boxes[k, 4]), landmarks=points[k].astype(np.float64) * [sx, sy])


@torch.no_grad()
def run_mtcnn(mtcnn, stack: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """All three MTCNN stages on N equal-size images (N×H×W×3 uint8).

    Returns per image ``(boxes (k, 5) = x0, y0, x1, y1, prob; points (k, 5, 2))``.
    """
    dev = mtcnn.device
    pixels = torch.as_tensor(stack, device=dev)
    imgs = pixels.permute(0, 3, 1, 2).float()
    n, _, h, w = imgs.shape
    sat = _summed_area_table(pixels)
    thr = mtcnn.thresholds

    # Stage 1: P-net proposals over the image pyramid.
    boxes, inds = _pnet_proposals(mtcnn, imgs)
    # Stage 2: R-net rejects and refines proposals on 24×24 crops.
    if len(boxes):
        boxes, inds, crops = _window_crops(sat, boxes, inds, 24, w, h)
        reg, prob = _run_chunked(mtcnn.rnet, crops)
        keep = prob[:, 1] > thr[1]
        boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], dim=1)
        inds, reg = inds[keep], reg[keep]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
        boxes = rerec(bbreg(boxes[pick], reg[pick]))  # rerec: make windows square
        inds = inds[pick]
    # Stage 3: O-net gives final boxes, probabilities and the five landmarks on 48×48 crops.
    points = torch.zeros(0, 5, 2, device=dev)
    if len(boxes):
        boxes, inds, crops = _window_crops(sat, boxes, inds, 48, w, h)
        reg, lms, prob = _run_chunked(mtcnn.onet, crops)
        keep = prob[:, 1] > thr[2]
        boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], dim=1)
        inds, reg, lms = inds[keep], reg[keep], lms[keep]
        # O-net landmarks are relative to the (inclusive) window; facenet-pytorch's "- 1" kept.
        bw, bh = boxes[:, 2:3] - boxes[:, 0:1] + 1, boxes[:, 3:4] - boxes[:, 1:2] + 1
        points = torch.stack([bw * lms[:, :5] + boxes[:, 0:1] - 1, bh * lms[:, 5:] + boxes[:, 1:2] - 1], dim=2)
        boxes = bbreg(boxes, reg)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
        boxes, inds, points = boxes[pick], inds[pick], points[pick]

    boxes, points, inds = boxes.cpu().numpy(), points.cpu().numpy(), inds.cpu().numpy()
    return [(boxes[inds == i], points[inds == i]) for i in range(n)]


def _pyramid_scales(h: int, w: int, min_face_size: int, factor: float) -> list[float]:
    # P-net sees 12×12 windows; scale so the smallest wanted face becomes 12 px, then shrink by `factor`.
    scale = 12.0 / min_face_size
    side = min(h, w) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _pnet_proposals(mtcnn, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = imgs.shape[2:]
    found_boxes, found_inds = [], []
    for scale in _pyramid_scales(h, w, mtcnn.min_face_size, mtcnn.factor):
        x = _normalize(imresample(imgs, (int(h * scale + 1), int(w * scale + 1))))
        reg, prob = mtcnn.pnet(x)
        b, ind = generateBoundingBox(reg, prob[:, 1], scale, mtcnn.thresholds[0])
        pick = batched_nms(b[:, :4], b[:, 4], ind, 0.5)
        found_boxes.append(b[pick])
        found_inds.append(ind[pick])
    if not found_boxes:  # image smaller than the smallest face
        return imgs.new_zeros(0, 5), torch.zeros(0, dtype=torch.long, device=imgs.device)
    boxes, inds = torch.cat(found_boxes), torch.cat(found_inds)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    refined = torch.stack([boxes[:, 0] + boxes[:, 5] * bw, boxes[:, 1] + boxes[:, 6] * bh,
                           boxes[:, 2] + boxes[:, 7] * bw, boxes[:, 3] + boxes[:, 8] * bh, boxes[:, 4]], dim=1)
    return rerec(refined), inds


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _run_chunked(net, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    outs = [net(x[k:k + NET_CHUNK]) for k in range(0, len(x), NET_CHUNK)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def _summed_area_table(stack: torch.Tensor) -> torch.Tensor:
    """N×(H+1)×(W+1)×3 integer cumulative sums of uint8 N×H×W×3 images, zero first row/column.

    Integers keep every box sum exact; int32 suffices up to 8.4 M pixels per image.
    """
    n, h, w, _ = stack.shape
    dtype = torch.int32 if 255 * h * w < 2**31 else torch.int64
    return F.pad(stack.to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype), (0, 0, 1, 0, 1, 0))


def _window_crops(sat: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, size: int, w: int, h: int):
    """Cut every window and area-resize it to size×size in one vectorised step.

    Windows are clipped to the image as facenet-pytorch's ``pad`` does (rows y0..y1 exclusive);
    windows with nothing inside the image are dropped along with their image index.  Output cell
    i covers input rows [floor(i*L/size), ceil((i+1)*L/size)), exactly adaptive_avg_pool2d's
    cells, so the result equals ``interpolate(crop, size, mode='area')``: each cell is a box
    sum read from four summed-area-table corners.  Crops come out channels-last.
    """
    b = boxes[:, :4].trunc().long()
    x0, y0 = b[:, 0].clamp(min=1) - 1, b[:, 1].clamp(min=1) - 1
    x1, y1 = b[:, 2].clamp(max=w), b[:, 3].clamp(max=h)
    valid = (x1 > x0) & (y1 > y0)
    boxes, inds, x0, y0, x1, y1 = boxes[valid], inds[valid], x0[valid], y0[valid], x1[valid], y1[valid]
    cell = torch.arange(size, device=sat.device)

    def cell_bounds(start, stop):
        length = (stop - start)[:, None]
        return start[:, None] + cell * length // size, start[:, None] + ((cell + 1) * length + size - 1) // size

    r0, r1 = cell_bounds(y0, y1)
    c0, c1 = cell_bounds(x0, x1)
    n, hp, wp, ch = sat.shape
    table = sat.view(n * hp * wp, ch)
    base = (inds * hp * wp)[:, None, None]

    def corner(r, c):  # (B, size, size, 3) table entries at rows r × cols c of each window's image
        return table[base + r[:, :, None] * wp + c[:, None, :]]

    total = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)
    area = (r1 - r0)[:, :, None, None] * (c1 - c0)[:, None, :, None]
    crops = _normalize(total.float() / area.float()).permute(0, 3, 1, 2)
    return boxes, inds, crops


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------

def reference_landmarks(out_size: int = REFERENCE_SIZE, template: str = "plan") -> np.ndarray:
    """The five reference points (x, y) for an out_size×out_size crop (the 128-px template scaled)."""
    if out_size < 8:
        raise AlignError(f"output size {out_size} is too small to align a face (need ≥ 8)")
    if template not in TEMPLATES_128:
        raise AlignError(f"unknown landmark template {template!r}; choose from {', '.join(TEMPLATES_128)}")
    return TEMPLATES_128[template] * (out_size / REFERENCE_SIZE)


def alignment_transform(landmarks: np.ndarray, out_size: int = REFERENCE_SIZE, template: str = "plan"):
    """Least-squares similarity transform (source x, y → output x, y) taking landmarks to the reference."""
    from skimage.transform import SimilarityTransform

    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    dst = reference_landmarks(out_size, template)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image ≥ 0.26; estimate() is deprecated there
        tform = SimilarityTransform.from_estimate(src, dst)
        if not tform:  # a FailedEstimation object is falsy and carries the reason
            raise AlignError(f"cannot align: {tform}")
    else:
        tform = SimilarityTransform()
        if not tform.estimate(src, dst):
            raise AlignError("cannot align: similarity estimation failed")
    if not np.all(np.isfinite(tform.params)) or tform.scale <= 1e-6:
        raise AlignError("cannot align: degenerate landmarks")
    return tform


def warp_face(img: np.ndarray, matrix: np.ndarray, out_size: int = REFERENCE_SIZE) -> np.ndarray:
    """Warp ``img`` by the 3×3 source→output ``matrix`` into a uint8 out_size² crop (bicubic, black outside).

    When the face is shrunk (scale < 1) the source is Gaussian-prefiltered first, with
    skimage.transform.rescale's sigma = (1/scale - 1)/2, so large photos do not alias; only the
    region that lands in the crop is filtered.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.transform import AffineTransform, warp

    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    sigma = max(0.0, (1.0 / scale - 1.0) / 2.0)
    # Source region that maps into the crop, plus room for the cubic kernel and the blur.
    corners = np.array([[0, 0, 1], [out_size, 0, 1], [0, out_size, 1], [out_size, out_size, 1]], dtype=np.float64)
    src = (np.linalg.inv(matrix) @ corners.T).T[:, :2]
    margin = 3 + int(np.ceil(4 * sigma))
    h, w = img.shape[:2]
    x0, y0 = (int(max(0, np.floor(v) - margin)) for v in src.min(0))
    x1, y1 = (int(min(lim, np.ceil(v) + margin + 1)) for v, lim in zip(src.max(0), (w, h)))
    if x1 <= x0 or y1 <= y0:  # the crop lies entirely outside the image
        return np.zeros((out_size, out_size, 3), dtype=np.uint8)
    region = img[y0:y1, x0:x1].astype(np.float64)
    if sigma > 0.25:
        region = gaussian_filter(region, sigma=(sigma, sigma, 0), mode="nearest")
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    to_output = AffineTransform(matrix=matrix @ shift)
    out = warp(region, to_output.inverse, output_shape=(out_size, out_size), order=3,
               mode="constant", cval=0.0, preserve_range=True)
    # Bicubic overshoots; clip before the cast so bright pixels do not wrap around to black.
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_face(img: np.ndarray, landmarks: np.ndarray, out_size: int = REFERENCE_SIZE,
               template: str = "plan") -> np.ndarray:
    """Similarity-align ``img`` (uint8 H×W×3) so ``landmarks`` land on reference_landmarks(out_size, template)."""
    return warp_face(img, alignment_transform(landmarks, out_size, template).params, out_size)


def outside_fraction(matrix: np.ndarray, image_shape: tuple[int, ...], out_size: int) -> float:
    """Fraction of crop pixels whose source lies outside the image (they are black fill)."""
    yy, xx = np.mgrid[0:out_size, 0:out_size]
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)]).astype(np.float64)
    sx, sy, _ = np.linalg.inv(np.asarray(matrix, dtype=np.float64)) @ pts
    h, w = image_shape[:2]
    inside = (sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5)
    return float(1.0 - inside.mean())


def landmark_error(landmarks: np.ndarray, out_size: int = REFERENCE_SIZE, template: str = "plan") -> float:
    """Mean Euclidean distance (px) between five landmarks and the reference points."""
    diff = np.asarray(landmarks, dtype=np.float64).reshape(5, 2) - reference_landmarks(out_size, template)
    return float(np.linalg.norm(diff, axis=1).mean())
