"""`python -m facelab <stage> [options]`: one sub-command per stage (ARCHITECTURE.md §1, §4).

The CLI does everything around a stage so that stages stay pure:
1. parse flags (one per option spec, see `facelab.options`);
2. resolve options: defaults -> saved -> flags -> prompt (prompts only on a terminal and without
   `--non-interactive`);
3. run the stage; if it asks for a confirmation, ask it (or, headless, name the flag);
4. print the stage's one-line report.

Exit codes (`facelab.errors`): 0 done, 1 crash (a crash log is written into workspace/logs and
its path printed), 2 user error (one line, no traceback), 3 cancelled by the user, 130 Ctrl+C.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Sequence

from facelab import __version__
from facelab.errors import (
    EXIT_CANCELLED, EXIT_CRASH, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, ConfirmationNeeded, UserError,
)  # fmt: skip
from facelab.log import setup_logging, write_crash_log
from facelab.options import add_option_flags, ask_yes_no, given_from_namespace, resolve_options
from facelab.report import Report
from facelab.workspace import Workspace


@dataclass(frozen=True)
class Command:
    """A sub-command.

    Attributes:
        name: the sub-command, as scripts call it.
        help: one line for `--help`.
        options: options dataclass (see `facelab.options`), or None for none.
        run: the stage, `run(ws, opts) -> Report`.
        emits: `run` is a generator yielding output lines (printed to stdout) and returning
            the Report, whose line then goes to stderr (so stdout stays machine-readable).
        resolve: `resolve(ws, flags, interactive) -> options` when the options depend on the
            workspace (training: which model, its saved options); else the generic resolution.
    """

    name: str
    help: str
    options: type | None
    run: Callable[[Workspace, Any], Any]
    emits: bool = False
    resolve: Callable[[Workspace, dict, bool], Any] | None = None


def _commands() -> dict[str, Command]:
    from facelab import demo
    from facelab.stages import clear, export, extract, faceset, import_dfl, import_faceswap, merge, sort, train, video, xseg
    from facelab.training.options import TrainOptions

    built = [
        Command("demo", "0: the whole pipeline on real demo media, headless, into the workspace", demo.DemoOptions, demo.demo),
        Command("clear-workspace", "1: delete everything in the workspace and recreate its folders",
                clear.ClearOptions, clear.clear_workspace),
        Command("extract-video", "2/3: extract frames from data_src.* or data_dst.*",
                video.ExtractVideoOptions, video.extract_video),
        Command("cut-video", "3: cut a piece out of a video", video.CutVideoOptions, video.cut_video),
        Command("denoise", "3: temporal denoise of extracted frames", video.DenoiseOptions, video.denoise),
        Command("extract", "4/5: detect faces and write aligned faces (+ debug overlays)",
                extract.ExtractOptions, extract.extract),
        Command("sort", "4.2/5.2: sort an aligned faceset (trash goes to <aligned>_trash)",
                sort.SortOptions, sort.sort_faceset),
        Command("faceset", "4.2/5.2: faceset tools: info, pack/unpack, resize, metadata save/restore, export masks, ...",
                faceset.FacesetOptions, faceset.run, emits=True),
        Command("train", "6: train SAEHD or Quick96 (Ctrl+C saves and stops)", TrainOptions, train.train,
                resolve=train.resolve_train),
        Command("import-dfl-model", "6: import DeepFaceLab SAEHD / Quick96 models (keeps their training)",
                import_dfl.ImportOptions, import_dfl.import_dfl_model),
        Command("import-faceswap", "4.2/5.2: import faceswap's extraction (alignments file + frames, or its face PNGs)",
                import_faceswap.ImportFaceswapOptions, import_faceswap.import_faceswap),
        Command("xseg", "5.XSeg: mask editor, training, apply / remove / remove-labels / fetch", xseg.XSegOptions, xseg.run),
        Command("merge", "7: merge the swapped face into the dst frames (batch, or the merger window)", merge.MergeOptions, merge.merge,
                resolve=merge.resolve_merge),
        Command("export", "6: export a trained model to ONNX / DeepFaceLive .dfm", export.ExportOptions, export.export),
        Command("timelapse-video", "6/8: a model's training timelapse images -> model/<name>/timelapse.mp4",
                video.TimelapseVideoOptions, video.timelapse_video),
        Command("video-from-frames", "8: data_dst/merged frames -> result.mp4 / .mov with data_dst's audio",
                video.MergedVideoOptions, video.video_from_frames),
    ]  # fmt: skip
    return {c.name: c for c in built}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (and exit 2), not usage + traceback."""

    def error(self, message: str) -> NoReturn:
        stage = self.prog.split()[-1] if " " in self.prog else ""
        sys.stderr.write(f"error: {message} (see: python -m facelab {stage} --help)\n".replace("  ", " "))
        raise SystemExit(EXIT_USER_ERROR)


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", default=os.environ.get("FACELAB_WORKSPACE", "workspace"),
                        help="workspace folder (default: ./workspace)")  # fmt: skip
    common.add_argument("--non-interactive", action="store_true",
                        help="never prompt: take saved values or defaults (also when no terminal)")  # fmt: skip
    common.add_argument("-v", "--verbose", action="store_true", help="more log output")
    return common


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = _Parser(prog="facelab", description="FaceLab: numbered face-swap stages over a workspace.")
    parser.add_argument("--version", action="version", version=f"FaceLab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", parser_class=_Parser)
    sub.required = True
    common = _common_flags()
    for cmd in commands.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
        if cmd.options is not None:
            add_option_flags(p, cmd.options)
    p = sub.add_parser("doctor", help="check the installation (versions, ffmpeg, face models, device)")
    p.add_argument("--workspace", default=os.environ.get("FACELAB_WORKSPACE", "workspace"), help=argparse.SUPPRESS)
    return parser


def _is_interactive(args: argparse.Namespace) -> bool:
    return not args.non_interactive and sys.stdin.isatty() and sys.stdout.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    parser = build_parser(commands)
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line flag error
        return int(exc.code or 0)
    setup_logging(getattr(args, "verbose", False))
    ws = Workspace.at(args.workspace)
    try:
        if args.command == "doctor":
            return _doctor()
        cmd = commands[args.command]
        if unknown:
            raise UserError(f"unknown arguments: {' '.join(unknown)} (see: python -m facelab {cmd.name} --help)")
        return _run_stage(cmd, ws, args)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (OSError, MemoryError) as exc:
        line = system_error_line(exc)
        if line is None:
            return _crash(ws, argv, exc)
        sys.stderr.write(f"error: {line}\n")
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - every crash becomes a log file and exit 1
        return _crash(ws, argv, exc)


def _crash(ws: Workspace, argv: list[str], exc: BaseException) -> int:
    folder = ws.logs_dir if ws.root.is_dir() else None
    path = write_crash_log(folder, ["facelab", *argv], exc)
    sys.stderr.write(
        f"FaceLab crashed: {type(exc).__name__}: {exc}\n"
        f"The details are in {path}; please attach that file when you report the problem.\n"
    )
    return EXIT_CRASH


_SYSTEM_ERRORS = {  # errno name -> (what happened, what to do)
    "ENOSPC": ("the disk is full", "free some space on it and run again (the stage goes on where it stopped)"),
    "EDQUOT": ("the disk quota is used up", "free some space and run again"),
    "EACCES": ("permission denied", "check that you may write there and that no other program holds the file open"),
    "EPERM": ("the system does not permit this", "check the file's permissions, or run from a folder you own"),
    "EROFS": ("the disk is read-only", "move the workspace to a writable disk"),
    "ENAMETOOLONG": ("the path is too long", "move the workspace to a shorter path (e.g. C:\\FaceLab)"),
    "EMFILE": ("too many open files", "close other programs and run again"),
}


def system_error_line(exc: BaseException) -> str | None:
    """One line for an operating-system error a user can fix (disk full, permissions, read-only,
    path too long, out of memory); None for the others, which are crashes."""
    import errno

    if isinstance(exc, MemoryError):
        return "out of memory: close other programs, or lower the batch size / resolution, and run again"
    name = errno.errorcode.get(getattr(exc, "errno", None) or -1, "")
    if name not in _SYSTEM_ERRORS:
        return None
    what, todo = _SYSTEM_ERRORS[name]
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{what}{where}: {todo}"


def _doctor() -> int:
    from facelab.doctor import check_installation

    checks = check_installation()
    for check in checks:
        print(f"{'ok ' if check.ok else 'BAD'}  {check.name:<28} {check.detail}")
    bad = [c.name for c in checks if not c.ok]
    if bad:
        from facelab.runtime import repair_hint

        sys.stdout.flush()
        raise UserError(f"the installation is incomplete ({', '.join(bad)}): {repair_hint()}")
    print("FaceLab is installed correctly.")
    return EXIT_OK


def yield_lines(lines: Any) -> Report:
    """Print each line a generator stage yields; return the Report it returns."""
    while True:
        try:
            print(next(lines), flush=False)
        except StopIteration as done:
            return done.value


def _run_stage(cmd: Command, ws: Workspace, args: argparse.Namespace) -> int:
    interactive = _is_interactive(args)
    opts = None
    if cmd.options is not None:
        given = given_from_namespace(cmd.options, args)
        if cmd.resolve is not None:
            opts = cmd.resolve(ws, given, interactive)
        else:
            opts = resolve_options(cmd.options, given, interactive=interactive)
    while True:
        try:
            if cmd.emits:
                report = yield_lines(cmd.run(ws, opts))
                sys.stderr.write(report.line() + "\n")
                return EXIT_OK
            report = cmd.run(ws, opts)
            break
        except ConfirmationNeeded as question:
            if not interactive:
                raise
            if not ask_yes_no(f"{question.question}. Continue?", False):
                print("Cancelled: nothing was changed.")
                return EXIT_CANCELLED
            opts = dataclasses.replace(opts, **{question.option: True})
    print(report.line())
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
