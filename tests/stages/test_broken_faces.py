"""A faceset of 1,000 faces with 5 broken ones trains, sorts, packs and merges; the broken ones
are named once per stage (issue 14 acceptance)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY, copy_workspace
from hostile import crafted_faces

pytestmark = pytest.mark.slow
BROKEN = ("truncated_app.jpg", "landmarks_67.jpg", "zlib_bomb.png", "huge_face.jpg", "deep.jpg")


def _run(ws, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args, "--workspace", str(ws.root), "--non-interactive"],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip


def test_a_thousand_faces_with_five_broken_train_sort_pack_and_merge(train_workspace, tmp_path, media):
    import shutil

    import cv2
    import numpy as np

    from facelab.io import faceimage as fi

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    src = ws.aligned_dir("src")
    originals = sorted(src.glob("*.jpg"))
    jpg = originals[0].read_bytes()
    png = fi.encode_face(cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR), fi.meta_from_bytes(jpg), ".png")
    crafted = crafted_faces(jpg, png)
    for k in range(995):
        (src / f"f{k:04d}.jpg").write_bytes(originals[k % len(originals)].read_bytes())
    for p in originals:
        p.unlink()
    for name in BROKEN:
        (src / f"broken_{name}").write_bytes(crafted[name])
    dst = ws.aligned_dir("dst")
    first_dst = sorted(dst.glob("*.jpg"))[0].stem
    (dst / f"{first_dst}_9.jpg").write_bytes(crafted["landmarks_67.jpg"])  # and one broken dst face
    assert len(list(src.glob("*.*g"))) == 1000

    proc = _run(ws, "train", *TINY, "--target-iter", "2", "--no-memory-probe")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("5 faces in") == 1 and all(f"broken_{n}" in proc.stderr for n in BROKEN)
    assert "cached 995 src faces" in proc.stderr and "Traceback" not in proc.stderr

    proc = _run(ws, "sort", "--side", "src", "--by", "hist")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("5 faces in") == 1
    kept = len(list(src.glob("*.*g"))) + len(list((src.parent / "aligned_trash").glob("*.*g")))
    assert kept == 1000  # nothing lost: sorted, or in the trash

    proc = _run(ws, "faceset", "pack", "--side", "src")
    assert proc.returncode == 0, proc.stderr
    assert "faces packed" in proc.stdout + proc.stderr

    shutil.copy(media("carphone.mp4"), ws.root / "data_dst.mp4")
    proc = _run(ws, "merge", "--model", "saehd", "--mask-mode", "dst")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("1 face in") == 1 and "could not be read and is left out" in proc.stderr
    assert "frames merged" in proc.stdout and "Traceback" not in proc.stderr
