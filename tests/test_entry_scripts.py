"""The numbered scripts: generated from one table, present, runnable, passing arguments through."""

from __future__ import annotations

import os

import pytest

from facelab.entry_scripts import ENTRY_SCRIPTS, expected_files
from facelab.workspace import Workspace
from media import REPO

DESIGN_CARD_ROOT_FILES = [
    "2_extract_images_src.bat", "4_src_faceset_extract.bat", "5_xseg_edit.bat",
    "6_train_SAEHD.bat", "7_merge_SAEHD.bat", "8_merged_to_mp4.bat",
]  # fmt: skip


def test_scripts_on_disk_match_the_table():
    stale = [str(p.relative_to(REPO)) for p, text in expected_files(REPO).items()
             if not p.exists() or p.read_bytes() != text.encode()]  # fmt: skip
    assert stale == [], "run: _internal/venv/bin/python -m facelab.entry_scripts"


def test_design_card_files_exist_and_bat_pauses():
    for name in DESIGN_CARD_ROOT_FILES:
        text = (REPO / name).read_text()
        assert "-m facelab " in text and "%*" in text and "\npause" in text.replace("\r", "")


@pytest.mark.skipif(os.name == "nt", reason="POSIX scripts")
def test_sh_twins_are_executable():
    for name in ENTRY_SCRIPTS:
        assert os.access(REPO / "scripts" / f"{name}.sh", os.X_OK), name


@pytest.mark.parametrize("name", [n for n in ENTRY_SCRIPTS if ("_util_" in n and "import_" not in n) or n.endswith("_sort")])
def test_faceset_scripts_on_an_empty_faceset_say_so(name, ws, script):
    proc = script(name, "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "has no faces" in proc.stderr or "has no faceset.fpk" in proc.stderr or "does not exist" in proc.stderr, proc.stderr


def test_user_arguments_pass_through_and_workspace_override_wins(tmp_path, script):
    ws = Workspace.at(tmp_path / "other_ws")
    ws.create_layout()
    proc = script("8_merged_to_mp4", "--workspace", str(ws.root), "--bitrate", "8")
    assert proc.returncode == 2 and "other_ws/data_dst/merged has no frames" in proc.stderr
    proc = script("8_merged_to_mp4", "--workspace", str(ws.root), "--bitrate", "0")
    assert proc.returncode == 2 and "0 is out of range" in proc.stderr
