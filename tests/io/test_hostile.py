"""Hostile and broken faces (issue 14; the files come from tests/hostile.py): every crafted file is one clear error for its face, the
stages skip it and name it once, and reading it costs bounded memory.

The files are made here from a real face: truncated segments, metadata of the wrong shape or
type, deeply nested JSON, a broken PNG text chunk, landmarks of the wrong length or not finite,
a zlib bomb, a DFL pickle whose shared sub-lists stand for 10^12 values, a mask or a face whose
header claims 30000 x 30000 pixels.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from facelab.io import faceimage as fi
from facelab.io.frames import write_bytes_atomic
from hostile import crafted_faces

RSS_LIMIT_MIB = 500


@pytest.fixture(scope="module")
def faces(train_workspace) -> dict[str, bytes]:
    import cv2

    from facelab.io.frames import list_images

    good = list_images(train_workspace.aligned_dir("src"))[0]
    jpg = good.read_bytes()
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    png = fi.encode_face(img, fi.meta_from_bytes(jpg), ".png")
    return crafted_faces(jpg, png)


def test_every_crafted_face_is_one_face_metadata_error_naming_the_file(faces):
    for name, data in faces.items():
        with pytest.raises(fi.FaceMetaError) as info:
            fi.meta_from_bytes(data, name)
        text = str(info.value)
        assert text.startswith(name) and "\n" not in text and len(text) < 400, text


def _peak_mib(code: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    wrapped = (f"import sys\n{code}\nfrom facelab.training.memory import process_peak_rss_mib\n"
               "print('PEAK_KIB', int(process_peak_rss_mib() * 1024))")  # VmHWM: ru_maxrss is inherited from pytest
    proc = subprocess.run([sys.executable, "-c", wrapped, *args], capture_output=True, text=True, timeout=600, check=False)
    peak = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KIB")]
    return proc, peak[0] / 1024 if peak else float("inf")


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS as Linux reports it")
def test_reading_them_all_stays_under_500_mb_in_a_fresh_process(faces, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, data in faces.items():
        (folder / name).write_bytes(data)
    code = ("from pathlib import Path\nfrom facelab.io import faceimage as fi\n"
            "for p in sorted(Path(sys.argv[1]).iterdir()):\n"
            "    try:\n        fi.read_meta(p)\n    except fi.FaceMetaError as e:\n        print('REFUSED', p.name)\n")  # fmt: skip
    proc, peak = _peak_mib(code, str(folder))
    assert proc.returncode == 0, proc.stderr
    assert sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("REFUSED")) == sorted(faces)
    assert peak < RSS_LIMIT_MIB, f"{peak:.0f} MiB"


def test_stages_skip_the_bad_faces_name_them_once_and_stay_bounded(faces, train_workspace, tmp_path, script):
    from conftest import copy_workspace

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    aligned = ws.aligned_dir("src")
    for name, data in faces.items():
        (aligned / f"zz_{name}").write_bytes(data)
    before = {p.name: p.read_bytes() for p in aligned.iterdir()}
    args = ("--workspace", str(ws.root), "--non-interactive")
    info = script("4.2_src_util_faceset_info", *args)
    assert info.returncode == 0, info.stderr
    listed = [line for line in info.stdout.splitlines() if line.startswith("cannot be used: ")]
    assert len(listed) == len(faces) and all(f"zz_{n}" in " ".join(listed) for n in faces)
    assert "Traceback" not in info.stderr
    # sorting: the good faces sorted, the bad ones kept, named once in the log
    sort = script("4.2_src_sort", *args, "--by", "hist")
    assert sort.returncode == 0, sort.stderr
    assert sort.stderr.count(f"{len(faces)} faces in") == 1 and "could not be read" in sort.stderr
    assert "Traceback" not in sort.stderr + sort.stdout
    kept = [p.read_bytes() for p in [*aligned.iterdir(), *aligned.parent.glob("aligned_trash/*")] if p.is_file()]
    assert all(data in kept for data in before.values())  # every file, good or bad, still exists (renamed or trashed)
    # training over them: the good faces are cached, the bad left out, in bounded memory
    from conftest import TINY

    code = "from facelab.cli import main\nrc = main(sys.argv[1:])\nprint('RC', rc)"
    proc, peak = _peak_mib(code, "train", *args, *TINY, "--target-iter", "1", "--no-memory-probe")
    assert "RC 0" in proc.stdout, proc.stderr
    assert "could not be read and are left out" in proc.stderr and "cached 10 src faces" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert peak < 1500  # the training itself; the hostile files add nothing measurable


def test_operating_system_errors_are_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from facelab import cli
    from facelab.stages import video

    for code, words in ((errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied"),
                        (errno.EROFS, "read-only"), (errno.ENAMETOOLONG, "path is too long")):  # fmt: skip
        def fail(*a, code=code, **k):  # noqa: ANN002, ANN003, ANN202
            raise OSError(code, os.strerror(code), str(tmp_path / "workspace" / "data_dst" / "00001.png"))

        monkeypatch.setattr(video, "denoise", fail)
        (tmp_path / "workspace").mkdir(exist_ok=True)
        rc = cli.main(["denoise", "--workspace", str(tmp_path / "workspace"), "--non-interactive"])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "00001.png" in err and err.count("\n") == 1 and "Traceback" not in err, err
    # an OSError that is not the user's to fix is still a crash with its log
    monkeypatch.setattr(video, "denoise", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EBADF, "Bad file descriptor")))
    assert cli.main(["denoise", "--workspace", str(tmp_path / "workspace"), "--non-interactive"]) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_rewritten_files_keep_their_permissions(tmp_path):
    path = tmp_path / "face.jpg"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o644
    fresh = tmp_path / "fresh.jpg"
    write_bytes_atomic(fresh, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~umask


def test_the_training_cache_says_how_much_disk_it_needs_before_writing(tmp_path, monkeypatch):
    import shutil as sh

    from facelab.errors import UserError
    from facelab.training import data

    real = sh.disk_usage
    monkeypatch.setattr(data.shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))
    with pytest.raises(UserError, match=r"too full .* needs 112 MB .* has 10 MB free"):
        data._preallocate(tmp_path / ".src.u8.tmp", 1000 * 5 * 100 * 100, "src")
    monkeypatch.undo()
    data._preallocate(tmp_path / ".src.u8.tmp", 5 << 20, "src")
    st = (tmp_path / ".src.u8.tmp").stat()
    assert st.st_size == 5 << 20 and (sys.platform == "win32" or st.st_blocks * 512 >= 5 << 20)  # allocated, not sparse
