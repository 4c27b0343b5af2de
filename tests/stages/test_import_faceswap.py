"""Importing faceswap's extraction (alignments file + frames, or its face PNGs) against what faceswap
itself wrote (`shared/reference/faceswap-golden`): every face, its landmarks, its masks, its matrix."""

from __future__ import annotations

import json
import pickle
import shutil
import zlib

import cv2
import numpy as np
import pytest

from facelab.core.landmarks import FaceType, compose_affine, get_transform_mat, transform_points, warp_face
from facelab.io.faceimage import read_face
from facelab.io.frames import list_images
from golden import faceswap_golden


def _expected() -> dict:
    return json.loads(faceswap_golden("expected.json").read_text())


def _run(script, ws, side, *args):  # noqa: ANN001, ANN202
    return script(f"{'4.2_src' if side == 'src' else '5.2_dst'}_util_import_faceswap", *args,
                  "--workspace", str(ws.root), "--non-interactive")  # fmt: skip


def test_alignments_and_frames_give_every_face_with_its_landmarks_matrix_and_masks(ws, script):
    g = faceswap_golden()
    proc = _run(script, ws, "dst", "--alignments", str(g / "alignments.fsa"), "--frames", str(g / "frames"))
    assert proc.returncode == 0, proc.stderr
    assert "18 faces from faceswap" in proc.stdout and "18 with an applied faceswap mask" in proc.stdout
    aligned = ws.aligned_dir("dst")
    expected = _expected()["faces"]
    assert sorted(p.name for p in list_images(aligned)) == sorted(f"{e['face_png'][6:-4]}.jpg" for e in expected)
    for e in expected:
        img, meta = read_face(aligned / f"{e['face_png'][6:-4]}.jpg")
        lm = np.array(e["landmarks_xy"], np.float32)
        # faceswap's landmarks exactly, our framing of them, the crop cut from the frame with it
        np.testing.assert_array_equal(meta.source_landmarks, lm)
        mat = get_transform_mat(lm, 512, FaceType.WHOLE_FACE)
        np.testing.assert_allclose(meta.image_to_face_mat, mat, atol=1e-9)
        np.testing.assert_allclose(meta.landmarks, transform_points(lm, mat), atol=1e-3)
        frame = cv2.imread(str(g / "frames" / e["frame"]))
        assert np.abs(img.astype(int) - warp_face(frame, mat, 512).astype(int)).mean() < 2  # JPEG only
        assert meta.source_filename == e["frame"] and meta.extra["faceswap_face_index"] == e["face_index"]
        assert meta.identity_model == "dlib-resnet/v1" and len(meta.identity) == 128
        # consistent with faceswap's own frame -> face matrix: its PNG, carried into our crop
        # through (ours) o (faceswap's)^-1, is our face wherever faceswap's crop saw the frame
        fs_mat = np.array(e["alignment_to_frame"]["frame_to_face_matrix"])
        png_to_ours = compose_affine(mat, cv2.invertAffineTransform(fs_mat))
        png = cv2.imread(str(g / e["face_png"]))
        carried = cv2.warpAffine(png, png_to_ours, (512, 512), flags=cv2.INTER_CUBIC)
        covered = cv2.warpAffine(np.full((512, 512), 255, np.uint8), png_to_ours, (512, 512)) == 255
        covered &= warp_face(np.full_like(frame, 255), mat, 512)[..., 0] == 255  # and the frame itself
        covered = cv2.erode(covered.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert covered.mean() > 0.3
        assert np.abs(carried.astype(int) - img.astype(int))[covered].mean() < 4, e["face_png"]
        x, y, w, h = e["box_xywh"]
        np.testing.assert_array_equal(meta.source_rect, [x, y, x + w, y + h])
        # the applied mask is faceswap's "extended": put back into the frame, it is faceswap's own
        # frame-space mask (up to two resamplings) wherever our crop sees the frame
        assert meta.extra["faceswap_mask"] == "extended"
        ours = (meta.xseg_mask()[..., 0] * 255).astype(np.uint8)
        back = cv2.warpAffine(ours, mat, (1280, 720), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        seen = cv2.warpAffine(np.full((512, 512), 255, np.uint8), mat, (1280, 720), flags=cv2.WARP_INVERSE_MAP) == 255
        theirs = cv2.imread(str(g / "masks/frame/extended" / e["frame"].replace(".jpg", ".png")), cv2.IMREAD_GRAYSCALE)
        box = np.zeros_like(seen)
        box[max(0, y - h): y + 2 * h, max(0, x - w): x + 2 * w] = True  # this face's part of the frame
        diff = np.abs(back.astype(int) - theirs.astype(int))[seen & box]
        # measured: no pixel over 64 levels apart, 0.07 levels apart on average at most
        assert (diff > 64).mean() < 0.001 and diff.mean() < 1.0, (e["face_png"], (diff > 64).mean(), diff.mean())
        inside = theirs[seen & box] > 200
        assert inside.sum() > 1000 and (back[seen & box][inside] > 128).mean() > 0.99


def _png_route_shifts(ws, script, faces_dir, with_masks: bool) -> list[float]:  # noqa: ANN001
    """Import faceswap's PNGs from `faces_dir` (full face, 256 px) and return, per face, how far
    the picture landed from where it belongs: phase correlation against the same crop cut
    straight from the frame."""
    g = faceswap_golden()
    proc = _run(script, ws, "src", "--faces", str(faces_dir), "--face-type", "f", "--image-size", "256")
    assert proc.returncode == 0, proc.stderr
    assert "18 faces from faceswap" in proc.stdout
    shifts = []
    for e in _expected()["faces"]:
        img, meta = read_face(ws.aligned_dir("src") / f"{e['face_png'][6:-4]}.jpg")
        lm = np.array(e["landmarks_xy"], np.float32)
        np.testing.assert_array_equal(meta.source_landmarks, lm)
        assert meta.face_type == FaceType.FULL and img.shape == (256, 256, 3)
        assert meta.extra["faceswap_png"] == e["face_png"][6:]
        assert (meta.xseg_mask() is not None) == with_masks
        truth = warp_face(cv2.imread(str(g / "frames" / e["frame"])), get_transform_mat(lm, 256, FaceType.FULL), 256)
        shift = cv2.phaseCorrelate(cv2.cvtColor(truth, cv2.COLOR_BGR2GRAY).astype(np.float32),
                                   cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32))[0]  # fmt: skip
        shifts.append(float(np.hypot(*shift)))
    return shifts


def test_face_pngs_alone_give_the_same_faces_registered_within_a_few_pixels(ws, script):
    shifts = _png_route_shifts(ws, script, faceswap_golden("faces"), with_masks=True)
    # measured: mean 1.34 px, at most 3.86 px in a 256 px crop
    assert max(shifts) < 5.0 and np.mean(shifts) < 2.0, shifts
    # who is who, as extraction stores it (frames_manifest.json: 000-003 are Obama, 004 and 005 Biden)
    ids = {p.stem: np.array(read_face(p)[1].identity) for p in list_images(ws.aligned_dir("src"))}
    assert max(np.linalg.norm(ids["shared_000_0"] - ids[f"shared_00{k}_0"]) for k in (1, 2, 3)) < 0.6
    assert np.linalg.norm(ids["shared_004_0"] - ids["shared_005_0"]) < 0.6
    assert min(np.linalg.norm(ids[f"shared_00{k}_0"] - ids["shared_004_0"]) for k in (0, 1, 2, 3)) > 0.6


def test_face_pngs_without_stored_masks_are_registered_from_the_points_alone(ws, script, tmp_path):
    """faceswap run without a masker stores no mask: the whole similarity is fitted to our points."""
    import ast

    from facelab.io.faceimage import embed_png_text, read_png_text

    bare = tmp_path / "faces"
    bare.mkdir()
    for png in faceswap_golden("faces").glob("*.png"):
        data = png.read_bytes()
        meta = ast.literal_eval(read_png_text(data, b"faceswap").decode())
        meta["alignments"]["mask"] = {}
        (bare / png.name).write_bytes(embed_png_text(data, b"faceswap", repr(meta).encode()))
    shifts = _png_route_shifts(ws, script, bare, with_masks=False)
    assert max(shifts) < 5.0 and np.mean(shifts) < 2.0, shifts  # as with masks: the same registration


def test_faceswaps_legacy_alignment_is_reproduced():
    """faceswap's legacy matrix (what its crops are built on), from its landmarks alone."""
    from facelab.io.faceswap import legacy_matrix

    for e in _expected()["faces"]:
        ours = legacy_matrix(np.array(e["landmarks_xy"], np.float32))
        theirs = np.array(e["alignment_to_frame"]["legacy_matrix_normalised"])
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())


def test_the_newest_faceswap_format_imports_both_ways(ws, script):
    g = faceswap_golden("head_variant")
    proc = _run(script, ws, "dst", "--alignments", str(g / "landmarks_in.fsa"), "--frames", str(g.parent / "frames"))
    assert proc.returncode == 0, proc.stderr
    # two faces of shared_011; its only stored mask, faceswap's unpainted "custom", is all zero: not applied
    assert "2 faces from faceswap" in proc.stdout and "0 with an applied faceswap mask" in proc.stdout
    names = sorted(p.name for p in list_images(ws.aligned_dir("dst")))
    assert names == ["shared_011_0.jpg", "shared_011_1.jpg"]
    first = read_face(ws.aligned_dir("dst") / names[0])[1]
    main = _expected()["faces"]
    np.testing.assert_allclose(first.source_landmarks, [e for e in main if e["face_png"] == "faces/shared_011_0.png"][0]["landmarks_xy"], atol=1e-4)
    proc = _run(script, ws, "src", "--faces", str(g / "faces"), "--mask", "custom_face")
    assert proc.returncode == 0, proc.stderr
    assert "2 faces from faceswap" in proc.stdout and "2 with an applied faceswap mask" in proc.stdout


def test_asks_before_replacing_and_keeps_the_old_faces(ws, script):
    g = faceswap_golden()
    args = ("--alignments", str(g / "alignments.fsa"), "--frames", str(g / "frames"))
    assert _run(script, ws, "dst", *args).returncode == 0
    proc = _run(script, ws, "dst", *args)
    assert proc.returncode == 2 and "already holds 18 faces" in proc.stderr and "--overwrite" in proc.stderr
    proc = _run(script, ws, "dst", *args, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert len(list_images(ws.aligned_dir("dst"))) == 18
    assert len(list_images(ws.aligned_dir("dst").parent / "aligned_trash")) == 18


def test_faces_that_cannot_be_mapped_are_counted_and_named(ws, script, tmp_path):
    g = faceswap_golden()
    frames = tmp_path / "frames"
    shutil.copytree(g / "frames", frames)
    (frames / "shared_012.jpg").unlink()  # three faces lose their frame
    faces = tmp_path / "faces"
    shutil.copytree(g / "faces", faces)
    (faces / "shared_000_0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = _run(script, ws, "dst", "--alignments", str(g / "alignments.fsa"), "--frames", str(frames))
    assert proc.returncode == 0, proc.stderr
    assert "15 faces from faceswap" in proc.stdout and "3 not mapped: shared_012.jpg face 0: the frame is not in" in proc.stdout
    proc = _run(script, ws, "src", "--faces", str(faces))
    assert proc.returncode == 0, proc.stderr
    assert "17 faces from faceswap" in proc.stdout and "1 not mapped: shared_000_0.png" in proc.stdout


def test_without_a_source_it_says_what_to_give(ws, script):
    proc = _run(script, ws, "src")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--alignments FILE" in proc.stderr and "--faces DIR" in proc.stderr


def _fsa(payload: bytes) -> bytes:
    return zlib.compress(payload)


@pytest.mark.parametrize("case", ["code", "zlib", "truncated", "not-a-table", "bad-landmarks", "frame-path", "mask-size"])
def test_a_damaged_or_malicious_alignments_file_is_one_line_and_nothing_is_written(ws, script, tmp_path, case):
    g = faceswap_golden()
    good = pickle.loads(zlib.decompress((g / "alignments.fsa").read_bytes()))  # our own reference file
    if case == "code":
        data = _fsa(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    elif case == "zlib":
        data = (g / "alignments.fsa").read_bytes()[:20] + b"\x00" * 50
    elif case == "truncated":
        data = _fsa(zlib.decompress((g / "alignments.fsa").read_bytes())[:5000])
    elif case == "not-a-table":
        data = _fsa(pickle.dumps([1, 2, 3]))
    else:
        frame = good["__data__"]["shared_000.jpg"]
        if case == "bad-landmarks":
            frame["faces"][0]["landmarks_xy"] = np.full((68, 2), np.nan, np.float32)
        elif case == "frame-path":
            good["__data__"]["../../escape.jpg"] = good["__data__"].pop("shared_000.jpg")
        else:
            frame["faces"][0]["mask"]["components"]["stored_size"] = 4096
        data = _fsa(pickle.dumps(good, protocol=4))
    fsa = tmp_path / "alignments.fsa"
    fsa.write_bytes(data)
    proc = _run(script, ws, "dst", "--alignments", str(fsa), "--frames", str(g / "frames"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "alignments.fsa" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "pwned").exists()
    assert list_images(ws.aligned_dir("dst")) == []


def test_alignments_of_a_video_find_our_numbered_frames(ws, script, tmp_path):
    """faceswap names a video's frames `<video>_000001.<its extension>`; script 3 names ours `00001.png`."""
    g = faceswap_golden()
    table = pickle.loads(zlib.decompress((g / "alignments.fsa").read_bytes()))  # our own reference file
    names = sorted(table["__data__"])
    table["__data__"] = {f"data_dst_{i + 1:06d}.mp4": table["__data__"][n] for i, n in enumerate(names)}
    fsa = tmp_path / "data_dst_alignments.fsa"
    fsa.write_bytes(zlib.compress(pickle.dumps(table, protocol=4)))
    for i, n in enumerate(names):
        cv2.imwrite(str(ws.frames_dir("dst") / f"{i + 1:05d}.png"), cv2.imread(str(g / "frames" / n)))
    proc = _run(script, ws, "dst", "--alignments", str(fsa))  # frames: data_dst/ itself
    assert proc.returncode == 0, proc.stderr
    assert "18 faces from faceswap" in proc.stdout
    meta = read_face(ws.aligned_dir("dst") / "00012_1.jpg")[1]  # shared_011's second face
    assert meta.source_filename == "00012.png" and meta.extra["faceswap_frame"] == "data_dst_000012.mp4"
    expected = [e for e in _expected()["faces"] if e["face_png"] == "faces/shared_011_1.png"][0]
    np.testing.assert_array_equal(meta.source_landmarks, np.array(expected["landmarks_xy"], np.float32))


def test_imported_dst_faces_merge(train_workspace, tmp_path, script):
    """faceswap's dst alignments, imported over our own frames, are what script 7 swaps."""
    from conftest import TINY, copy_workspace

    g = faceswap_golden()
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert script("6_train_SAEHD", *args, *TINY, "--target-iter", "2").returncode == 0
    shutil.rmtree(ws.frames_dir("dst"))
    ws.create_layout()
    for frame in sorted((g / "frames").glob("*.jpg")):
        cv2.imwrite(str(ws.frames_dir("dst") / f"{frame.stem}.png"), cv2.imread(str(frame)))
    table = pickle.loads(zlib.decompress((g / "alignments.fsa").read_bytes()))  # our own reference file
    table["__data__"] = {n.replace(".jpg", ".png"): v for n, v in table["__data__"].items()}
    fsa = tmp_path / "alignments.fsa"
    fsa.write_bytes(zlib.compress(pickle.dumps(table, protocol=4)))
    proc = script("5.2_dst_util_import_faceswap", *args, "--alignments", str(fsa), "--image-size", "256")
    assert proc.returncode == 0 and "18 faces from faceswap" in proc.stdout, proc.stderr
    proc = script("7_merge_SAEHD", *args, "--mask-mode", "extended")
    assert proc.returncode == 0, proc.stderr
    assert "16 frames merged (18 faces" in proc.stdout, proc.stdout
    for name, boxes in (("shared_012", 3), ("shared_015", 0)):
        before = cv2.imread(str(ws.frames_dir("dst") / f"{name}.png")).astype(int)
        after = cv2.imread(str(ws.merged_dir / f"{name}.png")).astype(int)
        faces = [e for e in _expected()["faces"] if e["frame"] == f"{name}.jpg"]
        assert len(faces) == boxes
        changed = np.abs(after - before).sum(2) > 0
        for e in faces:  # every face of the frame is swapped, inside its box
            x, y, w, h = e["box_xywh"]
            assert changed[y : y + h, x : x + w].mean() > 0.3, (name, e["face_index"])
        if not faces:
            assert not changed.any()
