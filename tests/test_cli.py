"""The CLI around stages: exit codes, one-line errors, crash logs, prompts on a real terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from facelab import cli
from terminal import run_in_terminal
from facelab.errors import EXIT_CRASH, EXIT_USER_ERROR


def test_unknown_workspace_is_one_clear_line(capsys, tmp_path):
    code = cli.main(["extract-video", "--side", "src", "--workspace", str(tmp_path / "nope"), "--non-interactive"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert err.count("\n") == 1 and "does not exist" in err and "1_clear_workspace" in err


def test_bad_flag_value_is_one_line_exit_2(capsys, tmp_path):
    code = cli.main(["extract-video", "--workspace", str(tmp_path), "--fps", "fast"])
    err = capsys.readouterr().err
    assert code == EXIT_USER_ERROR
    assert err.count("\n") == 1 and "'fast' is not a number" in err and "Traceback" not in err


def test_unknown_flag_for_built_stage_is_refused(capsys, ws):
    code = cli.main(["denoise", "--workspace", str(ws.root), "--frobnicate"])
    assert code == EXIT_USER_ERROR
    assert "unknown arguments: --frobnicate" in capsys.readouterr().err


def test_crash_writes_log_in_workspace_and_exits_1(capsys, ws, monkeypatch):
    def explode(_ws, _opts):
        raise RuntimeError("disk on fire")

    commands = cli._commands()
    commands["denoise"] = cli.Command("denoise", "test", commands["denoise"].options, explode)
    monkeypatch.setattr(cli, "_commands", lambda: commands)
    code = cli.main(["denoise", "--workspace", str(ws.root), "--non-interactive"])
    err = capsys.readouterr().err
    assert code == EXIT_CRASH
    logs = list(ws.logs_dir.glob("crash_*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "RuntimeError: disk on fire" in text and "Traceback" in text
    assert "python 3." in text and "os " in text and "numpy" in text
    assert "Traceback" not in err


def test_help_lists_every_stage(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("clear-workspace", "extract-video", "video-from-frames", "train", "merge", "doctor"):
        assert name in out


def test_doctor_finds_a_complete_installation(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "BAD" not in out and "face models" in out and "ffmpeg" in out


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_prompts_on_a_terminal_reask_and_give_up_with_exit_2(ws, media):
    (ws.root / "data_src.mp4").write_bytes(media("carphone.mp4").read_bytes())
    code, out = run_in_terminal(
        ["extract-video", "--side", "src", "--workspace", str(ws.root)], ["?", "abc", "500", "fast"]
    )
    assert "[0] FPS ( 0-240 ?:help ) : " in out
    assert "frames per second to extract" in out  # the '?' help
    assert "'abc' is not a number (expected 0-240), try again" in out
    assert "500 is out of range (expected 0-240), try again" in out
    assert code == EXIT_USER_ERROR and "gave up after 3 invalid answers" in out
    assert not list(ws.frames_dir("src").glob("*.png"))


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_terminal_user_declines_deleting_frames(ws, media):
    (ws.root / "data_dst.mp4").write_bytes(media("carphone.mp4").read_bytes())
    old = ws.frames_dir("dst") / "00001.png"
    old.write_bytes(b"user frame")
    code, out = run_in_terminal(["extract-video", "--side", "dst", "--workspace", str(ws.root)], ["", "n"])
    assert "already holds 1 frames that will be deleted. Continue? ( y/n ?:help )" in out
    assert code == 3 and "nothing was changed" in out
    assert old.read_bytes() == b"user frame"


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_terminal_user_accepts_defaults_and_confirms(ws, media):
    (ws.root / "data_dst.mp4").write_bytes(media("carphone.mp4").read_bytes())
    (ws.frames_dir("dst") / "00001.jpg").write_bytes(b"old frame of another format")
    code, out = run_in_terminal(["extract-video", "--side", "dst", "--workspace", str(ws.root)], ["", "y"])
    assert code == 0, out
    assert "FPS" not in out  # data_dst is always full rate: not asked
    assert len(list(ws.frames_dir("dst").glob("*.png"))) == 120
    assert not (ws.frames_dir("dst") / "00001.jpg").exists()
    assert "[extract-video] 120 frames" in out and "replaced 1 old frames" in out


def test_every_cli_module_is_importable_without_qt_or_torch():
    # A headless run must not import Qt (the merger and previews import it on demand), and a
    # command that runs no network must not pay for importing torch.
    import subprocess

    for heavy in ("PySide6", "torch"):
        code = f"import sys, facelab.cli; facelab.cli._commands(); sys.exit({heavy!r} in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, f"{heavy} is imported"


def test_faceset_dump_does_not_import_torch(tmp_path):
    import subprocess

    import numpy as np

    from facelab.core.landmarks import FaceType, get_transform_mat, transform_points
    from facelab.io.faceimage import FaceMeta, write_face

    lm = np.array([[100 + 40 * np.cos(a), 120 + 50 * np.sin(a)] for a in np.linspace(0, 6, 68)], np.float32)
    mat = get_transform_mat(lm, 256, FaceType.WHOLE_FACE)
    meta = FaceMeta(face_type=FaceType.WHOLE_FACE, landmarks=transform_points(lm, mat).astype(np.float32),
                    source_filename="00001.png", source_landmarks=lm, image_to_face_mat=mat)  # fmt: skip
    write_face(tmp_path / "00001_0.jpg", np.full((256, 256, 3), 128, np.uint8), meta, 90)
    code = ("import sys; from facelab.cli import main; rc = main(['faceset', 'dump', sys.argv[1]]); "
            "sys.exit(100 if 'torch' in sys.modules else rc)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert '"file": "00001_0.jpg"' in proc.stdout.replace('"file":"', '"file": "')


def test_package_has_no_print_in_library_code():
    """Library code reports through logging and the stage's Report; only the CLI (and the
    prompts in options.py) write to the terminal, and scripts' `if __name__ == "__main__"` blocks."""
    import re

    root = Path(cli.__file__).parent
    writes = re.compile(r"(^|[^.\w])print\(|sys\.(stdout|stderr)\.write\(")
    offenders = []
    for p in root.rglob("*.py"):
        if p.name in ("cli.py", "__main__.py", "options.py"):
            continue
        text = p.read_text().split('if __name__ == "__main__":')[0]
        offenders += [f"{p.relative_to(root)}:{i}" for i, line in enumerate(text.splitlines(), 1) if writes.search(line)]
    assert offenders == []
