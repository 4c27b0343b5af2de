"""What every stage returns: counts and time, printed by the CLI as the stage's last line."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Report:
    """A stage's result.

    Attributes:
        stage: the sub-command name, e.g. "extract-video".
        summary: one line for the user: items in, out, skipped, where the output is.
        seconds: wall time of the stage.
        counts: machine-readable numbers behind the summary (frames, faces, skipped, ...).
    """

    stage: str
    summary: str
    seconds: float
    counts: dict[str, int | float | str] = field(default_factory=dict)

    def line(self) -> str:
        return f"[{self.stage}] {self.summary} ({self.seconds:.1f} s)"
