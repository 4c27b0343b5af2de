"""Batch merge (script 7) on the real carphone video with a briefly trained model, and every
compositing mode on one face."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import TINY, copy_workspace
from facelab.core.blend import MASK_MODES, FaceInput, MergeConfig, list_modes, merge_face
from facelab.core.landmarks import FaceType, get_transform_mat
from facelab.io.faceimage import read_meta
from facelab.io.frames import list_images, read_image
from facelab.labels import png_labels


@pytest.fixture(scope="module")
def merged_ws(train_workspace, tmp_path_factory, media):
    """carphone: all 120 frames, their faces, a model trained for a few steps, merged by script 7."""
    from conftest import run_script

    ws = copy_workspace(train_workspace, tmp_path_factory.mktemp("merge") / "ws")
    shutil.rmtree(ws.frames_dir("dst"))
    ws.create_layout()
    shutil.copy(media("carphone.mp4"), ws.root / "data_dst.mp4")
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert run_script("3_extract_images_dst", *args).returncode == 0
    assert run_script("5_dst_faceset_extract", *args, "--image-size", "256").returncode == 0
    assert run_script("6_train_SAEHD", *args, *TINY, "--target-iter", "4").returncode == 0
    # the landmark-hull mask: a 4-step model's learned masks are still ~0.5
    proc = run_script("7_merge_SAEHD", *args, "--mask-mode", "dst")
    assert proc.returncode == 0, proc.stderr
    assert "120 frames merged (120 faces" in proc.stdout
    return ws


def test_every_frame_is_merged_inside_its_mask_and_untouched_outside(merged_ws):
    ws = merged_ws
    merged, masks, frames = list_images(ws.merged_dir), list_images(ws.merged_mask_dir), list_images(ws.frames_dir("dst"))
    assert len(merged) == len(masks) == len(frames) == 120
    for frame_path in frames[::13]:
        before = read_image(frame_path).astype(int)
        after = read_image(ws.merged_dir / f"{frame_path.stem}.png").astype(int)
        mask = cv2.imread(str(ws.merged_mask_dir / f"{frame_path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        grown = cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert (after[~grown] == before[~grown]).all(), "pixels outside the mask changed"
        inside = mask > 128
        assert inside.sum() > 500 and np.abs(after[inside] - before[inside]).mean() > 2, "the face did not change"
        changed = np.abs(after - before).sum(2) > 0
        assert (changed & ~grown).sum() == 0  # every changed pixel is covered by the written mask
    data = (ws.merged_dir / f"{frames[0].stem}.png").read_bytes()
    assert png_labels(data)["synthetic"] == "true" and "trainedAlgorithmicMedia" in png_labels(data)["digital_source_type"]


def test_resume_config_guard_and_frames_without_faces(merged_ws, script, tmp_path):
    ws = copy_workspace(merged_ws, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    proc = script("7_merge_SAEHD", *args, "--mask-mode", "dst")
    assert proc.returncode == 0 and "0 frames merged" in proc.stdout and "120 already merged" in proc.stdout
    proc = script("7_merge_SAEHD", *args, "--mode", "hist-match")
    assert proc.returncode == 2 and "another config" in proc.stderr and "--overwrite" in proc.stderr
    face = ws.aligned_dir("dst") / "00007_0.jpg"
    face.unlink()  # frame 7 now has no face
    proc = script("7_merge_SAEHD", *args, "--mode", "hist-match", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "1 without a face copied" in proc.stdout
    assert (read_image(ws.merged_dir / "00007.png") == read_image(ws.frames_dir("dst") / "00007.png")).all()
    assert cv2.imread(str(ws.merged_mask_dir / "00007.png"), cv2.IMREAD_GRAYSCALE).max() == 0


def test_merge_with_an_exported_dfm_matches_the_pytorch_model(merged_ws, script, tmp_path):
    """Issue 9: the merger runs a .dfm through onnxruntime and writes what the PyTorch model writes."""
    ws = copy_workspace(merged_ws, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    for frame in list_images(ws.frames_dir("dst"))[24:]:
        frame.unlink()
    assert script("6_export_SAEHD_onnx", *args).returncode == 0
    dfm = ws.model_dir / "new_SAEHD.dfm"
    # learned masks: the model's outputs matter
    assert script("7_merge_SAEHD", *args, "--overwrite", "--precision", "bf16").returncode == 0
    in_bf16 = {p.stem: read_image(p).astype(int) for p in list_images(ws.merged_dir)}
    for p in list_images(ws.merged_dir):
        p.unlink()
    proc = script("7_merge_SAEHD", *args, "--precision", "fp32")
    assert proc.returncode == 0 and "(bfloat16)" not in proc.stdout, proc.stderr
    by_torch = {p.stem: read_image(p).astype(int) for p in list_images(ws.merged_dir)}
    diffs = np.stack([np.abs(in_bf16[stem] - want) for stem, want in by_torch.items()])
    assert diffs.max() <= 2 and diffs.mean() < 0.05 and (diffs > 0).any()  # bf16: faster, a level or so off
    proc = script("7_merge_SAEHD", *args, "--onnx", str(dfm))
    assert proc.returncode == 2 and "--overwrite" in proc.stderr  # another model: the guard asks first
    proc = script("7_merge_SAEHD", *args, "--onnx", str(dfm), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "24 frames merged (24 faces" in proc.stdout and "new_SAEHD.dfm via onnxruntime (CPUExecutionProvider)" in proc.stdout
    changed = 0
    for stem, want in by_torch.items():
        got = read_image(ws.merged_dir / f"{stem}.png").astype(int)
        diff = np.abs(got - want)
        assert diff.max() <= 3 and (diff > 1).mean() < 1e-3, stem
        changed += int((got != read_image(ws.frames_dir("dst") / f"{stem}.png")).any())
    assert changed == 24
    proc = script("7_merge_SAEHD", *args, "--onnx", str(ws.root / "missing.dfm"), "--overwrite")
    assert proc.returncode == 2 and "missing.dfm does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (ws.root / "bad.dfm").write_bytes(b"not onnx")
    proc = script("7_merge_SAEHD", *args, "--onnx", str(ws.root / "bad.dfm"), "--overwrite")
    assert proc.returncode == 2 and "cannot be loaded as an ONNX model" in proc.stderr


def test_script_8_turns_merged_frames_into_a_labelled_video(merged_ws, script):
    from facelab.io.ffmpeg import probe
    from facelab.labels import is_labelled

    proc = script("8_merged_to_mp4", "--workspace", str(merged_ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    info = probe(merged_ws.result_path("mp4"))
    assert info.video.frames == 120 and is_labelled(info.tags)
    assert probe(merged_ws.result_mask_path("mp4")).video.frames == 120


def _face(train_workspace):
    path = list_images(train_workspace.aligned_dir("dst"))[0]
    meta = read_meta(path)
    frame = read_image(train_workspace.frames_dir("dst") / meta.source_filename).astype(np.float32) / 255
    lm = meta.source_landmarks
    crop = cv2.warpAffine(frame, get_transform_mat(lm, 64, FaceType.FULL), (64, 64), flags=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.float32)
    mask[12:54, 12:54] = 1
    item = FaceInput(lm, FaceType.FULL, 64, np.clip(crop[..., ::-1] * 0.8 + 0.1, 0, 1).copy(), mask, mask, crop,
                     mask, mask, (4.0, 30.0), rng)  # fmt: skip
    return frame, item


@pytest.mark.parametrize("mode", list_modes())
def test_every_mode_changes_only_the_face(train_workspace, mode):
    frame, item = _face(train_workspace)
    out, mask = merge_face(frame, item, MergeConfig(mode=mode))
    if mode == "raw-predict":
        assert out.shape == (64, 64, 3)
        return
    assert out.shape == frame.shape and np.isfinite(out).all()
    if mode == "original":
        assert (out == frame).all() and mask.max() == 0
        return
    covered = mask > 0
    if mode == "raw-rgb":  # DFL pastes the whole swapped square; the mask only goes to merged_mask
        mat = get_transform_mat(item.landmarks, 64, FaceType.FULL)
        square = cv2.warpAffine(np.ones((64, 64), np.float32), mat, frame.shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC)
        covered = np.abs(square) > 0
    far = cv2.dilate(covered.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert np.abs(out[far] - frame[far]).max() < 1e-6
    assert np.abs(out - frame)[mask > 0.5].mean() > 0.01


@pytest.mark.parametrize("mask_mode", MASK_MODES)
def test_every_mask_mode_with_erode_blur_and_scale(train_workspace, mask_mode):
    frame, item = _face(train_workspace)
    _, plain = merge_face(frame, item, MergeConfig(mask_mode=mask_mode))
    out, mask = merge_face(frame, item, MergeConfig(mask_mode=mask_mode, erode=10, blur=20, output_face_scale=5))
    assert np.isfinite(out).all() and 0 < mask.max() <= 1 and 0 < plain.max() <= 1
    assert np.abs(mask - plain).max() > 0.5, "erode/blur/scale left the mask as it was"


def test_extended_mask_with_avg_color_changes_only_pixels_inside_the_extended_mask(train_workspace):
    """faceswap's convert settings: the `extended` landmark mask and `avg-color`."""
    from facelab.core.masks import extended_mask

    frame, item = _face(train_workspace)
    out, mask = merge_face(frame, item, MergeConfig(mask_mode="extended", color_transfer="avg-color"))
    mat = get_transform_mat(item.landmarks, 64, FaceType.FULL)
    face_space = extended_mask((64, 64), cv2.transform(item.landmarks[None].astype(np.float64), mat)[0])[..., 0]
    in_frame = cv2.warpAffine(face_space, mat, frame.shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    m = mask[..., 0] if mask.ndim == 3 else mask
    assert np.array_equal(out[m == 0], frame[m == 0])  # nothing changes where the merge's mask is 0
    near = cv2.dilate((in_frame > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert (m[~near] == 0).all()  # and that mask is the extended mask (up to its resampling)
    inside = in_frame > 0.99
    assert np.abs(out - frame)[inside].mean() > 0.01
    _, hull = merge_face(frame, item, MergeConfig(mask_mode="dst"))
    assert 0.9 < (mask > 0.5).sum() / max(1, (hull > 0.5).sum()) < 1.1  # extended ~ DFL's hull


POST_EFFECTS = {
    "motion blur": dict(motion_blur_power=100), "sharpen": dict(sharpen_mode="gaussian", blursharpen_amount=30),
    "blur": dict(sharpen_mode="box", blursharpen_amount=-30), "denoise": dict(image_denoise_power=200),
    "bicubic degrade": dict(bicubic_degrade_power=60), "colour degrade": dict(color_degrade_power=80),
    "brightness": dict(brightness=-30), "contrast": dict(contrast=40), "temperature": dict(temperature=30), "tint": dict(tint=-30),
}  # fmt: skip


@pytest.mark.parametrize("effect", POST_EFFECTS)
def test_each_post_effect_changes_the_face_and_nothing_else(train_workspace, effect):
    frame, item = _face(train_workspace)
    item = dataclasses.replace(item, motion=(12.0, 30.0))
    base = MergeConfig(mask_mode="dst", color_transfer="none")
    before, mask = merge_face(frame, item, base)
    after, mask_after = merge_face(frame, item, dataclasses.replace(base, **POST_EFFECTS[effect]))
    assert np.array_equal(mask, mask_after)
    inside, outside = mask > 0.99, mask == 0
    diff = np.abs(after - before)[inside]  # 0 without the effect: the merge is deterministic
    assert diff.mean() > 0.3 / 255 and diff.max() > 1 / 255, f"{effect} did not change the face"
    assert np.array_equal(after[outside], before[outside]), f"{effect} changed pixels outside the mask"


def test_contact_sheet_shows_every_colour_transfer(merged_ws, script, tmp_path):
    from facelab.core.blend import COLOR_MODES

    ws = copy_workspace(merged_ws, tmp_path / "ws")
    proc = script("7_merge_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--mask-mode", "dst",
                  "--contact-sheet", "--overwrite")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sheet = read_image(ws.root / "merge_contact_sheet.png")
    rows = -(-len(COLOR_MODES) // 3)
    assert sheet.shape == (rows * 256, 3 * 256, 3)
    tiles = [sheet[r * 256 + 30 : (r + 1) * 256, c * 256 : (c + 1) * 256] for r in range(rows) for c in range(3)][: len(COLOR_MODES)]
    # the transfers really differ from each other
    assert len({round(float(t.mean()), 1) for t in tiles}) >= len(COLOR_MODES) - 2


def test_interactive_merger_window_configs_per_frame_and_session(merged_ws, tmp_path, monkeypatch):
    """Script 7 with --interactive: the window (driven by real key events) sets a config per frame;
    Esc saves the session and merges every frame with its own config; reopening restores it."""
    pytest.importorskip("PySide6")
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from facelab.options import resolve_options
    from facelab.stages.merge import MergeOptions, merge
    from facelab.ui import merger

    ws = copy_workspace(merged_ws, tmp_path / "ws")
    for frame in list_images(ws.frames_dir("dst"))[6:]:
        frame.unlink()
    stems = [p.stem for p in list_images(ws.frames_dir("dst"))]
    seen = {}

    def driver(keys):
        def run(stems, configs, render, default, index=0, contact_sheet=None, swapping=""):
            QApplication.instance() or QApplication([])
            w = merger.MergerWindow(stems, configs, render, default, index, contact_sheet, swapping)
            w.show()
            seen.update(start=w.index, configs=dict(configs))
            for key in keys:
                if key == "look":
                    seen.setdefault("looks", []).append((w.note, w._qimage.width(), w._qimage.height()))
                else:
                    QTest.keyClick(w, key) if key != "close" else w.close()
            seen["frame0"] = render(0, w.config(0))[0]
            return w.done, w.index

        return run

    opts = resolve_options(MergeOptions, saved={"interactive": True, "mask_mode": "dst"})
    K = Qt.Key
    # merged/ holds the batch merge's frames: asked about before the window opens, nothing deleted
    from facelab.errors import ConfirmationNeeded

    monkeypatch.setattr(merger, "run_merger_window", lambda *a, **k: pytest.fail("the window opened before asking"))
    batch_frames = len(list_images(ws.merged_dir))
    with pytest.raises(ConfirmationNeeded, match=f"holds {batch_frames} frames of another merge"):
        merge(ws, opts)
    assert batch_frames == 120 and len(list_images(ws.merged_dir)) == batch_frames
    keys = [K.Key_2, K.Key_Period, K.Key_Period, K.Key_1, K.Key_B, "look", K.Key_B, "look", K.Key_Escape]
    monkeypatch.setattr(merger, "run_merger_window", driver(keys))
    report = merge(ws, dataclasses.replace(opts, overwrite=True))
    # b: the frame under every colour transfer, shown in the window and saved; b again: back
    (note, *sheet_size), (note_after, *frame_size) = seen["looks"]
    sheet = read_image(ws.root / f"merge_contact_sheet_{stems[2]}.png")
    assert str(ws.root / f"merge_contact_sheet_{stems[2]}.png") in note and sheet_size == [sheet.shape[1], sheet.shape[0]]
    frame = read_image(ws.frames_dir("dst") / f"{stems[2]}.png")
    assert note_after == "" and frame_size == [frame.shape[1], frame.shape[0]] and sheet_size != frame_size
    assert "6 frames merged (6 faces, each frame with its config from the merger window)" in report.line()
    session = json.loads((ws.model_dir / "new_SAEHD" / "merger_session.json").read_text())
    modes = [session["frames"][stem]["mode"] for stem in stems]
    assert modes == ["hist-match", "hist-match", "overlay", "overlay", "overlay", "overlay"] and session["index"] == 2
    # the frame shown is the frame written (up to float noise: the model ran on 1 frame there, on 6 here)
    shown = lambda: np.abs(read_image(ws.merged_dir / f"{stems[0]}.png").astype(int) - seen["frame0"])  # noqa: E731
    assert shown().max() <= 1 and (shown() > 0).mean() < 1e-3
    merge(ws, dataclasses.replace(opts, interactive=False, overwrite=True))  # every frame overlay
    assert (shown() > 3).sum() > 100  # frame 0 in hist-match differs from overlay

    monkeypatch.setattr(merger, "run_merger_window", driver([K.Key_Escape]))
    merge(ws, dataclasses.replace(opts, overwrite=True))
    assert seen["start"] == 2 and seen["configs"][stems[1]].mode == "hist-match"  # reopened where it was left
    assert shown().max() <= 1 and (shown() > 0).mean() < 1e-3
    monkeypatch.setattr(merger, "run_merger_window", driver(["close"]))
    assert "nothing merged" in merge(ws, opts).line()


class _DiscXSeg:
    """A stand-in XSeg that always sees the face as a centred disc of its input, so where the
    disc lands in the frame shows which framing it was given."""

    def predict(self, x):  # noqa: ANN001, ANN201
        import torch

        n, _, h, w = x.shape
        yy, xx = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
        return ((yy**2 + xx**2) < (0.3 * h) ** 2).float().expand(n, 1, h, w)


def _in_frame(mask: np.ndarray, lm: np.ndarray, size: int, face_type: FaceType, shape: tuple) -> np.ndarray:
    mat = get_transform_mat(lm, size, face_type)
    return cv2.warpAffine(mask, mat, shape[1::-1], flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR) > 0.5


def test_xseg_masks_are_taken_at_xsegs_own_framing(train_workspace):
    """A whole-face XSeg under a full-face model: the masks land where XSeg saw them in the frame."""
    import torch

    from facelab.models.store import LoadedModel
    from facelab.stages.merge import xseg_masks

    path = list_images(train_workspace.aligned_dir("dst"))[0]
    lm = read_meta(path).source_landmarks
    frame = read_image(train_workspace.frames_dir("dst") / read_meta(path).source_filename)
    swapped = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    xseg = LoadedModel(_DiscXSeg(), "xseg", FaceType.WHOLE_FACE, 128, 0, torch.device("cpu"), Path("XSeg"), {})
    prd, dst = xseg_masks(xseg, [frame], [lm], FaceType.FULL, 64, swapped)
    assert prd.shape == dst.shape == (1, 64, 64)
    disc = _DiscXSeg().predict(torch.zeros(1, 3, 128, 128))[0, 0].numpy()
    where_xseg_saw_it = _in_frame(disc, lm, 128, FaceType.WHOLE_FACE, frame.shape)
    for got in (prd[0], dst[0]):
        mine = _in_frame(got, lm, 64, FaceType.FULL, frame.shape)
        assert (mine & where_xseg_saw_it).sum() / (mine | where_xseg_saw_it).sum() > 0.95
    # resizing the model's crop (DFL) puts the disc elsewhere: the test can tell the two apart
    naive = _in_frame(cv2.resize(disc, (64, 64)), lm, 64, FaceType.FULL, frame.shape)
    assert (naive & where_xseg_saw_it).sum() / (naive | where_xseg_saw_it).sum() < 0.8


def test_merge_with_xseg_mask_modes(merged_ws, script, tmp_path, monkeypatch):
    """XSeg mask modes: the window says when no XSeg model is trained (and keeps going); with one,
    the window's x key loads it, and script 7 --mask-mode xseg-dst merges every frame."""
    pytest.importorskip("PySide6")
    import torch
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from facelab.io import checkpoint
    from facelab.models.xseg import XSegNet
    from facelab.options import resolve_options
    from facelab.stages.merge import MergeOptions, merge
    from facelab.models import store
    from facelab.ui import merger

    ws = copy_workspace(merged_ws, tmp_path / "ws")
    for frame in list_images(ws.frames_dir("dst"))[6:]:
        frame.unlink()
    seen = {}

    def driver(stems, configs, render, default, index=0, contact_sheet=None, swapping=""):  # noqa: ANN001, ANN202
        QApplication.instance() or QApplication([])
        w = merger.MergerWindow(stems, configs, render, default, index, contact_sheet, swapping)
        for _ in range(5):  # dst -> ... -> xseg-prd
            QTest.keyClick(w, "x")
        seen.update(mode=w.config().mask_mode, error=w.error)
        w.close()
        return False, w.index

    monkeypatch.setattr(merger, "run_merger_window", driver)
    opts = resolve_options(MergeOptions, saved={"interactive": True, "mask_mode": "dst", "session": False, "overwrite": True})
    assert "nothing merged" in merge(ws, opts).line()
    assert seen["mode"] == "xseg-prd" and "no trained XSeg model" in seen["error"]

    torch.manual_seed(0)
    net = XSegNet(base=8, resolution=64)
    with torch.no_grad():  # a mask that covers XSeg's whole square
        net.out_conv.weight.zero_()
        net.out_conv.bias.fill_(4.0)
    checkpoint.save(store.spec("xseg").folder(ws), 1, {f"model.{k}": v for k, v in net.state_dict().items()}, {},
                    {"model": "xseg", "options": {"base": 8, "resolution": 64, "face_type": "wf"}})  # fmt: skip
    merge(ws, opts)
    assert seen["mode"] == "xseg-prd" and seen["error"] == ""

    args = ("--workspace", str(ws.root), "--non-interactive", "--overwrite")
    proc = script("7_merge_SAEHD", *args, "--mask-mode", "xseg-dst")
    assert proc.returncode == 0, proc.stderr
    assert "6 frames merged (6 faces, overlay, mask xseg-dst" in proc.stdout
    for frame_path in list_images(ws.frames_dir("dst")):
        before = read_image(frame_path).astype(int)
        after = read_image(ws.merged_dir / f"{frame_path.stem}.png").astype(int)
        mask = cv2.imread(str(ws.merged_mask_dir / f"{frame_path.stem}.png"), cv2.IMREAD_GRAYSCALE)
        grown = cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        assert mask.max() > 0 and (after[~grown] == before[~grown]).all()
        assert np.abs(after - before)[mask > 128].mean() > 2


def test_a_saved_window_session_is_offered_at_the_prompts(merged_ws, tmp_path, monkeypatch, capsys):
    """As DFL: with the merger window chosen and a session saved for the model, the prompts ask
    whether to reopen it; a flag answers without asking; no session, no question."""
    import sys

    from facelab.stages.merge import resolve_merge

    monkeypatch.setattr("facelab.stages.merge.can_show_windows", lambda: True)
    ws = copy_workspace(merged_ws, tmp_path / "ws")
    session = ws.model_dir / "new_SAEHD" / "merger_session.json"
    session.unlink(missing_ok=True)
    asked: list[str] = []

    class Person:
        """stdin of a person who answers the session question with `answer`, y to the window and Enter to the rest."""

        def __init__(self, answer: str):
            self.answer = answer

        def readline(self) -> str:
            prompt = capsys.readouterr().out.strip().splitlines()[-1]
            asked.append(prompt)
            return (self.answer if "session" in prompt else "y" if "interactive merger" in prompt else "") + "\n"

    monkeypatch.setattr(sys, "stdin", Person("n"))
    assert resolve_merge(ws, {}, interactive=True).interactive and not any("session" in q for q in asked)
    session.write_text(json.dumps({"model": "new_SAEHD", "iteration": 4, "index": 6, "frames": {"00001": {}, "00002": {}}}))
    asked.clear()
    assert resolve_merge(ws, {}, interactive=True).session is False
    assert "Use the saved merger session (2 frame configs, at frame 7)" in [q for q in asked if "session" in q][0]
    monkeypatch.setattr(sys, "stdin", Person("y"))
    assert resolve_merge(ws, {}, interactive=True).session is True
    asked.clear()
    assert resolve_merge(ws, {"session": False}, interactive=True).session is False and not any("session" in q for q in asked)
    assert resolve_merge(ws, {}, interactive=False).session is True and not any("session" in q for q in asked)  # headless: reopened


def test_motion_blur_follows_each_face_when_a_frame_has_several():
    """DFL turns motion blur off with two faces in a frame (spec §14); here each face keeps its own movement."""
    from facelab.stages.merge import face_motion

    before = [np.array([100.0, 300.0]), np.array([500.0, 300.0])]
    after = [np.array([500.0, 280.0]), np.array([120.0, 300.0])]  # listed in another order
    assert face_motion(np.array([110.0, 300.0]), before, after) == pytest.approx((20.0, 0.0))  # moving right
    assert face_motion(np.array([500.0, 290.0]), before, after) == pytest.approx((20.0, 90.0))  # moving up
    assert face_motion(np.array([110.0, 300.0]), [], after) == (0.0, 0.0)  # the first frame: no movement known


def test_a_merge_batch_that_runs_out_of_memory_is_split_with_the_same_frames(merged_ws, tmp_path, monkeypatch, capsys):

    import torch

    from facelab import cli
    from facelab.models.saehd import SAEHD

    ws = copy_workspace(merged_ws, tmp_path / "ws")
    for p in list_images(ws.merged_dir):  # all to merge again
        p.unlink()
    original, sizes = SAEHD.swap, []

    def swap(self, x):  # noqa: ANN001, ANN202
        sizes.append(x.shape[0])
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected by the test)")
        return original(self, x)

    monkeypatch.setattr(SAEHD, "swap", swap)
    code = cli.main(["merge", "--model", "saehd", "--workspace", str(ws.root), "--non-interactive", "--mask-mode", "dst",
                     "--overwrite", "--workers", "1"])  # fmt: skip
    assert code == 0
    assert sizes[0] == 8 and max(sizes[1:]) <= 4  # split once, then kept small
    err = capsys.readouterr().err
    assert err.count("out of memory") == 1 and "merge: out of memory with 8 at once; going on with 4 at a time" in err
    for frame in list_images(merged_ws.merged_dir)[::17]:
        a = read_image(frame).astype(int)
        b = read_image(ws.merged_dir / frame.name).astype(int)
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.05, frame.name  # batch size changes only rounding
    assert len(list_images(ws.merged_dir)) == 120


def test_a_hostile_window_session_is_ignored_with_a_warning(tmp_path, caplog):
    import logging

    from facelab.stages.merge import _read_window_session

    good = dataclasses.asdict(MergeConfig(erode=20, mode="hist-match"))
    assert MergeConfig.from_dict(good) == MergeConfig(erode=20, mode="hist-match")
    path = tmp_path / "merger_session.json"
    path.write_text(json.dumps({"frames": {"00001": good}, "index": 0}))
    assert _read_window_session(path)[0] == {"00001": MergeConfig(erode=20, mode="hist-match")}
    for bad in ({**good, "erode": "20"}, {**good, "erode": 10_000}, {**good, "mode": "rm -rf"}, {**good, "colour": 1},
                {**good, "masked_hist_match": 1}, [1, 2]):  # fmt: skip
        path.write_text(json.dumps({"frames": {"00001": bad}}))
        with caplog.at_level(logging.WARNING):
            assert _read_window_session(path) == ({}, 0)
    path.write_text(json.dumps({"frames": {"../../x": good}}))
    assert _read_window_session(path) == ({}, 0)
    path.write_text('{"frames": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert _read_window_session(path) == ({}, 0)
    assert sum("ignoring the merger session" in r.getMessage() for r in caplog.records) >= 6
