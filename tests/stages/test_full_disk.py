"""A full disk (issue 14): extract, pack, the training cache, a checkpoint save and merge, each run
on a real small filesystem (a tmpfs) that fills up. Each gives one line saying the disk is full,
exit 2, leaves no half-written file, keeps what was there, and works on once there is room.

Mounting a tmpfs needs root (or a user namespace); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from facelab.io import checkpoint
from facelab.io.faceimage import meta_from_bytes
from facelab.io.frames import list_images, read_image
from facelab.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="a tmpfs is Linux's")]

DISK_MB = 96


@pytest.fixture
def disk(tmp_path) -> Path:
    """A DISK_MB tmpfs mounted for the test (skip where this user cannot mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(proc.stderr or 'not root').strip()[:80]})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk but `leave` bytes (real blocks, not a sparse file)."""
    filler = disk / "filler.bin"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize - leave
    with open(filler, "wb") as fh:
        block = b"\0" * (1 << 20)
        while free > 0:
            n = fh.write(block[: min(len(block), free)])
            free -= n
    return filler


def _run(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args, "--workspace", str(ws.root), "--non-interactive"],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip


def _says_disk_full(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and "full" in last.lower() and "disk" in last.lower(), proc.stderr[-2000:]


def _no_half_files(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp_")]
    assert not left, left
    for p in root.rglob("*"):
        if p.suffix in (".jpg", ".png") and p.name != "filler.bin":
            assert read_image(p) is not None, f"{p} is half-written"


def _workspace_on(disk: Path, source: Workspace, *parts: str) -> Workspace:
    ws = Workspace.at(disk / "workspace")
    ws.create_layout()
    for part in parts:
        shutil.rmtree(ws.root / part, ignore_errors=True)
        shutil.copytree(source.root / part, ws.root / part)
    return ws


def test_extract_on_a_full_disk_stops_cleanly_and_resumes(disk, train_workspace):
    ws = _workspace_on(disk, train_workspace, "data_dst")
    for done in [p for p in ws.frames_dir("dst").iterdir() if p.is_dir()]:  # aligned faces, debug overlays
        shutil.rmtree(done)
    filler = _fill(disk, 96 << 10)
    proc = _run(ws, "extract", "--side", "dst", "--image-size", "256")
    _says_disk_full(proc)
    _no_half_files(ws.root)
    filler.unlink()
    proc = _run(ws, "extract", "--side", "dst", "--image-size", "256")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list_images(ws.aligned_dir("dst"))) == len(list_images(train_workspace.aligned_dir("dst")))


def test_pack_on_a_full_disk_keeps_every_loose_face(disk, train_workspace):
    ws = _workspace_on(disk, train_workspace, "data_dst")
    before = {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("dst"))}
    filler = _fill(disk, 64 << 10)
    _says_disk_full(_run(ws, "faceset", "pack", "--side", "dst"))
    assert {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("dst"))} == before
    assert not (ws.aligned_dir("dst") / "faceset.fpk").exists()
    _no_half_files(ws.root)
    filler.unlink()
    assert _run(ws, "faceset", "pack", "--side", "dst").returncode == 0


def test_training_cache_save_and_merge_on_a_full_disk(disk, train_workspace):
    ws = _workspace_on(disk, train_workspace, "data_src", "data_dst")
    train = ("train", "--model", "saehd", "--model-name", "full", *TINY)
    # the face cache: refused before it is written, saying how much it needs
    filler = _fill(disk, 256 << 10)
    proc = _run(ws, *train, "--target-iter", "2")
    _says_disk_full(proc)
    assert "MB" in proc.stderr.strip().splitlines()[-1]
    _no_half_files(ws.root)
    filler.unlink()
    proc = _run(ws, *train, "--target-iter", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    model_dir = ws.model_dir / "full_SAEHD"
    assert checkpoint.load_latest(model_dir).iteration == 2
    # a save that finds the disk full: the last generation stays, no half generation is left
    filler = _fill(disk, 64 << 10)
    _says_disk_full(_run(ws, *train, "--target-iter", "4"))
    assert checkpoint.load_latest(model_dir).iteration == 2
    assert not list((model_dir / "checkpoints").glob(".tmp_*"))
    _no_half_files(ws.root)
    # merge: frames already written are whole, the rest are written after a re-run with room
    _says_disk_full(_run(ws, "merge", "--model", "saehd", "--model-name", "full"))
    _no_half_files(ws.root)
    filler.unlink()
    proc = _run(ws, "merge", "--model", "saehd", "--model-name", "full")
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged = list_images(ws.merged_dir)
    assert len(merged) == len(list_images(ws.frames_dir("dst")))
    assert meta_from_bytes((ws.aligned_dir("dst") / list_images(ws.aligned_dir("dst"))[0].name).read_bytes()) is not None
