"""Drive `python -m facelab ...` on a pseudo-terminal, answering prompts as a person would."""

from __future__ import annotations

import os
import select
import sys

PROMPT = b") : "


def run_in_terminal(args: list[str], answers: list[str], timeout: float = 120, markers: tuple[bytes, ...] = (PROMPT,)) -> tuple[int, str]:
    """Answer each prompt (a new occurrence of any marker) with the next answer, then with Enter."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child: a real terminal on stdin/stdout
        os.execv(sys.executable, [sys.executable, "-m", "facelab", *args])
    output = b""
    sent = 0
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"no output for {timeout} s; so far:\n{output.decode(errors='replace')}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        asked = sum(output.count(m) for m in markers)
        while asked > sent:
            os.write(fd, ((answers[sent] if sent < len(answers) else "") + "\n").encode())
            sent += 1
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace").replace("\r\n", "\n")
