"""MTCNN detection + similarity alignment (utils/align.py) and the align_faces.py CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from utils.align import (REF_LANDMARKS_128, AlignError, align_face, alignment_transform, detect_batch,
                         landmark_error, load_mtcnn, reference_landmarks, warp_face)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mtcnn():
    return load_mtcnn("cpu")


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()  # 512×512 RGB portrait shipped with scikit-image


@pytest.fixture(scope="module")
def astronaut_detection(mtcnn, astronaut):
    return detect_batch(mtcnn, [astronaut])[0]


def _save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Geometry (no detector)
# ---------------------------------------------------------------------------------------------

def test_reference_landmarks_scale_with_size():
    np.testing.assert_allclose(reference_landmarks(128), REF_LANDMARKS_128)
    np.testing.assert_allclose(reference_landmarks(64),
                               [[19, 25.5], [45, 25.5], [32, 35.5], [22.5, 47.5], [41.5, 47.5]])
    np.testing.assert_allclose(reference_landmarks(256), 2 * REF_LANDMARKS_128)
    with pytest.raises(AlignError):
        reference_landmarks(64, template="nope")


def test_alignment_undoes_a_known_similarity_and_warp_moves_pixels_there():
    # Put five bright dots where a rotated, scaled, shifted face would have its landmarks.
    angle, scale, shift = np.deg2rad(25), 1.8, np.array([70.0, 40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = REF_LANDMARKS_128 @ rot.T + shift
    img = np.zeros((360, 330, 3), np.uint8)
    for x, y in np.rint(src).astype(int):
        img[y - 3:y + 4, x - 3:x + 4] = 255
    tform = alignment_transform(np.rint(src), 128)
    np.testing.assert_allclose(tform(np.rint(src)), REF_LANDMARKS_128, atol=0.6)
    assert tform.scale == pytest.approx(1 / scale, rel=0.01)

    out = align_face(img, np.rint(src), 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    for x, y in REF_LANDMARKS_128.astype(int):  # each dot landed on its reference point
        assert out[y - 1:y + 2, x - 1:x + 2].mean() > 200
    assert out.mean() < 30  # and nowhere much else


def test_degenerate_landmarks_raise_align_error():
    with pytest.raises(AlignError):
        alignment_transform(np.zeros((5, 2)), 128)


def test_bicubic_overshoot_is_clipped_not_wrapped():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    matrix = np.array([[1.0, 0, 0.3], [0, 1.0, 0], [0, 0, 1]])  # sub-pixel shift: cubic rings at the edge
    out = warp_face(img, matrix, 64)
    assert out[:, 36:60].min() == 255  # overshoot above 255 must not wrap to dark values
    assert out[:, 4:28].max() == 0


# ---------------------------------------------------------------------------------------------
# Detector on a real photo
# ---------------------------------------------------------------------------------------------

def test_detects_one_face_on_astronaut_and_matches_facenet_pytorch(mtcnn, astronaut, astronaut_detection):
    from facenet_pytorch import MTCNN

    det = astronaut_detection
    assert det is not None and det.prob > 0.99
    x0, y0, x1, y1 = det.box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200  # the astronaut's face, upper middle
    lm = det.landmarks
    assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # left eye, nose, right eye from left to right
    assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes above nose above mouth
    # Same landmarks as facenet-pytorch's own MTCNN.detect (our batched crops are exact).
    _, _, ref_points = MTCNN(keep_all=False).detect(astronaut, landmarks=True)
    np.testing.assert_allclose(lm, np.asarray(ref_points[0], dtype=np.float64), atol=1e-2)


def test_aligned_astronaut_redetects_on_reference_points(mtcnn, astronaut, astronaut_detection):
    aligned = align_face(astronaut, astronaut_detection.landmarks, 128)
    again = detect_batch(mtcnn, [aligned])[0]
    assert again is not None
    assert landmark_error(again.landmarks, 128) <= 6.0
    assert landmark_error(astronaut_detection.landmarks, 128) > 50  # before alignment: far away


def test_detect_batch_groups_mixed_sizes_like_single_calls(mtcnn, astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((160, 160), Image.BILINEAR))
    crop = np.ascontiguousarray(small[10:150, 20:140])
    blank = np.full((140, 120, 3), 128, np.uint8)
    images = [small, crop, blank, small[:, ::-1].copy()]
    batched = detect_batch(mtcnn, images)
    singles = [detect_batch(mtcnn, [im])[0] for im in images]
    assert batched[2] is None and singles[2] is None
    for b, s in zip(batched, singles):
        if s is not None:
            np.testing.assert_allclose(b.landmarks, s.landmarks, atol=1e-3)
    # The crop's face sits 20 px left and 10 px up of the full image's: coordinates are per image.
    np.testing.assert_allclose(batched[1].landmarks, batched[0].landmarks - [20, 10], atol=1.0)


def test_large_images_are_detected_downscaled_in_original_coordinates(mtcnn, astronaut, astronaut_detection):
    det = detect_batch(mtcnn, [astronaut], max_side=256)[0]
    assert det is not None
    np.testing.assert_allclose(det.landmarks, astronaut_detection.landmarks, atol=4.0)


def test_weights_dir_loads_given_state_dicts(tmp_path):
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    torch.manual_seed(0)
    nets = {"pnet": PNet(pretrained=False), "rnet": RNet(pretrained=False), "onet": ONet(pretrained=False)}
    for name, net in nets.items():
        torch.save(net.state_dict(), tmp_path / f"{name}.pt")
    m = load_mtcnn("cpu", weights_dir=tmp_path)
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            torch.testing.assert_close(getattr(m, name).state_dict()[key], value)

    (tmp_path / "onet.pt").write_text("not a checkpoint")
    with pytest.raises(AlignError, match="cannot load"):
        load_mtcnn("cpu", weights_dir=tmp_path)
    (tmp_path / "rnet.pt").unlink()
    with pytest.raises(AlignError, match="not found"):
        load_mtcnn("cpu", weights_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "align_faces.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_with_bad_files_and_resume(tmp_path, astronaut, capsys):
    import align_faces

    src, out = tmp_path / "in", tmp_path / "out"
    half = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BILINEAR))  # cheaper to detect
    _save(half, src / "people" / "astronaut.jpg")
    _save(np.full((200, 160, 3), 90, np.uint8), src / "blank.png")  # readable, no face
    (src / "zero.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("this is text, not a JPEG")

    first = _cli("--input", str(src), "--output", str(out), "--device", "cpu", "--preview")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    summary = first.stdout.strip().splitlines()[-1]
    assert summary.startswith("aligned 1, failed 3 (no_face 1, unreadable 2), skipped 0"), summary

    face = np.asarray(Image.open(out / "people" / "astronaut.png"))
    assert face.shape == (128, 128, 3) and face.std() > 20
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["source"] for r in manifest] == [str(Path("people") / "astronaut.jpg")]
    assert manifest[0]["prob"] > 0.99 and np.asarray(manifest[0]["matrix"]).shape == (3, 3)
    assert np.asarray(manifest[0]["landmarks"]).shape == (5, 2)
    failures = {r["source"]: r for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert {k: v["reason"] for k, v in failures.items()} == {
        "blank.png": "no_face", "zero.jpg": "unreadable", "notes.jpg": "unreadable"}
    assert all(v["detail"] for v in failures.values())
    assert (tmp_path / "out_preview.png").exists()

    # The re-run (in-process: saves a second interpreter start) finds everything done.
    assert align_faces.main(["--input", str(src), "--output", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("aligned 0, failed 0, skipped 4 already done")


def test_cli_resumes_only_missing_work_and_refuses_changed_settings(tmp_path, astronaut, capsys):
    import align_faces

    small = np.asarray(Image.fromarray(astronaut).resize((200, 200), Image.BILINEAR))
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        _save(small, src / name)
    assert align_faces.main(["--input", str(src), "--output", str(out), "--device", "cpu", "--limit", "2",
                             "--size", "64"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("aligned 2, failed 0, skipped 0")
    (out / "b.png").unlink()  # a lost output is redone even though the manifest lists it
    assert align_faces.main(["--input", str(src), "--output", str(out), "--device", "cpu", "--size", "64"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("aligned 2, failed 0, skipped 1")
    assert Image.open(out / "c.png").size == (64, 64)

    assert align_faces.main(["--input", str(src), "--output", str(out), "--device", "cpu", "--size", "128"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different settings (size" in err


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_missing_or_empty_input_is_a_one_line_error(tmp_path, capsys, make):
    import align_faces

    src = tmp_path / "in"
    if make == "empty":
        src.mkdir()
        (src / "readme.txt").write_text("no images here")
    assert align_faces.main(["--input", str(src), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")


# ---------------------------------------------------------------------------------------------
# Real CelebA photos (only where CI provides them)
# ---------------------------------------------------------------------------------------------

def test_celeba_photos_detection_rate(mtcnn):
    root = os.environ.get("FACEGEN_SHARED_DATA")
    if not root:
        pytest.skip("FACEGEN_SHARED_DATA not set (CelebA photos)")
    from utils.data_sources import list_images, read_image_rgb

    files = list_images(Path(root) / "celeba-6k")[:20]
    images = [read_image_rgb(p) for p in files]
    dets = detect_batch(mtcnn, images)
    found = [(img, d) for img, d in zip(images, dets) if d is not None and d.prob >= 0.9]
    assert len(found) >= 19, f"only {len(found)}/20 faces detected"
    aligned = [align_face(img, d.landmarks, 128) for img, d in found]
    errors = [landmark_error(r.landmarks, 128) for r in detect_batch(mtcnn, aligned) if r is not None]
    assert len(errors) >= 18 and np.median(errors) <= 8.0
