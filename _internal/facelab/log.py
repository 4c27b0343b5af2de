"""Logging that never breaks a progress bar, one tqdm style, and the crash log.

Log lines go through `tqdm.write`, so a warning printed while a bar runs appears above the bar
instead of cutting it in two (the habit of faceswap's `lib/logger.py`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import sys
import traceback
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class TqdmHandler(logging.Handler):
    """Writes log records with `tqdm.write` so they never tear a running bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbose: bool = False) -> None:
    """Route the `facelab` logger to stderr through tqdm; idempotent."""
    logger = logging.getLogger("facelab")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(logger.handlers):
        if isinstance(handler, TqdmHandler):
            logger.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.propagate = False


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
) -> tqdm:
    """One bar style for every long loop. Hidden when stderr is not a terminal (CI logs)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None,
        leave=False,
    )


def iterate(items: Sequence[T], desc: str, unit: str = "it") -> Iterator[T]:
    """`progress` over a sequence whose length is known."""
    yield from progress(items, total=len(items), desc=desc, unit=unit)


def _versions() -> list[str]:
    lines = [f"python {sys.version.split()[0]} ({sys.executable})", f"os {platform.platform()}"]
    for name in ("facelab", "numpy", "cv2", "torch", "PySide6", "imageio_ffmpeg"):
        module = sys.modules.get(name)
        if module is None:
            lines.append(f"{name}: not loaded")
            continue
        lines.append(f"{name} {getattr(module, '__version__', '?')}")
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            cuda = torch.cuda.is_available()
            device = torch.cuda.get_device_name(0) if cuda else "cpu"
            lines.append(f"device {device} (cuda available: {cuda})")
        except Exception as exc:  # noqa: BLE001 - the crash log must always be written
            lines.append(f"device: unknown ({exc})")
    return lines


def write_crash_log(folder: Path | None, argv: Sequence[str], exc: BaseException) -> Path:
    """Write traceback, versions, OS and device to `folder/crash_<time>.log`; return its path.

    Falls back to the system temp folder when `folder` cannot be written.
    """
    import tempfile

    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    text = "\n".join(
        [
            f"FaceLab crash log, {_dt.datetime.now().isoformat(timespec='seconds')}",
            "command: " + " ".join(argv),
            *_versions(),
            "",
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        ]
    )
    for candidate in ([folder] if folder is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            path = candidate / f"crash_{stamp}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError("no folder could take the crash log")
