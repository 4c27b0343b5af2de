"""Every path of the fixed workspace layout (ARCHITECTURE.md §2, dfl-spec §2).

```
workspace/data_src.mp4            source person video (any container ffmpeg reads)
workspace/data_dst.mp4            target video whose face is replaced
workspace/data_src/00001.png ...  frames, 5 digits from 1
workspace/data_src/aligned/       aligned faces; aligned_debug/ overlays
workspace/data_dst/...            the same, plus merged/ and merged_mask/
workspace/model/                  one folder per model
workspace/result.mp4, result_mask.mp4
workspace/logs/                   crash logs
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facelab.errors import UserError
from facelab.types import Side

VIDEO_EXTENSIONS = (
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
    ".mts", ".m2ts", ".3gp", ".gif",
)  # fmt: skip

PLACEHOLDER = ".keep"
"""Empty file that keeps a layout folder in git (user data in it is git-ignored)."""


@dataclass(frozen=True)
class Workspace:
    """The workspace folder; all paths derive from `root`."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> Workspace:
        return cls(Path(path).expanduser().resolve())

    def frames_dir(self, side: Side) -> Path:
        return self.root / f"data_{side}"

    def aligned_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned"

    def aligned_debug_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned_debug"

    @property
    def merged_dir(self) -> Path:
        return self.root / "data_dst" / "merged"

    @property
    def merged_mask_dir(self) -> Path:
        return self.root / "data_dst" / "merged_mask"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def faceset_folder(self, side: str, input_dir: str = "") -> Path:
        """The faceset a tool works on: `input_dir` when given, else the aligned folder of `side`."""
        if input_dir:
            folder = Path(input_dir).expanduser().resolve()
        else:
            self.require()
            folder = self.aligned_dir(side)  # type: ignore[arg-type]
        if not folder.is_dir():
            raise UserError(f"{folder} is not a folder: give an aligned faces folder")
        return folder

    def default_options_path(self, model_suffix: str) -> Path:
        """The options a new model of this kind starts from (DFL's `SAEHD_default_options.dat`)."""
        return self.model_dir / f"{model_suffix}_default_options.json"

    def result_path(self, ext: str) -> Path:
        return self.root / f"result.{ext}"

    def result_mask_path(self, ext: str) -> Path:
        return self.root / f"result_mask.{ext}"

    def layout_dirs(self) -> list[Path]:
        """The folders a fresh workspace has (what 1_clear_workspace recreates)."""
        return [
            self.aligned_dir("src"),
            self.aligned_debug_dir("src"),
            self.aligned_dir("dst"),
            self.aligned_debug_dir("dst"),
            self.merged_dir,
            self.merged_mask_dir,
            self.model_dir,
        ]

    def create_layout(self) -> None:
        for folder in self.layout_dirs():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / PLACEHOLDER).touch()

    def require(self) -> None:
        """Raise a UserError when the workspace folder does not exist."""
        if not self.root.is_dir():
            raise UserError(
                f"workspace folder {self.root} does not exist: run 1_clear_workspace to create it, "
                "or pass --workspace PATH"
            )

    def find_video(self, side: Side, *, required: bool = True) -> Path | None:
        """The `data_<side>.*` video, DFL-style: the first file with that stem.

        Known video extensions win over other files of the same stem.
        """
        stem = f"data_{side}"
        candidates = sorted(p for p in self.root.glob(stem + ".*") if p.is_file())
        known = [p for p in candidates if p.suffix.lower() in VIDEO_EXTENSIONS]
        found = (known or candidates or [None])[0]
        if found is None and required:
            raise UserError(
                f"no {stem}.* video in {self.root}: copy your "
                f"{'source person' if side == 'src' else 'target'} video there as {stem}.mp4 "
                "(any format ffmpeg reads)"
            )
        return found
