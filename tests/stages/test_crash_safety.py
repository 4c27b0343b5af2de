"""kill -9 in the middle of the faceset operations that move many files (issue 14): sort, pack
and unpack. Afterwards, and after at most one re-run, every face that existed before exists with
its metadata. The kill moment comes from the operation's own progress (its plan file or staging
folder appearing), never from a sleep."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_workspace
from facelab.io.faceimage import meta_from_bytes

pytestmark = pytest.mark.slow


def _faces(folder: Path) -> dict[str, bytes]:
    """sha256 -> bytes of every face file under the faceset's folder, its trash and staging included."""
    out = {}
    for root in (folder, folder.parent / f"{folder.name}_trash"):
        if root.is_dir():
            for p in root.rglob("*"):
                if p.is_file() and p.suffix.lower() in (".jpg", ".png"):
                    out[hashlib.sha256(p.read_bytes()).hexdigest()] = p.read_bytes()
    return out


def _run(ws, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args, "--workspace", str(ws.root), "--non-interactive"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


def _kill_when(ws, sign, *args: str) -> bool:
    """Start the command, kill -9 it as soon as `sign()` is true; False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "facelab", *args, "--workspace", str(ws.root), "--non-interactive"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while proc.poll() is None:
            if sign():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)  # polling for the sign, not waiting for a time
        return False
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_during_sort_loses_no_face(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    folder = ws.aligned_dir("dst")
    before = _faces(folder)
    assert len(before) == 30
    killed = 0
    for k, by in enumerate(["hist", "face-yaw", "blur", "hist", "absdiff", "face-pitch"]):
        killed += _kill_when(ws, lambda: (folder / ".facelab-renames.json").exists(), "sort", "--side", "dst", "--by", by)
        # the next stage that loads the folder finishes the interrupted sort first
        info = _run(ws, "faceset", "info", "--side", "dst")
        assert info.returncode == 0, info.stderr
        assert not (folder / ".facelab-renames.json").exists() and not (folder / ".renaming").exists()
        assert _faces(folder).keys() == before.keys(), f"round {k}: a face was lost or changed"
        for data in _faces(folder).values():
            assert meta_from_bytes(data) is not None
    assert killed >= 3  # most rounds were cut in the middle
    # and a sort that is not killed still works on the result
    assert _run(ws, "sort", "--side", "dst", "--by", "hist").returncode == 0
    assert _faces(folder).keys() == before.keys()


def test_kill_9_during_pack_and_unpack_loses_no_face(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    folder = ws.aligned_dir("dst")
    before = _faces(folder)
    # pack: killed while the pack is written, the loose faces are all still there
    _kill_when(ws, lambda: (folder / "faceset.fpk.tmp").exists(), "faceset", "pack", "--side", "dst")
    assert _faces(folder).keys() == before.keys()
    packed = _run(ws, "faceset", "pack", "--side", "dst", "--overwrite")
    assert packed.returncode == 0, packed.stderr
    assert (folder / "faceset.fpk").exists() and not _faces(folder)
    # unpack: killed halfway, the stages refuse the partial folder instead of reading part of it
    cut = _kill_when(ws, lambda: (folder / ".unpacking").exists(), "faceset", "unpack", "--side", "dst")
    if cut:
        refused = _run(ws, "faceset", "info", "--side", "dst")  # (training reads a pack the same way)
        assert refused.returncode == 2 and "was interrupted" in refused.stderr and "unpack" in refused.stderr
        again = _run(ws, "faceset", "pack", "--side", "dst", "--overwrite")  # must not replace the full pack
        assert again.returncode == 2
    done = _run(ws, "faceset", "unpack", "--side", "dst")
    assert done.returncode == 0, done.stderr
    assert _faces(folder).keys() == before.keys() and not (folder / "faceset.fpk").exists()


def test_kill_9_during_metadata_restore_loses_no_face(train_workspace, tmp_path):
    import cv2

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    folder = ws.aligned_dir("dst")
    assert _run(ws, "faceset", "metadata-save", "--side", "dst").returncode == 0
    originals = {p.name: cv2.imread(str(p)).shape for p in folder.glob("*.jpg")}
    assert len(originals) == 30
    killed = 0
    for k in range(3):
        for name, shape in originals.items():  # an editor that halves the faces and drops their metadata
            img = cv2.imread(str(folder / name))
            cv2.imwrite(str(folder / name), cv2.resize(img, (shape[1] // 2, shape[0] // 2)))
        killed += _kill_when(ws, lambda: any(folder.glob(".*.tmp")), "faceset", "metadata-restore", "--side", "dst")
        for name in originals:  # each face is whole: the edited one or the restored one, never half
            assert cv2.imread(str(folder / name)) is not None, f"round {k}: {name}"
        done = _run(ws, "faceset", "metadata-restore", "--side", "dst")  # one re-run finishes it
        assert done.returncode == 0, done.stderr
        for name, shape in originals.items():
            data = (folder / name).read_bytes()
            assert meta_from_bytes(data) is not None and cv2.imread(str(folder / name)).shape == shape, f"round {k}: {name}"
        assert sorted(p.name for p in folder.glob("*.jpg")) == sorted(originals)
    assert killed >= 2  # most rounds were cut in the middle


def test_pack_asks_before_replacing_a_bigger_pack(train_workspace, tmp_path):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    folder = ws.aligned_dir("dst")
    assert _run(ws, "faceset", "pack", "--side", "dst", "--no-delete-originals").returncode == 0
    for p in sorted(folder.glob("*.jpg"))[:20]:
        p.unlink()
    proc = _run(ws, "faceset", "pack", "--side", "dst", "--overwrite")
    assert proc.returncode == 2 and "holds 30 faces" in proc.stderr and "only 10" in proc.stderr and "--replace-bigger" in proc.stderr
    proc = _run(ws, "faceset", "pack", "--side", "dst", "--overwrite", "--replace-bigger")
    assert proc.returncode == 0, proc.stderr
