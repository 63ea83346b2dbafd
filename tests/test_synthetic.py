"""The built-in procedural face dataset: determinism, shape, variety, face structure, attributes."""
import dataclasses

import numpy as np
import pytest

from utils.synthetic import face_attributes, main, render_faces
from utils.synthetic_drawing import render_face_params
from utils.synthetic_params import ATTRIBUTE_NAMES, sample_face_params


@pytest.fixture(scope="module")
def faces32():
    return render_faces(range(240), 32, seed=0).astype(np.float64)


def test_same_index_same_pixels_regardless_of_batch_and_order():
    a = render_faces([3, 7, 11], 32, seed=5)
    b = render_faces([11, 3], 32, seed=5)
    c = render_faces(np.array([7]), 32, seed=5)
    np.testing.assert_array_equal(a[0], b[1])
    np.testing.assert_array_equal(a[2], b[0])
    np.testing.assert_array_equal(a[1], c[0])
    np.testing.assert_array_equal(a, render_faces([3, 7, 11], 32, seed=5))


def test_seed_changes_the_dataset():
    diff = np.abs(render_faces([0, 1], 32, seed=0).astype(int) - render_faces([0, 1], 32, seed=1)).mean()
    assert diff > 10


@pytest.mark.parametrize("res", [16, 32, 64, 128])
def test_shape_dtype_and_range(res):
    imgs = render_faces([0, 1, 2], res)
    assert imgs.shape == (3, res, res, 3) and imgs.dtype == np.uint8
    assert imgs.min() < 60 and imgs.max() > 190  # dark pupils and bright eye whites/highlights survive


def test_same_face_at_every_resolution():
    """Parameters do not depend on resolution: downsampled 64 px matches 32 px closely."""
    big = render_faces([4], 64)[0].astype(np.float64)
    small = render_faces([4], 32)[0].astype(np.float64)
    pooled = big.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    other = render_faces([5], 32)[0].astype(np.float64)
    assert np.abs(pooled - small).mean() < 6
    assert np.abs(other - small).mean() > 4 * np.abs(pooled - small).mean()


def test_empty_request():
    assert render_faces([], 32).shape == (0, 32, 32, 3)


def test_variety(faces32):
    x = faces32[:40].reshape(40, -1)
    pair = np.abs(x[:, None] - x[None]).mean(-1)
    off_diag = pair[~np.eye(40, dtype=bool)]
    assert off_diag.min() > 5 and off_diag.mean() > 25
    corners = faces32[:, :3, :3].mean(axis=(1, 2))          # background colour per image
    centre = faces32[:, 13:17, 14:18].mean(axis=(1, 2))     # cheeks / nose: skin colour per image
    assert corners.std(0).min() > 25
    assert centre.mean(1).std() > 25                         # light to dark skin
    assert np.ptp(centre.mean(1)) > 120


def test_face_structure_in_mean_image(faces32):
    mean = faces32.mean(0)
    # Skin sits in the middle: the centre is warmer (red > blue) than the background corners.
    centre = mean[12:20, 12:20]
    corner = np.concatenate([mean[:4, :4], mean[:4, -4:]]).reshape(-1, 3)
    assert (centre[..., 0] - centre[..., 2]).mean() > (corner[:, 0] - corner[:, 2]).mean() + 15
    # Pose, hair parting and light vary symmetrically, so the mean face is far more
    # left/right symmetric than single faces are.
    assert np.abs(mean - mean[:, ::-1]).mean() < 0.3 * np.abs(faces32 - faces32[:, :, ::-1]).mean()
    # Hair (mostly darker than skin) caps the face: the band above the forehead is darker than the face centre.
    luma = mean.mean(-1)
    assert luma[8:10, 12:20].mean() < luma[13:17, 12:20].mean() - 20


def _box(x, y, half_w, half_h, res, pad=2):
    x, y, half_w, half_h = x * res, y * res, half_w * res + pad, half_h * res + pad
    return slice(max(0, int(y - half_h)), int(y + half_h) + 1), slice(max(0, int(x - half_w)), int(x + half_w) + 1)


def _mouth_box(p, res):
    return _box(p.cx, p.cy + 0.55 * p.b, 0.75 * p.mouth_w * p.a, 0.3 * p.b, res)


def _eye_band(p, res):
    return _box(p.cx, p.cy + p.eye_y * p.b, 0.9 * p.a, 0.25 * p.b, res)


def _flip_attribute(index, field, res=64):
    """The same face (upright, frontal) rendered with one attribute off and on."""
    p = dataclasses.replace(sample_face_params(0, index), roll=0.0, yaw=0.0)
    off = render_face_params(dataclasses.replace(p, **{field: False}), res).astype(np.float64)
    on = render_face_params(dataclasses.replace(p, **{field: True}), res).astype(np.float64)
    return p, np.abs(on - off).sum(-1)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_smiling_changes_only_mouth_and_eyes(index):
    p, diff = _flip_attribute(index, "smiling")
    mask = np.zeros_like(diff, bool)
    mask[_mouth_box(p, 64)] = True
    mouth_share = diff[mask].sum() / diff.sum()
    mask[_eye_band(p, 64)] = True  # a smile also narrows the eyes
    assert diff.sum() > 500
    assert mouth_share > 0.5
    assert diff[mask].sum() > 0.97 * diff.sum()


@pytest.mark.parametrize("index", [0, 5])
def test_glasses_change_only_the_eye_band(index):
    p, diff = _flip_attribute(index, "glasses")
    rows, cols = _eye_band(p, 64)
    assert diff.sum() > 500
    assert diff[rows, cols].sum() > 0.97 * diff.sum()


def test_attributes_match_rendering_in_population(faces32):
    attrs = face_attributes(range(240), seed=0)
    assert set(attrs) == set(ATTRIBUTE_NAMES)
    for name, v in attrs.items():
        assert v.shape == (240,) and v.dtype == np.uint8 and 0 < v.mean() < 1, name
    # Faces the attributes call open-mouthed have more contrast in the mouth region (dark inside,
    # lips, teeth), across skin tones and poses: a two-sample t statistic well above noise.
    luma = faces32.mean(-1)
    contrast = luma[:, 18:24, 11:21].reshape(240, -1).std(1)
    is_open = attrs["Mouth_Slightly_Open"].astype(bool)
    a, b = contrast[is_open], contrast[~is_open]
    t = (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert t > 4
    # Attributes come from the same parameters the renderer used.
    for i in (3, 9):
        p = sample_face_params(0, i)
        assert attrs["Smiling"][i] == p.smiling and attrs["Eyeglasses"][i] == p.glasses


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(ValueError, match="non-negative"):
        render_faces([-1], 32)
    with pytest.raises(ValueError, match="resolution"):
        render_faces([0], 4)


def test_preview_cli_writes_png(tmp_path):
    out = tmp_path / "grid.png"
    main(["--out", str(out), "--resolution", "16", "--grid", "3"])
    from PIL import Image
    with Image.open(out) as im:
        assert im.size == (3 * 18 + 2, 3 * 18 + 2)
