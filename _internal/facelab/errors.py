"""The two kinds of failure a user meets, and the exit codes the CLI gives them.

- `UserError`: something the user can fix (a missing video, a bad option value). The CLI prints
  its message as one line and exits with `EXIT_USER_ERROR`; no traceback.
- Anything else is a crash: the CLI writes a crash log into the workspace and exits with
  `EXIT_CRASH` (see `facelab.log.write_crash_log`).
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USER_ERROR = 2
EXIT_CANCELLED = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix. The message says what is wrong, where, and what to do next."""


class ConfirmationNeeded(UserError):
    """A stage would delete or replace user data and its options do not say it may.

    Stages raise it before touching anything. The CLI asks the question on a terminal and, on
    "y", runs the stage again with `option` set to True; headless, it tells the user which
    flag says yes.
    """

    def __init__(self, question: str, option: str):
        self.question = question
        self.option = option
        flag = "--" + option.replace("_", "-")
        super().__init__(f"{question}; nothing was changed. Rerun with {flag} to go ahead")


OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation failure: Python's, PyTorch's on any device (CUDA, or the
    CPU allocator's RuntimeError), onnxruntime's. Imports nothing."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(exc, RuntimeError) or type(exc).__name__ in ("RuntimeException", "Fail"):  # onnxruntime's own types
        text = str(exc).lower()
        return any(word in text for word in OOM_WORDS)
    return False
