"""Data pipeline: bad-input corpus, folder loading, cache, held-out split, device batches."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from utils.data import Batches, combined_heldout_mask, heldout_indices, load_face_data, to_float, to_uint8
from utils.data_sources import BadImage, DataError, list_images, read_image_rgb


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data
    return data.astronaut()


def make_bad_corpus(folder, astronaut):
    """Every kind of awkward input the loader must handle; returns {filename: expected reason or None for usable}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = astronaut
    Image.fromarray(good).save(folder / "rgb.jpg")
    Image.fromarray(good).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)).save(folder / "gray16.png")
    Image.fromarray(good).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(good).convert("L").save(folder / "gray.png")
    Image.fromarray(good).save(folder / "pic.webp")
    Image.fromarray(good).save(folder / "pic.bmp")
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    Image.new("RGB", (4000, 3000), (90, 120, 200)).save(folder / "very_large.jpg", quality=50)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a jpeg")
    raw = (folder / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "dir_named.jpg").mkdir()
    return {"rgb.jpg": None, "cmyk.jpg": None, "gray16.png": None, "rgba.png": None, "gray.png": None,
            "pic.webp": None, "pic.bmp": None, "very_large.jpg": None,
            "one_pixel.png": "too small", "zero.jpg": "zero-byte file", "text.jpg": "not an image",
            "truncated.jpg": "truncated", "dir_named.jpg": "is a directory"}


def test_bad_input_corpus_converted_or_skipped(tmp_path, astronaut):
    expected = make_bad_corpus(tmp_path / "bad", astronaut)
    for name, reason in expected.items():
        path = tmp_path / "bad" / name
        if reason is None:
            img = read_image_rgb(path)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        else:
            with pytest.raises(BadImage, match=reason.split()[0]):
                read_image_rgb(path)
    # 16-bit grey is scaled by its range (not clipped): the darkest and brightest pixels map to 0 and 255
    g16 = read_image_rgb(tmp_path / "bad" / "gray16.png")
    assert g16.min() == 0 and g16.max() == 255
    # transparency composited on white, not black
    rgba = np.array(Image.fromarray(astronaut).convert("RGBA"))
    rgba[:8, :8, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "transparent.png")
    assert (read_image_rgb(tmp_path / "transparent.png")[:8, :8] == 255).all()


def test_folder_loading_counts_skips_and_caches(tmp_path, astronaut):
    make_bad_corpus(tmp_path / "bad", astronaut)
    fd = load_face_data(str(tmp_path / "bad"), 32, n_real=2, cache_dir=tmp_path / "cache")
    assert fd.train.dtype == torch.uint8 and fd.train.shape[1:] == (3, 32, 32)
    assert fd.info["num_train"] + fd.info["num_heldout"] == 8
    assert fd.info["num_heldout"] == 2
    assert sum(fd.info["skipped"].values()) == 5
    assert "5" not in fd.summary() or "skipped" in fd.summary()
    # the cache is reused (same object contents) and a change to the folder invalidates it
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1
    again = load_face_data(str(tmp_path / "bad"), 32, n_real=2, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train, fd.train) and again.info["split_sha256"] == fd.info["split_sha256"]
    Image.fromarray(astronaut[::2, ::2]).save(tmp_path / "bad" / "new.png")
    grown = load_face_data(str(tmp_path / "bad"), 32, n_real=2, cache_dir=tmp_path / "cache")
    assert grown.info["num_train"] + grown.info["num_heldout"] == 9
    manifest = json.loads(open(fd.info["manifest_path"]).read())
    assert len(manifest["heldout"]) == 2


def _solid(path, colour, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, **({"quality": 95} if fmt == "jpg" else {}))


def test_combined_excludes_raw_originals_of_heldout_faces(tmp_path):
    # raw/ as align_faces.py would map it to aligned/ (c/z.jpg and c/z.png clash → c/z.jpg.png, c/z.png.png);
    # each identity has its own colour in both folders, so leakage is also visible in the pixels.
    twins = {f"a/p{i}.jpg": f"a/p{i}.png" for i in range(6)}
    twins.update({"c/z.jpg": "c/z.jpg.png", "c/z.png": "c/z.png.png"})
    colours = {raw: (20 * k, 255 - 20 * k, 100) for k, raw in enumerate([*twins, "d/noface.jpg"])}
    for raw, colour in colours.items():
        _solid(tmp_path / "raw" / raw, colour, raw.rsplit(".", 1)[1])
    for raw, aligned in twins.items():
        _solid(tmp_path / "aligned" / aligned, colours[raw])
    fd = load_face_data(str(tmp_path / "aligned"), 8, n_real=4, cache_dir=tmp_path / "cache",
                        combined=str(tmp_path / "raw"))
    held = set(json.loads(open(fd.info["manifest_path"]).read())["heldout"])
    # the names were picked so that only one of a clashing pair is held out (a stem-only match fails that)
    assert held == {"a/p0.png", "a/p1.png", "a/p5.png", "c/z.png.png"}
    leaked = {raw for raw, aligned in twins.items() if aligned in held}
    assert leaked == {"a/p0.jpg", "a/p1.jpg", "a/p5.jpg", "c/z.png"}
    assert fd.info["combined_excluded"] == len(leaked) == 4
    assert "4 held-out original(s) excluded" in fd.summary()
    assert fd.info["num_train"] == (8 - 4) + (9 - 4) == len(fd.train)
    # no held-out colour among the training pixels
    train_colours = fd.train.float().mean((2, 3)).numpy()
    for raw in leaked:
        assert np.abs(train_colours - np.array(colours[raw])).max(1).min() > 5, raw
    kept = fd.train.shape[0]
    assert np.abs(train_colours - np.array(colours["c/z.jpg"])).max(1).min() <= 5  # the clash twin is kept
    # without --combined nothing is reported as excluded
    plain = load_face_data(str(tmp_path / "aligned"), 8, n_real=4, cache_dir=tmp_path / "cache")
    assert plain.info["combined_excluded"] is None and len(plain.train) == kept - 5


def test_combined_mask_handles_source_nested_in_combined(tmp_path):
    # align_faces.py skips an output folder inside its input; its PNGs are the aligned images themselves.
    for name in ("p0.jpg", "p1.jpg", "aligned/p0.png", "aligned/p1.png"):
        _solid(tmp_path / name, (0, 0, 0))
    names = ["aligned/p0.png", "aligned/p1.png", "p0.jpg", "p1.jpg"]
    mask = combined_heldout_mask(str(tmp_path), names, str(tmp_path / "aligned"), ["p1.png"])
    assert mask.tolist() == [False, True, False, True]


def test_missing_and_empty_folder_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(DataError, match="power of two"):
        load_face_data(str(tmp_path), 100)


def test_heldout_split_is_by_name_and_stable():
    names = [f"img_{i:05d}.jpg" for i in range(1000)]
    held = heldout_indices(names, n_real=100)
    assert len(held) == 100 and len(set(held.tolist())) == 100
    # adding files never moves an existing file across the split boundary the wrong way round:
    # a held-out name stays held-out unless displaced by a new name with a smaller hash
    more = names + [f"extra_{i}.jpg" for i in range(10)]
    held2 = {more[i] for i in heldout_indices(more, n_real=100)}
    assert len({names[i] for i in held} & held2) >= 90
    # capped at half of a small set
    assert len(heldout_indices(names[:10], n_real=5000)) == 5


def test_center_crop_keeps_content(tmp_path):
    img = np.zeros((100, 50, 3), np.uint8)
    img[25:75] = 255  # a white square in the middle of a tall image
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "b.png")
    fd = load_face_data(str(tmp_path), 16, n_real=1, cache_dir=tmp_path / "cache")
    assert fd.train.float().mean() > 250  # the crop is the white middle square


def test_batches_cover_epoch_shard_and_resume():
    imgs = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 2, 2).contiguous()
    b = Batches(imgs, 4, seed=3)
    assert b.steps_per_epoch == 5
    seen = torch.cat([b.next_uint8()[:, 0, 0, 0] for _ in range(5)])
    assert sorted(seen.tolist()) == list(range(20))  # one epoch = every image once
    # two processes see disjoint halves of the same global batch
    r0, r1 = Batches(imgs, 4, seed=3, rank=0, world=2), Batches(imgs, 4, seed=3, rank=1, world=2)
    one = Batches(imgs, 4, seed=3)
    for _ in range(7):
        g = one.next_uint8()[:, 0, 0, 0]
        assert torch.equal(torch.cat([r0.next_uint8(), r1.next_uint8()])[:, 0, 0, 0], g)
    # resume from a state dict continues the exact sequence
    state = one.state_dict()
    expect = [one.next_uint8() for _ in range(6)]
    again = Batches(imgs, 4, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(a, e) for a, e in zip([again.next_uint8() for _ in range(6)], expect))
    with pytest.raises(DataError):
        Batches(imgs, 3, world=2)
    with pytest.raises(DataError):
        again.load_state_dict({**state, "n": 21})


def test_uint8_float_round_trip():
    u = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    f = to_float(u)
    assert f.min() >= -1 and f.max() <= 1
    assert torch.equal(to_uint8(f), u)
