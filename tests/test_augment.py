"""Batched per-sample augmentation: agreement with torchvision per image, ranges, independence, seeding."""
import numpy as np
import pytest
import torch
from skimage import data, transform
from torchvision.transforms.v2 import functional as TF

from utils.augment import (PRESET_CONFIGS, PRESETS, AugmentError, apply_params, build_augment, describe_presets,
                           sample_params, warp_batch)

BILINEAR = TF.InterpolationMode.BILINEAR


@pytest.fixture(scope="module")
def astronaut01():
    """skimage's astronaut photo at 64 x 64, float in [0, 1], 1 x 3 x 64 x 64."""
    img = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def batch01(astronaut01):
    """Eight different real-image crops/shifts at 32 x 32 in [0, 1]."""
    views = [astronaut01[..., r:r + 32, c:c + 32] for r in (0, 16, 32) for c in (0, 16, 32)][:8]
    return torch.cat(views).contiguous()


def to_pm1(x01):
    return x01 * 2 - 1


def to_01(x):
    return (x + 1) / 2


def test_presets_build_and_describe():
    assert set(PRESETS) == set(PRESET_CONFIGS)
    lines = describe_presets().splitlines()
    assert [ln.split(":")[0] for ln in lines] == list(PRESETS)
    for name in PRESETS:
        assert build_augment(name).preset == name
    with pytest.raises(AugmentError, match="unknown augmentation preset 'mirror'"):
        build_augment("mirror")


def test_none_is_identity(batch01):
    x = to_pm1(batch01)
    assert build_augment("none")(x, torch.Generator().manual_seed(0)) is x


def test_flip_matches_torchvision_per_sample_and_is_exact(batch01):
    x = to_pm1(batch01)
    aug = build_augment("flip")
    params = aug.sample_params(x, torch.Generator().manual_seed(1))
    out = aug.apply(x, params)
    assert 0 < params["flip"].sum() < len(x)
    for i in range(len(x)):
        ref = TF.horizontal_flip(x[i]) if params["flip"][i] else x[i]
        assert torch.equal(out[i], ref)


def test_colour_ops_match_torchvision_per_sample(batch01):
    x = to_pm1(batch01)
    aug = build_augment("flip-rot-jitter")
    params = aug.sample_params(x, torch.Generator().manual_seed(2))
    # Use wider factors than the preset so clamping at 0 and 1 is exercised too.
    params = {k: v for k, v in params.items() if k != "angle"}
    params["brightness"] = torch.linspace(0.5, 1.6, len(x))
    params["contrast"] = torch.linspace(1.7, 0.4, len(x))
    params["saturation"] = torch.linspace(0.0, 2.0, len(x))
    out01 = to_01(aug.apply(x, params))
    for i in range(len(x)):
        ref = batch01[i]
        if params["flip"][i]:
            ref = TF.horizontal_flip(ref)
        ref = TF.adjust_brightness(ref, params["brightness"][i].item())
        ref = TF.adjust_contrast(ref, params["contrast"][i].item())
        ref = TF.adjust_saturation(ref, params["saturation"][i].item())
        torch.testing.assert_close(out01[i], ref, atol=2e-6, rtol=0)


def test_autocontrast_matches_torchvision_including_flat_channels(batch01):
    x01 = batch01 * 0.6 + 0.2
    x01[3, 1] = 0.5  # a flat channel: torchvision leaves it unchanged
    apply = torch.tensor([True, False] * 4)
    out = apply_params(x01.clone(), {"autocontrast": apply})
    for i in range(len(x01)):
        ref = TF.autocontrast(x01[i]) if apply[i] else x01[i]
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)
    assert out[0].amin() == 0 and out[0].amax() == 1


@pytest.mark.parametrize("angle", [5.0, -5.0, 2.7])
def test_rotation_matches_torchvision_in_the_centre(astronaut01, angle):
    ours = warp_batch(astronaut01, angle=torch.tensor([angle]))
    ref = TF.rotate(astronaut01[0], angle, interpolation=BILINEAR)
    # Corners differ on purpose (reflection here, black fill in torchvision); the centre must agree.
    torch.testing.assert_close(ours[0, :, 10:54, 10:54], ref[:, 10:54, 10:54], atol=1e-5, rtol=0)
    # Reflection padding: a flat image stays flat (torchvision's default fill paints black corners).
    flat = torch.full((1, 3, 16, 16), 0.6)
    torch.testing.assert_close(warp_batch(flat, angle=torch.tensor([angle])), flat, atol=1e-5, rtol=0)
    assert (ref[:, 0, 0] == 0).all()


def test_rotation_non_square_and_zero_is_identity(batch01):
    x = torch.nn.functional.interpolate(batch01[:2], size=(24, 32), mode="bilinear", align_corners=False)
    ours = warp_batch(x, angle=torch.tensor([4.0, 0.0]))
    ref = TF.rotate(x[0], 4.0, interpolation=BILINEAR)
    torch.testing.assert_close(ours[0, :, 5:19, 6:26], ref[:, 5:19, 6:26], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], x[1], atol=1e-5, rtol=0)


def test_resized_crop_matches_torchvision_away_from_box_edges(astronaut01):
    box = (5, 7, 54, 51)  # top, left, height, width
    ours = warp_batch(astronaut01, crop=torch.tensor([box], dtype=torch.float32))
    ref = TF.resized_crop(astronaut01[0], *box, size=[64, 64], interpolation=BILINEAR, antialias=True)
    torch.testing.assert_close(ours[0, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5, rtol=0)
    # The full box is the identity.
    full = warp_batch(astronaut01, crop=torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    torch.testing.assert_close(full, astronaut01, atol=1e-5, rtol=0)


def test_sampled_params_follow_the_preset_ranges():
    g = torch.Generator().manual_seed(3)
    p = sample_params(build_augment("flip-rot-jitter").config, 4000, 32, 32, generator=g)
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.04
    assert p["angle"].abs().max() <= 5 and p["angle"].min() < -4.5 and p["angle"].max() > 4.5
    for name, d in (("brightness", 0.1), ("contrast", 0.1), ("saturation", 0.05)):
        assert ((p[name] >= 1 - d) & (p[name] <= 1 + d)).all() and p[name].std() > d / 2.5
    p = sample_params(build_augment("deluxe").config, 4000, 32, 32, generator=g)
    top, left, h, w = p["crop"].unbind(1)
    area = h * w / (32 * 32)
    assert area.min() >= 0.79 and area.max() <= 1.0 + 1e-6 and area.mean() < 0.92
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32 + 1e-4).all() and (left + w <= 32 + 1e-4).all()
    ratio = w / h
    assert ratio.min() > 0.85 and ratio.max() < 1.15
    assert abs(p["autocontrast"].float().mean().item() - 0.5) < 0.04


@pytest.mark.parametrize("preset", PRESETS)
def test_output_range_shape_dtype_on_real_photo(astronaut01, preset):
    x = to_pm1(astronaut01).repeat(6, 1, 1, 1)
    x[5] = torch.where(x[5] > 0, 1.0, -1.0)  # saturated extremes
    out = build_augment(preset)(x, torch.Generator().manual_seed(4))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= -1 and out.max() <= 1
    if preset != "none":
        assert (out - x).abs().mean() > 0.01


@pytest.mark.parametrize("preset", ["flip", "flip-rot-jitter", "deluxe"])
def test_per_sample_independence(astronaut01, preset):
    x = to_pm1(astronaut01).repeat(16, 1, 1, 1)
    out = build_augment(preset)(x, torch.Generator().manual_seed(5))
    flipped = (out - x.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-6
    same = (out - x).abs().amax(dim=(1, 2, 3)) < 1e-6
    if preset == "flip":
        assert flipped.any() and same.any() and (flipped | same).all()
    else:
        distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
        assert len(distinct) == len(out)


def test_generator_seeding_is_reproducible(batch01):
    x = to_pm1(batch01)
    aug = build_augment("flip-rot-jitter")
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_half_precision_keeps_dtype(batch01):
    x = to_pm1(batch01).to(torch.bfloat16)
    out = build_augment("deluxe")(x, torch.Generator().manual_seed(9))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(batch01):
    x = to_pm1(batch01)
    aug = build_augment("flip-rot-jitter")
    params = aug.sample_params(x, torch.Generator().manual_seed(10))
    cpu = aug.apply(x, params)
    gpu = aug.apply(x.cuda(), params)  # CPU params, CUDA images
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(11)
    out = build_augment("deluxe")(x.cuda(), g)
    assert out.is_cuda and out.min() >= -1 and out.max() <= 1


def test_bad_input_is_a_one_line_error():
    aug = build_augment("flip-rot-jitter")
    with pytest.raises(AugmentError, match="float N x C x H x W"):
        aug(torch.zeros(3, 8, 8))
    with pytest.raises(AugmentError, match="float N x C x H x W"):
        aug(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(AugmentError, match="3 channels"):
        aug(torch.zeros(1, 1, 8, 8))
