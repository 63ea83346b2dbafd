"""The metrics modules (utils.fid_images, metric_math, features, reference_stats, fid_evaluator) and
utils.feature_nets: exactness against clean-fid and PIL, metric definitions, loaders, cache.

The folder-vs-folder FID test runs with the seeded 'tiny' extractor always, and with clean-fid's real Inception
when FACEGEN_FID_WEIGHTS (or /tmp/inception-2015-12-05.pt) and FACEGEN_SHARED_DATA are set (~120 images).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import aux_metric_nets, dinov2_features, feature_nets
from utils.aux_metric_nets import InceptionClassifier, load_is_classifier, load_lpips
from utils.feature_nets import INCEPTION_DEFAULT_PATH, MetricsError, TinyFeatures, file_sha256, load_feature_extractor
from utils.features import block_seed, extract_features, my_blocks
from utils.fid_evaluator import FIDEvaluator
from utils.fid_images import clean_resize, load_image_folder, pil_clean_resize, resize_weights
from utils.metric_math import (feature_statistics, fid_from_features, frechet_distance, inception_score, kid,
                               lpips_diversity, precision_recall)
from utils.reference_stats import load_reference_features, reference_key, save_reference_features

RNG = np.random.default_rng(1234)


def smooth_images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Blurry colour blobs: a 'dataset' whose distribution differs clearly from uniform noise."""
    rng = np.random.default_rng(seed)
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
            for _ in range(n)]


def noise_images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_folder(folder: Path, images: list[np.ndarray], ext: str = "png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"{i:04d}.{ext}")
    return folder


def inception_weights() -> Path | None:
    env = os.environ.get("FACEGEN_FID_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    return INCEPTION_DEFAULT_PATH if INCEPTION_DEFAULT_PATH.is_file() else None


# ---------------------------------------------------------------------------------------------
# clean-fid preprocessing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(32, 32), (64, 64), (218, 178), (400, 512), (299, 300)])
def test_clean_resize_matches_pil_float_bicubic(h, w):
    imgs = noise_images(3, h, w, seed=h * w)
    ref = np.stack([pil_clean_resize(a) for a in imgs])                    # clean-fid's own per-image PIL path
    batch = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    ours = clean_resize(batch).permute(0, 2, 3, 1).numpy()
    assert ours.shape == ref.shape == (3, 299, 299, 3) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= 1e-4          # bit-exact on CPU; the tolerance only covers other BLAS
    assert np.array_equal(clean_resize(batch.float()).numpy(), clean_resize(batch).numpy())  # dtype-agnostic


def test_resize_weights_are_normalised_and_identity_at_same_size():
    for n_in, n_out in [(32, 299), (512, 299), (178, 299)]:
        assert np.allclose(resize_weights(n_in, n_out).sum(axis=1), 1.0)
    assert np.array_equal(resize_weights(299, 299), np.eye(299))


# ---------------------------------------------------------------------------------------------
# FID against clean-fid on folders
# ---------------------------------------------------------------------------------------------

def cleanfid_model(kind: str, weights: Path | None):
    """The network clean-fid itself would use (its own Inception wrapper when the file name allows)."""
    if kind == "tiny":
        return TinyFeatures()
    from cleanfid.inception_torchscript import InceptionV3W
    if weights.name == "inception-2015-12-05.pt":
        return InceptionV3W(str(weights.parent), download=False).eval()
    return feature_nets.InceptionFeatures(weights)


@pytest.fixture(scope="module", params=["tiny", "inception"])
def folder_case(request, tmp_path_factory):
    """(extractor, folder A, folder B of the same distribution, folder of noise)."""
    root = tmp_path_factory.mktemp(f"folders_{request.param}")
    if request.param == "tiny":
        a = write_folder(root / "a", smooth_images(24, 32, 32, seed=1))
        b = write_folder(root / "b", smooth_images(20, 32, 32, seed=2) + smooth_images(6, 40, 48, seed=3))
        n = write_folder(root / "n", noise_images(24, 32, 32, seed=4))
        return load_feature_extractor("tiny"), a, b, n, None
    weights, shared = inception_weights(), os.environ.get("FACEGEN_SHARED_DATA")
    if weights is None or not shared or not (Path(shared) / "celeba-6k").is_dir():
        pytest.skip("real-Inception variant needs FACEGEN_FID_WEIGHTS (or /tmp/inception-2015-12-05.pt) "
                    "and FACEGEN_SHARED_DATA")
    files = sorted((Path(shared) / "celeba-6k").glob("*.jpg"))[:48]
    a, b = root / "a", root / "b"
    for folder, chunk in ((a, files[:24]), (b, files[24:48])):
        folder.mkdir()
        for f in chunk:
            (folder / f.name).write_bytes(f.read_bytes())   # original JPEG bytes, decoded by both readers
    n = write_folder(root / "n", noise_images(24, 218, 178, seed=5))
    return load_feature_extractor("inception", weights=weights), a, b, n, weights


def test_folder_fid_equals_cleanfid_compute_fid(folder_case):
    from cleanfid import fid as cleanfid

    extractor, a, b, noise, weights = folder_case
    fa, fb, fn = (extract_features(load_image_folder(d)[0], extractor, batch_size=8) for d in (a, b, noise))
    ours = fid_from_features(fa, fb)
    ref = cleanfid.compute_fid(str(a), str(b), mode="clean", custom_feat_extractor=cleanfid_model(
        "tiny" if weights is None else "inception", weights), device=torch.device("cpu"), num_workers=0,
        batch_size=8, verbose=False, use_dataparallel=False)
    assert abs(ours - ref) <= 1e-3, (ours, ref)
    # The sanity checks use the eigh route: scipy's sqrtm takes ~18 s per 2048-d pair on 2 cores.
    def fd(f1, f2):
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2), method="eigh")

    same, noisy = ours, fd(fa, fn)
    assert abs(fd(fa, fa)) < 1e-3 * noisy                      # a set against itself
    assert noisy > 2.5 * same, (same, noisy)                    # faces vs faces ≪ faces vs noise


def test_frechet_distance_closed_form_and_cleanfid_formula():
    from cleanfid.fid import frechet_distance as cf_frechet

    d = 6
    mu1, mu2 = RNG.normal(size=d), RNG.normal(size=d)
    v1, v2 = RNG.uniform(0.5, 2, d), RNG.uniform(0.5, 2, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))   # diagonal Gaussians
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    a = RNG.normal(size=(d, d))
    s1, s2 = a @ a.T + np.eye(d), np.cov(RNG.normal(size=(50, d)), rowvar=False)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(cf_frechet(mu1, s1, mu2, s2), rel=1e-9)
    with pytest.raises(MetricsError):
        frechet_distance(mu1, s1, mu2[:3], s2[:3, :3])
    # The fast eigendecomposition route computes the same trace.
    f1 = RNG.normal(size=(300, 32))
    f2 = RNG.normal(size=(300, 32)) @ RNG.normal(size=(32, 32)) * 0.5 + 0.3
    stats = (f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert frechet_distance(*stats, method="eigh") == pytest.approx(frechet_distance(*stats), rel=1e-9)


def test_kid_matches_cleanfid_kernel_distance_with_same_subsets():
    from cleanfid.fid import kernel_distance

    f1 = RNG.normal(size=(120, 16)).astype(np.float32)
    f2 = (RNG.normal(size=(90, 16)) * 1.3 + 0.2).astype(np.float32)
    ours = kid(f1, f2, num_subsets=20, max_subset_size=50, seed=7)
    np.random.seed(7)
    ref = kernel_distance(f1, f2, num_subsets=20, max_subset_size=50)
    assert ours == pytest.approx(ref, rel=1e-4)
    same = RNG.normal(size=(300, 16)).astype(np.float32), RNG.normal(size=(300, 16)).astype(np.float32)
    shifted = (RNG.normal(size=(300, 16)) * 1.3 + 0.5).astype(np.float32)
    near = kid(*same, num_subsets=10, max_subset_size=200)
    far = kid(same[0], shifted, num_subsets=10, max_subset_size=200)
    assert abs(near) < 0.05 * far          # unbiased: ≈ 0 for one distribution, large for a shifted one


def brute_force_pr(real, fake, k):
    def radii(x):
        return np.sort(np.linalg.norm(x[:, None] - x[None], axis=-1), axis=1)[:, k]

    def coverage(manifold, probes):
        r = radii(manifold)
        return np.mean([(np.linalg.norm(manifold - p, axis=1) <= r).any() for p in probes])

    return coverage(real, fake), coverage(fake, real)


def test_precision_recall_definition():
    real = RNG.normal(size=(60, 8)).astype(np.float32)
    fake = (RNG.normal(size=(50, 8)) * 0.6 + 0.8).astype(np.float32)   # narrower and shifted: P ≠ R
    p, r = precision_recall(real, fake, k=3)
    bp, br = brute_force_pr(real.astype(np.float64), fake.astype(np.float64), 3)
    assert (p, r) == pytest.approx((bp, br), abs=1 / 50 + 1e-9)   # at most one borderline sample may flip
    assert p != pytest.approx(r)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_inception_score_known_values():
    k, n = 10, 200
    onehot = np.full((n, k), -50.0)
    onehot[np.arange(n), np.arange(n) % k] = 50.0       # confident and evenly spread over k classes
    mean, std = inception_score(onehot, splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std < 1e-6
    assert inception_score(np.zeros((n, k)))[0] == pytest.approx(1.0)   # uniform predictions
    logits = RNG.normal(size=(100, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.mean([np.exp(np.mean(np.sum(c * (np.log(c) - np.log(c.mean(0))), 1))) for c in np.split(p, 10)])
    assert inception_score(logits)[0] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Networks: tiny extractor, Inception weights resolution, IS classifier, LPIPS
# ---------------------------------------------------------------------------------------------

def test_tiny_extractor_is_deterministic_and_named():
    a, b = TinyFeatures(), TinyFeatures()
    assert a.sha256 == b.sha256 and a.describe()["name"] == "tiny-random-conv-v1"
    x = clean_resize(torch.from_numpy(np.stack(smooth_images(4, 32, 32, seed=9))).permute(0, 3, 1, 2))
    fa, fb = a(x), b(x)
    assert fa.shape == (4, 64) and torch.equal(fa, fb)
    assert not torch.allclose(fa[0], fa[1])


def _random_vgg_to_relu3_3(path: Path) -> dict:
    """A random torchvision-named VGG-16 conv state dict up to relu3_3 (the layout of the offline file)."""
    from safetensors.torch import save_file

    from models.perceptual import vgg16_features_to_relu3_3

    torch.manual_seed(3)
    state = {f"features.{k}": v for k, v in vgg16_features_to_relu3_3().state_dict().items()}
    save_file(state, str(path), metadata={"source": "random test weights"})
    return state


def test_vgg16_relu3_3_file_gives_pooled_relu3_3_features(tmp_path, monkeypatch):
    state = _random_vgg_to_relu3_3(tmp_path / "vgg.safetensors")
    net = aux_metric_nets.load_vgg16_features(tmp_path / "vgg.safetensors")
    assert (net.dim, net.layer, net.name) == (256, "relu3_3-gap", "vgg16-relu3_3-gap")
    info = net.features_info()
    assert info == {"features": "vgg16 relu3_3 global-avg-pool (256-d)", "features_name": "vgg16-relu3_3-gap",
                    "features_sha256": file_sha256(tmp_path / "vgg.safetensors")}
    assert net.describe()["weights_note"] == "random test weights"
    # independent forward: torchvision's vgg16().features[:16] with the same weights, ImageNet-normalised input
    from torchvision.models import vgg16

    with torch.device("meta"):
        ref = vgg16(weights=None).features[:16]
    ref.load_state_dict({k[len("features."):]: v for k, v in state.items()}, assign=True)
    x = torch.rand(2, 3, 32, 32) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expect = ref((x / 255 - mean) / std).mean(dim=(2, 3))
        assert torch.allclose(net(x), expect, rtol=1e-4, atol=1e-5)
    # $FACEGEN_VGG_WEIGHTS is the default; without any file it is a one-line error naming the flag
    monkeypatch.setenv("FACEGEN_VGG_WEIGHTS", str(tmp_path / "vgg.safetensors"))
    assert aux_metric_nets.load_vgg16_features().sha256 == net.sha256
    monkeypatch.delenv("FACEGEN_VGG_WEIGHTS")
    with pytest.raises(MetricsError, match="--pr-vgg-weights"):
        aux_metric_nets.load_vgg16_features()
    with pytest.raises(MetricsError, match="not found"):
        aux_metric_nets.load_vgg16_features(tmp_path / "missing.pth")


def test_vgg16_full_state_dict_gives_fc2_features():
    from torchvision.models import vgg16

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in vgg16(weights=None).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * (0.01 if k.startswith("classifier") else 0.05) for k, s in shapes.items()}
    net = aux_metric_nets.VGG16Features(state)
    assert (net.dim, net.layer, net.label) == (4096, "fc2", "vgg16 fc2 (4096-d)") and net.input_size == 224
    with torch.device("meta"):
        ref = vgg16(weights=None).eval()
    ref.load_state_dict(state, assign=True)
    seen = {}
    ref.classifier[4].register_forward_hook(lambda m, i, o: seen.update(fc2=o))   # ReLU after fc2
    x = torch.rand(1, 3, 32, 32) * 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref((x / 255 - mean) / std)
        assert torch.allclose(net(x), seen["fc2"], rtol=1e-3, atol=1e-3)


def test_metric_entries_name_their_features():
    real = [a for a in smooth_images(12, 32, 32, seed=1)]
    ev = FIDEvaluator.from_images(TinyFeatures(), real, device="cpu")
    fake = ev.features(smooth_images(12, 32, 32, seed=2))
    entries = ev.metrics(fake)
    for name in ("fid", "kid", "precision", "recall"):
        assert entries[name]["features"] == "tiny random conv (64-d; tests only)", name
        assert entries[name]["features_sha256"] == TinyFeatures().sha256
    few = ev.metrics(fake[:2], want=("pr",))     # not computed, yet still says which features it would use
    assert few["precision"]["value"] is None and few["precision"]["features_name"] == "tiny-random-conv-v1"


def test_inception_missing_offline_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGEN_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(feature_nets, "INCEPTION_DEFAULT_PATH", tmp_path / "inception-2015-12-05.pt")

    def offline(url, dest, timeout=30.0):
        raise OSError("network unreachable")

    monkeypatch.setattr(feature_nets, "download", offline)
    with pytest.raises(MetricsError) as e:
        load_feature_extractor("inception")
    msg = str(e.value)
    assert "\n" not in msg and feature_nets.INCEPTION_URL in msg and str(tmp_path) in msg and "--fid-weights" in msg
    with pytest.raises(MetricsError, match="does not exist"):
        load_feature_extractor("inception", weights=tmp_path / "nope.pt")


def test_is_classifier_needs_a_head(tmp_path):
    from torchvision.models import alexnet, inception_v3

    clf, reason = load_is_classifier(None)
    assert clf is None and "--is-weights" in reason
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    path = tmp_path / "inception_v3.pth"
    torch.save(net.state_dict(), path)
    clf = InceptionClassifier(path)
    for (name, a), b in zip(clf.net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name
    assert clf.net.fc.out_features == 1000 and not clf.net.transform_input   # fed x/127.5 − 1 directly
    assert clf.describe()["sha256"] == file_sha256(path)
    torch.save(alexnet().state_dict(), tmp_path / "alex.pth")
    with pytest.raises(MetricsError, match="not a torchvision inception_v3"):
        InceptionClassifier(tmp_path / "alex.pth")


@pytest.fixture(scope="module")
def lpips_random():
    return load_lpips("random")


def test_lpips_diversity_equals_mean_pairwise_lpips(lpips_random):
    net, info = lpips_random
    assert "random" in info["backbone"]
    arrays = smooth_images(5, 32, 32, seed=11) + noise_images(1, 32, 32, 12)
    imgs = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    out = lpips_diversity(imgs, net)
    x = imgs.float() / 127.5 - 1
    with torch.no_grad():
        pairs = [float(net(x[i:i + 1], x[j:j + 1])) for i in range(6) for j in range(i + 1, 6)]
    assert out["num_pairs"] == 15 and out["value"] == pytest.approx(np.mean(pairs), rel=1e-5)
    assert lpips_diversity(imgs[:1].repeat(4, 1, 1, 1), net)["value"] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(MetricsError, match="32 px"):
        lpips_diversity(imgs[:, :, :16, :16], net)


def test_lpips_backbone_file_and_offline_default(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    torch.manual_seed(3)
    state = alexnet().state_dict()
    path = tmp_path / "alexnet-owt.pth"
    torch.save(state, path)
    net, info = load_lpips(str(path))
    assert torch.equal(net.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(net.net.slice5.get_submodule("10").weight, state["features.10.weight"])
    assert info["backbone_sha256"] == file_sha256(path)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(MetricsError, match="AlexNet"):
        load_lpips(str(tmp_path / "bad.pth"))

    monkeypatch.setattr(aux_metric_nets, "_torch_hub_file", lambda url: tmp_path / "hub" / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(aux_metric_nets, "download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    net, info = load_lpips(None)
    assert net is None and "--lpips-weights" in info["not_computed"]


# ---------------------------------------------------------------------------------------------
# Seeding, cache, FIDEvaluator
# ---------------------------------------------------------------------------------------------

def test_blocks_partition_and_seeds():
    for world in (1, 2, 3):
        owned = sorted(b for r in range(world) for b in my_blocks(50, 8, r, world))
        assert owned == my_blocks(50, 8)
    assert my_blocks(50, 8)[-1] == (48, 50)
    seeds = {block_seed(s, b) for s in range(3) for b in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2 ** 63 for s in seeds)


def test_reference_cache_roundtrip(tmp_path):
    tiny = TinyFeatures()
    key = reference_key(source="x", split_sha256="s", pixels_sha256="p", resolution=32, n=5, extractor=tiny)
    feats = RNG.normal(size=(5, 64)).astype(np.float32)
    path = save_reference_features(key, feats, tmp_path)
    got, path2 = load_reference_features(key, tmp_path)
    assert path == path2 and np.array_equal(got, feats)
    assert load_reference_features({**key, "n": 6}, tmp_path)[0] is None
    path.write_bytes(b"garbage")
    assert load_reference_features(key, tmp_path)[0] is None


def test_fid_evaluator_from_face_data_caches_and_compute_matches_fid(tmp_path, monkeypatch):
    from utils.data import FaceData, to_uint8

    heldout = torch.from_numpy(np.stack(smooth_images(16, 32, 32, seed=21))).permute(0, 3, 1, 2).contiguous()
    data = FaceData(heldout[:4], heldout, {"source": "test", "split_sha256": "abc"})
    ev = FIDEvaluator.from_face_data(data, "tiny", cache_dir=tmp_path, batch_size=8)
    assert not ev.info["cache_hit"] and Path(ev.info["cache_path"]).is_file()
    again = FIDEvaluator.from_face_data(data, "tiny", cache_dir=tmp_path, batch_size=8)
    assert again.info["cache_hit"] and np.array_equal(again.real_features, ev.real_features)
    assert not FIDEvaluator.from_face_data(data, "tiny", cache_dir=tmp_path, n_real=12).info["cache_hit"]

    torch.manual_seed(0)
    gen = torch.nn.Sequential(torch.nn.Linear(8, 3 * 32 * 32), torch.nn.Tanh())

    def sample_fn(num, g):
        return gen(torch.randn(num, 8, generator=g)).view(num, 3, 32, 32)

    fid = ev.compute(sample_fn, 12, batch_size=8, seed=5)
    manual = torch.cat([to_uint8(sample_fn(stop - start, torch.Generator().manual_seed(block_seed(5, start // 8))))
                        for start, stop in my_blocks(12, 8)])
    assert fid == pytest.approx(ev.fid(manual), rel=1e-12)
    assert ev.compute(sample_fn, 12, batch_size=8, seed=6) != fid
    assert ev.fid(heldout) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Density and coverage (Naeem et al. 2020)
# ---------------------------------------------------------------------------------------------

def direct_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's definitions, written out as O(n²) loops in float64."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    radii = []
    for i in range(len(real)):
        d = sorted(np.linalg.norm(real - real[i], axis=1))
        radii.append(d[k])                      # d[0] = 0 is the point itself
    density = sum(np.linalg.norm(y - x) < r for y in fake for x, r in zip(real, radii)) / (k * len(fake))
    coverage = np.mean([min(np.linalg.norm(fake - x, axis=1)) < r for x, r in zip(real, radii)])
    return float(density), float(coverage)


def test_density_coverage_closed_cases():
    from utils.metric_math import density_coverage

    x = RNG.normal(size=(60, 16)).astype(np.float32)
    density, coverage = density_coverage(x, x.copy(), k=5)
    # Identical sets: each real ball holds exactly its k nearest points, so density = 1 up to the float rounding
    # of distances that tie with a radius (as in the authors' sklearn code); coverage = 1 exactly.
    assert density == pytest.approx(1.0, abs=0.02) and coverage == 1.0
    density, coverage = density_coverage(x, x + 1000.0, k=5)
    assert density == 0.0 and coverage == 0.0                          # disjoint sets
    with pytest.raises(MetricsError, match="k=5"):
        density_coverage(x[:5], x, k=5)


def test_density_coverage_match_direct_computation():
    from utils.metric_math import density_coverage

    real = RNG.normal(size=(70, 8)).astype(np.float32)
    fake = (RNG.normal(size=(50, 8)) * 1.3 + 0.4).astype(np.float32)
    for k in (3, 5):
        got = density_coverage(real, fake, k=k, batch_size=16)        # batching must not change anything
        want = direct_density_coverage(real, fake, k)
        assert got == pytest.approx(want, abs=1e-12), k
    assert 0 < want[0] and 0 < want[1] < 1


def test_fd_entries_carry_sample_counts_and_bias():
    from utils.metric_math import fd_sample_counts

    assert fd_sample_counts(1000, 1000, 2048)["biased"] and not fd_sample_counts(5000, 3000, 2048)["biased"]
    assert fd_sample_counts(2048, 5000, 2048)["biased"]               # n = d: covariance rank n − 1 < d
    real = smooth_images(20, 32, 32, seed=1)
    ev = FIDEvaluator.from_images(TinyFeatures(), real, device="cpu")
    fake = ev.features(smooth_images(12, 32, 32, seed=2))
    m = ev.metrics(fake, want=("fid", "kid", "pr", "dc"))
    assert set(m) == {"fid", "kid", "precision", "recall", "density", "coverage"}
    for name, e in m.items():
        assert (e["num_samples"], e["num_real"], e["features_name"]) == (12, 20, "tiny-random-conv-v1"), name
    assert m["fid"]["biased"] and m["fid"]["feature_dim"] == 64 and "biased" in m["fid"]["note"]
    assert m["density"]["k"] == 5 and m["coverage"]["value"] is not None


# ---------------------------------------------------------------------------------------------
# DINOv2 features (FD-DINOv2) on a tiny random ViT of timm's DINOv2 class
# ---------------------------------------------------------------------------------------------

def test_dinov2_tiny_vit_preprocessing_features_and_cache(tmp_path):
    import timm

    from utils.dinov2_features import DINOV2_INPUT, DINOv2Features, dinov2_pos_embed

    net = load_feature_extractor("dinov2", weights="tiny")
    assert isinstance(net, DINOv2Features) and isinstance(net.vit, timm.models.vision_transformer.VisionTransformer)
    assert net.input_size == 224 and net.dim == 32 and net.name == "tiny-random-dinov2-vit"
    assert tuple(net.vit.patch_embed.grid_size) == (16, 16) and net.vit.pos_embed.shape == (1, 1 + 16 * 16, 32)
    images = smooth_images(6, 32, 32, seed=3)
    feats = extract_features(images, net, batch_size=4)
    assert feats.shape == (6, 32) and feats.dtype == np.float32 and feats.std(axis=0).mean() > 1e-3
    # dgm-eval's preprocessing by hand: bicubic resize to 224, /255, ImageNet mean/std; the final-norm CLS token.
    x = clean_resize(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), DINOV2_INPUT) / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = net.vit.forward_features(x)[:, 0]
    np.testing.assert_allclose(feats, cls.numpy(), rtol=1e-4, atol=1e-5)
    # Position embeddings: DINOv2's run-time interpolation (bicubic, scale (16 + 0.1) / 37, no antialias).
    raw = tiny_vit_pos_embed()
    patch = torch.nn.functional.interpolate(raw[:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2),
                                            scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic")
    expected = torch.cat([raw[:, :1], patch.permute(0, 2, 3, 1).reshape(1, 256, 32)], dim=1)
    torch.testing.assert_close(net.vit.pos_embed.detach(), expected)
    torch.testing.assert_close(dinov2_pos_embed(raw, 37), raw)
    # Statistics and the reference cache work on these features as on any others.
    key = reference_key(source="x", split_sha256="s", pixels_sha256="p", resolution=32, n=6, extractor=net)
    a = FIDEvaluator.from_images(net, images, device="cpu", cache_key=key, cache_dir=tmp_path)
    b = FIDEvaluator.from_images(net, images, device="cpu", cache_key=key, cache_dir=tmp_path)
    assert not a.info["cache_hit"] and b.info["cache_hit"] and np.array_equal(a.real_features, feats)
    assert a.fid_from_features(feats) == pytest.approx(0.0, abs=1e-6)
    assert a.fid_from_features(extract_features(noise_images(6, 32, 32, seed=9), net)) > 1e-3


def tiny_vit_pos_embed() -> torch.Tensor:
    from utils.dinov2_features import tiny_dinov2_vit

    return tiny_dinov2_vit().pos_embed.detach().clone()


def test_dinov2_weight_file_loads_through_timm(tmp_path):
    """A weight file goes through timm's pretrained loader (pretrained_cfg_overlay=file) exactly as the real
    ViT-L/14 file does; a tiny file of the same class stands in for it."""
    from safetensors.torch import save_file

    from utils.dinov2_features import DINOV2_TINY_ARGS, load_dinov2_features, tiny_dinov2_vit

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_dinov2_vit(seed=4).state_dict().items()}, str(path))
    net = load_dinov2_features(path, tiny_args=DINOV2_TINY_ARGS)
    assert net.path == str(path.resolve()) and net.sha256 == file_sha256(path) and net.dim == 32
    images = smooth_images(4, 32, 32, seed=5)
    ref = dinov2_features.DINOv2Features(tiny_dinov2_vit(seed=4), name="t", label="t")
    np.testing.assert_allclose(extract_features(images, net), extract_features(images, ref), rtol=1e-5, atol=1e-6)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(MetricsError, match="not a DINOv2"):
        load_dinov2_features(tmp_path / "bad.safetensors", tiny_args=DINOV2_TINY_ARGS)


def test_dinov2_missing_weights_offline_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv(dinov2_features.DINOV2_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")           # never touch the network in the suite
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MetricsError) as e:
        load_feature_extractor("dinov2")
    msg = str(e.value)
    assert "\n" not in msg and dinov2_features.DINOV2_HF_URL in msg and "--dinov2-weights" in msg, msg
    with pytest.raises(MetricsError, match="does not exist"):
        load_feature_extractor("dinov2", weights=tmp_path / "nope.safetensors")
    monkeypatch.setenv(dinov2_features.DINOV2_WEIGHTS_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(MetricsError, match="FACEGEN_DINOV2_WEIGHTS"):
        load_feature_extractor("dinov2")


# ---------------------------------------------------------------------------------------------
# Shareable reference statistics (clean-fid custom format + sidecar)
# ---------------------------------------------------------------------------------------------

def test_reference_statistics_file_roundtrip_and_checks(tmp_path):
    import json

    from utils.reference_stats import load_reference_statistics, save_reference_statistics

    tiny = TinyFeatures()
    feats = RNG.normal(size=(30, 64)).astype(np.float32)
    meta = {"source": "celeba", "split": "heldout", "split_sha256": "ab" * 32, "crop": "center", "resolution": 64,
            "num_files": 30}
    paths = save_reference_statistics(tmp_path / "faces_clean_custom_na.npz", tiny, feats, meta)
    assert [p.name for p in paths] == ["faces_clean_custom_na.npz", "faces_clean_custom_na_kid.npz",
                                       "faces_clean_custom_na.json"]
    with np.load(paths[0]) as z:                       # what cleanfid.fid reads for dataset_split="custom"
        assert set(z.files) == {"mu", "sigma"} and z["sigma"].shape == (64, 64)
        np.testing.assert_array_equal(z["mu"], feats.mean(0))
    with np.load(paths[1]) as z:
        assert set(z.files) == {"feats"}
    side = json.loads(paths[2].read_text())
    assert side["split_sha256"] == "ab" * 32 and side["crop"] == "center" and side["n"] == 30
    assert side["feature_extractor"]["name"] == tiny.name and side["mode"] == "clean"
    mu, sigma, got, info = load_reference_statistics(paths[0], tiny)
    assert np.array_equal(got, feats) and info["split_sha256"] == "ab" * 32 and info["n"] == 30
    ev = FIDEvaluator.from_statistics(tiny, mu, sigma, features=got, device="cpu", info=info)
    fake = RNG.normal(size=(25, 64)).astype(np.float32)
    assert ev.fid_from_features(fake) == pytest.approx(fid_from_features(fake, feats), rel=1e-9)
    # Without the features only FID can be computed; the rest say why.
    paths[1].unlink()
    mu, sigma, none, info = load_reference_statistics(paths[0], tiny)
    only = FIDEvaluator.from_statistics(tiny, mu, sigma, device="cpu", info=info).metrics(fake, want=("fid", "kid",
                                                                                                       "pr", "dc"))
    assert only["fid"]["value"] == pytest.approx(fid_from_features(fake, feats), rel=1e-9)
    assert only["fid"]["num_real"] == 30
    assert all(only[m]["value"] is None and "statistics only" in only[m]["not_computed"]
               for m in ("kid", "precision", "recall", "density", "coverage"))
    # Another network, or a file without a sidecar for a non-Inception network: refused in one line.
    other = load_feature_extractor("dinov2", weights="tiny")
    with pytest.raises(MetricsError, match="was made with"):
        load_reference_statistics(paths[0], other)
    paths[2].unlink()
    with pytest.raises(MetricsError, match="no sidecar"):
        load_reference_statistics(paths[0], tiny)
    with pytest.raises(MetricsError, match="not found"):
        load_reference_statistics(tmp_path / "missing.npz", tiny)
