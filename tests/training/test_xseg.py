"""XSeg: network shape, learning masks from drawn polygons, apply / remove / fetch, SAEHD uses them."""

from __future__ import annotations

import threading
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from conftest import copy_workspace
from facelab.core.landmarks import FaceType
from facelab.core.masks import polygons_mask
from facelab.io.faceimage import XSegPolygon, read_meta, write_meta
from facelab.io.frames import list_images
from facelab.models.xseg import XSegNet


def test_network_is_dfls_size_and_shapes():
    net = XSegNet()
    assert abs(sum(p.numel() for p in net.parameters()) / 1e6 - 17.6) < 0.1  # DFL's XSeg_256.npy: 17.6 M
    small = XSegNet(base=8, resolution=128)
    out = small(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 1, 128, 128)
    m = small.predict(torch.rand(1, 3, 128, 128))
    assert ((m == 0) | (m >= 0.1)).all() and m.max() <= 1
    with pytest.raises(ValueError, match="multiple of 64"):
        XSegNet(resolution=100)


def _label(folder, occluder: bool = True) -> list:
    """Polygons on every face: the landmark hull (include) minus a box over the mouth (exclude)."""
    labelled = []
    for path in list_images(folder):
        meta = read_meta(path)
        hull = cv2.convexHull(meta.landmarks.astype(np.float32))[:, 0]
        polys = [XSegPolygon(True, hull)]
        if occluder:
            mouth = meta.landmarks[48:68]
            (x0, y0), (x1, y1) = mouth.min(0) - 6, mouth.max(0) + 6
            polys.append(XSegPolygon(False, np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])))
        write_meta(path, replace(meta, xseg_polygons=tuple(polys)))
        labelled.append(path)
    return labelled


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.slow
def test_training_learns_the_drawn_masks(train_workspace, tmp_path):
    from facelab.options import resolve_options
    from facelab.training.xseg import XSegTrainer, XSegTrainOptions

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    paths = _label(ws.aligned_dir("dst"))
    held_back = paths[::6]  # carphone frames 1, 25, 49, ... are not trained on
    hidden = ws.root / "held_back"
    hidden.mkdir()
    for p in held_back:
        p.rename(hidden / p.name)
    opts = resolve_options(XSegTrainOptions, saved={"resolution": 64, "base": 8, "batch_size": 8, "seed": 5,
                                                     "preview": False, "face_type": "wf"})  # fmt: skip
    trainer = XSegTrainer(tmp_path / "XSeg", opts, [ws.aligned_dir("src"), ws.aligned_dir("dst")])
    for _ in range(1200):  # DFL's recipe (RMSprop 1e-4, 30 % of updates kept) at 64 px, base 8
        trainer.step()
    trainer.model.eval()
    ious = []
    for path in list_images(hidden):
        meta = read_meta(path)
        img = cv2.resize(cv2.imread(str(path)), (64, 64), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            pred = trainer.model.predict(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy() > 0.5
        want = cv2.resize(polygons_mask((256, 256), [(p.include, p.points) for p in meta.xseg_polygons])[..., 0], (64, 64)) > 0.5
        ious.append(_iou(pred, want))
    assert np.mean(ious) >= 0.8, ious


def test_apply_remove_fetch_and_saehd_uses_the_masks(train_workspace, tmp_path, script):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    _label(ws.aligned_dir("src"), occluder=False)
    args = ("--workspace", str(ws.root), "--non-interactive")
    proc = script("5_xseg_train", *args, "--resolution", "64", "--base", "4", "--target-iter", "3", "--no-preview")
    assert proc.returncode == 0, proc.stderr
    assert "now at 3" in proc.stdout and (ws.model_dir / "XSeg" / "checkpoints").is_dir()
    proc = script("5_xseg_apply", *args)
    assert proc.returncode == 0, proc.stderr
    faces = list_images(ws.aligned_dir("src")) + list_images(ws.aligned_dir("dst"))
    assert f"applied to {len(faces)} faces" in proc.stdout
    for path in faces[:3]:
        mask = read_meta(path).xseg_mask()
        assert mask is not None and mask.shape[:2] == (64, 64)  # the model's size, as DFL stores it
        assert set(np.unique(mask)) <= {0.0, 1.0}
    # SAEHD's training cache takes the applied mask instead of the landmark hull
    from facelab.training.data import FacesetCache

    cache = FacesetCache.load_or_build(ws.aligned_dir("src"), tmp_path / "cache", "src", 64, FaceType.WHOLE_FACE)
    path = faces[0]
    mask = read_meta(path).xseg_mask()[..., 0]
    scale = np.float64([[64 / mask.shape[1], 0, 0], [0, 64 / mask.shape[0], 0]])  # the cache's own resampling
    applied = cv2.warpAffine(mask, scale, (64, 64), flags=cv2.INTER_LINEAR)
    used = cache.images[cache.names.index(path.name), 3].astype(np.float32) / 255
    assert np.abs(used - applied).max() < 0.02
    # fetch copies labelled faces; remove and remove-labels ask first
    proc = script("5_xseg_fetch", *args)
    assert proc.returncode == 0 and len(list_images(ws.root / "data_src" / "aligned_xseg")) == len(list_images(ws.aligned_dir("src")))
    proc = script("5_xseg_remove", *args)
    assert proc.returncode == 2 and "--yes" in proc.stderr and read_meta(path).xseg_mask() is not None
    assert script("5_xseg_remove", *args, "--yes").returncode == 0 and read_meta(path).xseg_mask() is None
    assert script("5_xseg_remove_labels", *args, "--yes").returncode == 0
    assert all(not read_meta(p).xseg_polygons for p in list_images(ws.aligned_dir("src")))


def test_training_without_labels_says_what_to_do(ws, script):
    proc = script("5_xseg_train", "--workspace", str(ws.root), "--non-interactive", "--no-preview")
    assert proc.returncode == 2 and "5_xseg_edit" in proc.stderr
    assert threading  # the trainer runs in the main thread headless
