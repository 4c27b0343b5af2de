#!/usr/bin/env python3
"""Build the portable FaceLab folder: unzip anywhere, double-click a numbered script.

    python3 packaging/build_portable.py --base system --variant cpu --out OUT
    python3 packaging/build_portable.py --base release --variant cuda --out OUT   (the release workflow)
    python3 packaging/build_portable.py --base DIR --variant cpu --out OUT --wheels CACHE

The folder it writes (README "Download and run", ../shared/design/PORTABLE.md):

    OUT/  README.md LICENSE NOTICE, the numbered .bat files, scripts/*.sh, workspace/ (empty layout)
      _internal/python/          the base interpreter, untouched, plus its ._pth (isolated mode)
      _internal/site-packages/   every dependency, pip install --target from packaging/lock-<variant>.txt
      _internal/facelab/         the package
      _internal/demo_media/      the demo's photos and clip (fetched now, never at run time)
      _internal/build-info.json  FaceLab version, git commit, variant, Python and package versions

`--base`:
  system   this machine's own interpreter and standard library, copied (its site-packages left
           out). A stand-in for local builds and tests: its ssl and libffi come from the system.
  release  the pinned python-build-standalone `install_only` build for this platform (URL and
           sha256 in RELEASE_BASES below), downloaded, checked and unpacked.
  DIR      an interpreter folder already unpacked (python-build-standalone's `python/`, or the
           python.org embeddable zip unpacked), copied as it is.

Python is made isolated by a `._pth` file next to the executable: sys.path is exactly the
folders it lists, and PYTHONPATH, PYTHONHOME and the user's site-packages are ignored (CPython's
"sys.path initialization" documentation, "_pth files"; the same on Linux since 3.11).
Every dependency is installed by the pip of the Python running this script, for the base's Python
version, so the two may differ; pip itself is not put into the bundle.

A bad argument or a failed step prints one line and exits 2; OUT is written only at the end
(built beside it and renamed), so a failed build leaves no half-made folder under that name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
VARIANTS = ("cpu", "cuda")
TORCH_INDEX = {  # where each variant's torch build comes from (PyTorch's own wheel index)
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
}
# The release bases: python-build-standalone `install_only` builds, pinned by URL and sha256.
# To move to another Python, take both values from that release's SHA256SUMS file.
PBS = "https://github.com/astral-sh/python-build-standalone/releases/download/20260610"
RELEASE_BASES = {
    ("Linux", "x86_64"): (f"{PBS}/cpython-3.12.13%2B20260610-x86_64-unknown-linux-gnu-install_only.tar.gz",
                          "c218f50baeb2c06a30c2f03db5986b2bad6ab7c8a52faad2d5a59bda0677b93a"),
    ("Windows", "AMD64"): (f"{PBS}/cpython-3.12.13%2B20260610-x86_64-pc-windows-msvc-install_only.tar.gz",
                           "f5e4d9f856567493776f3d1e832c939fbaba5dcbcc5e0492a82ecfceea83b316"),
}  # fmt: skip
# torch >= 2.4 on Windows fails to import (WinError 126, fbgemm.dll) without these beside python.exe.
WINDOWS_RUNTIME_DLLS = ("vcruntime140.dll", "vcruntime140_1.dll", "msvcp140.dll", "libomp140.x86_64.dll")
# Left out of a copied standard library: its tests, IDLE, Tk demos, and ensurepip (no pip in the bundle).
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "ensurepip", "__phello__"}
TOP_FILES = ("README.md", "LICENSE", "NOTICE")
DEV_ONLY = ("pytest", "iniconfig", "pluggy", "pygments", "pip")


class BuildError(Exception):
    """A one-line reason the build cannot go on (exit 2)."""


@dataclass(frozen=True)
class Base:
    """The interpreter to bundle, as found in its folder."""

    root: Path  # the folder copied into _internal/python
    exe: Path  # the interpreter, inside root
    version: tuple[int, int]
    windows: bool


# ---------------------------------------------------------------------------------------------
# the base interpreter


def _interpreter_in(folder: Path) -> Path | None:
    for rel in ("python.exe", "bin/python3", "bin/python"):
        if (folder / rel).is_file():
            return folder / rel
    found = sorted(folder.glob("bin/python3.[0-9]*"))
    return next((p for p in found if p.is_file() and not p.name.endswith("-config")), None)


def _version_of(exe: Path) -> tuple[int, int]:
    try:
        out = subprocess.run([str(exe), "-I", "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
        major, minor = (int(v) for v in out.split())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise BuildError(f"the interpreter {exe} does not run here ({exc})") from None
    if (major, minor) < (3, 10):
        raise BuildError(f"the interpreter {exe} is Python {major}.{minor}; FaceLab needs 3.10 or newer")
    return major, minor


def _fetch_release_base(cache: Path) -> Path:
    key = (platform.system(), platform.machine())
    if key not in RELEASE_BASES:
        raise BuildError(f"no release base interpreter is pinned for {key[0]} {key[1]} (see RELEASE_BASES)")
    url, sha256 = RELEASE_BASES[key]
    archive = cache / url.rsplit("/", 1)[1].replace("%2B", "+")
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, open(archive.with_suffix(".part"), "wb") as fh:
                shutil.copyfileobj(resp, fh)
        except OSError as exc:
            raise BuildError(f"could not download the base interpreter {url} ({exc})") from None
        os.replace(archive.with_suffix(".part"), archive)
    unpacked = cache / (archive.name + ".d")
    _unpack_checked(archive, sha256, unpacked)
    return unpacked / "python"


def _unpack_checked(archive: Path, sha256: str, into: Path) -> None:
    """Unpack a .tar.gz or .zip whose sha256 is `sha256`; refuse a mismatch or a path leaving `into`."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != sha256:
        raise BuildError(f"{archive.name} has sha256 {digest}, not the pinned {sha256}: delete it and build again")
    if into.is_dir():
        return
    tmp = Path(tempfile.mkdtemp(dir=into.parent, prefix=into.name + ".part"))
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)  # zipfile strips absolute and parent parts of member names
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")  # refuses members that leave tmp
    os.replace(tmp, into)


def find_base(spec: str, cache: Path) -> Base:
    if spec == "system":
        exe = Path(sys.executable).resolve()
        root = Path(sys.base_prefix).resolve()
        return Base(root, exe, sys.version_info[:2], os.name == "nt")
    folder = _fetch_release_base(cache) if spec == "release" else Path(spec).expanduser().resolve()
    if not folder.is_dir():
        raise BuildError(f"--base {spec}: no such folder")
    exe = _interpreter_in(folder)
    if exe is None:
        raise BuildError(f"--base {spec}: no Python interpreter in {folder} (expected python.exe or bin/python3)")
    return Base(folder, exe, _version_of(exe), exe.suffix == ".exe")


def _copy_system_base(base: Base, dest: Path) -> Path:
    """This machine's interpreter and standard library, laid out as an install_only build."""
    x, y = base.version
    if base.windows:
        shutil.copytree(base.root, dest, ignore=shutil.ignore_patterns("site-packages", "Scripts", "Doc", "include",
                                                                       "libs", "tcl", "Tools", "test"))  # fmt: skip
        return dest / "python.exe"
    exe = dest / "bin" / f"python{x}.{y}"
    exe.parent.mkdir(parents=True)
    shutil.copy2(base.exe, exe)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, dest / "lib" / f"python{x}.{y}", symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP])  # fmt: skip
    dynload = Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload"
    if dynload.is_dir() and not (dest / "lib" / f"python{x}.{y}" / "lib-dynload").exists():
        shutil.copytree(dynload, dest / "lib" / f"python{x}.{y}" / "lib-dynload")
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):  # libpython beside the stdlib; _setenv.sh puts lib/ first
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        if libdir and name and (Path(libdir) / name).is_file():
            shutil.copy2(Path(libdir) / name, dest / "lib" / name)
    return exe


def install_base(base: Base, spec: str, dest: Path) -> Path:
    """Copy the interpreter to `dest` and write its ._pth; returns the bundle's interpreter."""
    if spec == "system":
        exe = _copy_system_base(base, dest)
    else:
        shutil.copytree(base.root, dest, symlinks=True)
        exe = dest / base.exe.relative_to(base.root)
    x, y = base.version
    if base.windows:
        entries = [e for e in (f"python{x}{y}.zip", "Lib", "DLLs") if (dest / e).exists()]
        entries += [".", "..\\site-packages", "..", "import site"]
        for old in dest.glob("python*._pth"):  # the embeddable zip ships its own
            old.unlink()
        (dest / f"python{x}{y}._pth").write_text("\n".join(entries) + "\n")
        return exe
    real = exe.resolve()
    pth = "\n".join([f"../lib/python{x}.{y}", f"../lib/python{x}.{y}/lib-dynload", "../../site-packages", "../.."])
    (real.parent / f"{real.name}._pth").write_text(pth + "\n")
    python3 = real.parent / "python3"
    if not python3.exists():
        python3.symlink_to(real.name)  # the name _setenv.sh runs; a link finds the real name's ._pth
    elif not python3.is_symlink():
        (real.parent / "python3._pth").write_text(pth + "\n")
    return python3


# ---------------------------------------------------------------------------------------------
# packages


def read_lock(variant: str) -> tuple[list[str], list[str]]:
    """The lock file's pins: (resolved normally, installed with --no-deps)."""
    path = PACKAGING / f"lock-{variant}.txt"
    normal, no_deps = [], []
    for line in path.read_text().splitlines():
        req, _, comment = line.partition("#")
        if req.strip():
            (no_deps if "no-deps" in comment else normal).append(req.strip())
    return normal, no_deps


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["no output"]
        raise BuildError(f"pip failed {what}: {last[-1]}")


def install_packages(variant: str, base: Base, site: Path, wheels: Path | None, torch_index: str, work: Path) -> None:
    normal, no_deps = read_lock(variant)
    target = ["--target", str(site), "--no-compile"]
    if base.version != sys.version_info[:2]:  # pip installs for the base's Python, not this one
        target += ["--python-version", "{}.{}".format(*base.version), "--only-binary=:all:"]
    links = ["--find-links", str(work / "torch")] + (["--find-links", str(wheels)] if wheels else [])
    torch_pin = next((r for r in normal if r.split("==")[0].strip().lower() == "torch"), None)
    if torch_pin and torch_index != "none":  # torch alone from PyTorch's index: the variant's build
        extra = ["--python-version", "{}.{}".format(*base.version), "--only-binary=:all:"] if "--python-version" in target else []
        _pip(["download", "--no-deps", "-q", "-d", str(work / "torch"), "--extra-index-url", torch_index, *links,
              *extra, torch_pin], f"fetching {torch_pin} from {torch_index}")  # fmt: skip
    _pip(["install", "-q", *target, *links, *normal], f"installing packaging/lock-{variant}.txt")
    if no_deps:
        _pip(["install", "-q", "--no-deps", *target, *links, *no_deps], f"installing {' '.join(no_deps)}")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts whose #! names this machine's Python
    bad = [d.name for d in site.glob("*.dist-info") if d.name.split("-")[0].lower() in DEV_ONLY]
    if bad:
        raise BuildError(f"development packages ended up in the bundle: {', '.join(bad)} (check the lock file)")


def package_versions(site: Path) -> dict[str, str]:
    import importlib.metadata as md

    return dict(sorted((d.metadata["Name"], d.version) for d in md.distributions(path=[str(site)])))


# ---------------------------------------------------------------------------------------------
# FaceLab itself


def copy_facelab(out: Path) -> None:
    internal = out / "_internal"
    shutil.copytree(REPO / "_internal" / "facelab", internal / "facelab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    shutil.copy2(REPO / "_internal" / "setenv.bat", internal / "setenv.bat")
    for name in TOP_FILES:
        if not (REPO / name).is_file():
            raise BuildError(f"{name} is missing from the checkout")
        shutil.copy2(REPO / name, out / name)
    sys.path.insert(0, str(REPO / "_internal"))
    from facelab.entry_scripts import BAT_HELPER, SH_HELPER, expected_files
    from facelab.workspace import Workspace

    (out / "scripts").mkdir()
    for path, text in expected_files(out).items():
        if path.relative_to(out).as_posix() != BAT_HELPER:
            path.write_bytes(text.encode())
            if path.suffix == ".sh":
                path.chmod(0o755)
    assert (out / SH_HELPER).is_file()
    Workspace.at(out / "workspace").create_layout()


def fetch_demo_media(out: Path) -> None:
    """The demo's files, unpacked now: at run time nothing is fetched and nothing written here."""
    from facelab.media import DEMO_FILES, MediaUnavailable, media_file

    dest = out / "_internal" / "demo_media"
    have = REPO / "_internal" / "demo_media" / "packages"  # what setup already fetched
    if have.is_dir():
        shutil.copytree(have, dest / "packages")
    try:
        for name in DEMO_FILES:
            media_file(name, dest)
    except MediaUnavailable as exc:
        raise BuildError(f"the demo media could not be fetched: {exc}") from None
    shutil.rmtree(dest / "packages", ignore_errors=True)


def compile_all(python: Path, out: Path, base: Base) -> None:
    """Byte-code for everything, written now (at run time nothing writes into _internal).

    FaceLab's and the packages' files use unchecked hashes: valid whatever the unpacker does to
    file times. Paths inside are made relative to the folder, so no build path leaks into it.
    """
    env = {"PATH": os.environ.get("PATH", ""), "LD_LIBRARY_PATH": str(python.parent.parent / "lib")}
    internal = out / "_internal"
    # the base's own files keep their byte-code; only what it lacks is compiled (timestamp mode)
    for folder, mode in (("site-packages", "unchecked-hash"), ("facelab", "unchecked-hash"), ("python", "timestamp")):
        cmd = [str(python), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", mode,
               "-s", str(out), "-p", "", str(internal / folder)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 and folder == "facelab":  # packages may hold files for other Pythons
            raise BuildError(f"byte-compiling {folder} failed: {(proc.stdout + proc.stderr).strip()[-300:]}")


def check_windows_runtime(python_dir: Path, dlls: Path | None) -> None:
    for name in WINDOWS_RUNTIME_DLLS:
        if not (python_dir / name).is_file() and dlls is not None and (dlls / name).is_file():
            shutil.copy2(dlls / name, python_dir / name)
    missing = [n for n in WINDOWS_RUNTIME_DLLS if not (python_dir / n).is_file()]
    if missing:
        raise BuildError(f"the Windows bundle lacks {', '.join(missing)} beside python.exe "
                         "(copy them from the MSVC redistributable, or pass --msvc-dlls DIR)")  # fmt: skip


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+local-changes" if dirty else "")


def folder_size(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------------------------------------


def build(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    out = Path(args.out).expanduser().resolve()
    if args.variant not in VARIANTS:
        raise BuildError(f"unknown --variant {args.variant!r}: choose {' or '.join(VARIANTS)}")
    if out.exists() and not args.overwrite:
        raise BuildError(f"{out} exists: choose another --out, or add --overwrite to replace it")
    wheels = Path(args.wheels).expanduser().resolve() if args.wheels else None
    if wheels is not None and not wheels.is_dir():
        raise BuildError(f"--wheels {args.wheels}: no such folder")
    cache = Path(args.cache).expanduser().resolve()
    base = find_base(args.base, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        stage = work / "FaceLab"
        say = (lambda msg: sys.stderr.write(f"[build] {msg}\n")) if not args.quiet else (lambda msg: None)
        say(f"base interpreter: {base.exe} (Python {base.version[0]}.{base.version[1]})")
        python = install_base(base, args.base, stage / "_internal" / "python")
        if base.windows:
            check_windows_runtime(python.parent, Path(args.msvc_dlls) if args.msvc_dlls else None)
        say(f"packages from packaging/lock-{args.variant}.txt")
        site = stage / "_internal" / "site-packages"
        install_packages(args.variant, base, site, wheels, args.torch_index or TORCH_INDEX[args.variant], work)
        say("FaceLab, scripts, workspace and demo media")
        copy_facelab(stage)
        fetch_demo_media(stage)
        say("byte-compiling")
        compile_all(python, stage, base)
        info = {
            "facelab": _facelab_version(), "commit": git_commit(), "variant": args.variant,
            "python": "{}.{}".format(*base.version), "platform": f"{platform.system()} {platform.machine()}",
            "base": "system (a stand-in: for testing only)" if args.base == "system" else str(args.base),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "packages": package_versions(site),
        }  # fmt: skip
        (stage / "_internal" / "build-info.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = folder_size(out)
    sys.stdout.write(f"[build] FaceLab {info['facelab']} ({args.variant}, Python {info['python']}) built in {out}: "
                     f"{size / 2**30:.2f} GB, {time.perf_counter() - started:.0f} s\n")  # fmt: skip
    return out


def _facelab_version() -> str:
    text = (REPO / "_internal" / "facelab" / "__init__.py").read_text()
    return text.split('__version__ = "', 1)[1].split('"', 1)[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="system | release | an unpacked interpreter folder")
    p.add_argument("--variant", required=True, help="cpu | cuda (which torch build)")
    p.add_argument("--out", required=True, help="the FaceLab folder to write (must not exist, unless --overwrite)")
    p.add_argument("--wheels", help="a folder of wheels to install from before the package registry")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--torch-index", help="where torch comes from (default: PyTorch's index for the variant; 'none': the registry)")
    p.add_argument("--msvc-dlls", help="Windows: a folder holding the MSVC runtime DLLs to put beside python.exe")
    p.add_argument("--cache", default=str(PACKAGING / ".cache"), help="where --base release is downloaded (default: packaging/.cache)")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        build(parse_args(argv))
    except BuildError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"error: {exc.strerror or exc} ({exc.filename or 'build folder'})\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
