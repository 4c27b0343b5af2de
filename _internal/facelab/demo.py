"""Script 0_demo: the whole pipeline on real media, headless, with small settings (minutes on a CPU).

Not a stage of its own but the stages in order, so it lives beside them (`facelab/demo.py`):
the one module that calls several stages.

The media (public-domain photos of Barack Obama, and the "carphone" talking-head clip) come from
two registry packages that setup fetched into `_internal/demo_media/`; nothing is downloaded now.
It builds `data_src.mp4` from the photos (each held for a second, also mirrored) and uses the
clip as `data_dst.mp4`, then runs: frames (2, 3) -> faces (4, 5) -> SAEHD training (6, small) ->
merge (7) -> `result.mp4` (8), printing where each stage's output is.
Both people in the demo media are public figures in public-domain material, used to show the
tool; real swaps need the consent of the people shown.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import ConfirmationNeeded, UserError
from facelab.options import option, resolve_options
from facelab.report import Report
from facelab.runtime import INTERNAL
from facelab.workspace import PLACEHOLDER, Workspace

log = logging.getLogger(__name__)

MEDIA_DIR = INTERNAL / "demo_media"


@dataclass(frozen=True)
class DemoOptions:
    iterations: int = option("Training iterations", 300, min=1, max=100_000, ask=False, help="SAEHD steps (300: ~1 min)")
    yes: bool = option("Replace the workspace", False, ask=False, help="clear a workspace that holds files without asking")


def _media(name: str) -> Path:
    from facelab.media import MediaUnavailable, media_file

    try:
        return media_file(name, MEDIA_DIR)
    except MediaUnavailable as exc:
        from facelab.runtime import repair_hint

        raise UserError(f"the demo media is missing ({exc}): {repair_hint()}") from None


def _src_video(path: Path) -> None:
    """Obama's three photos as a 10 fps video, each held 1 s, plain and mirrored, 640 x 640."""
    import subprocess

    from facelab.io.ffmpeg import find_ffmpeg

    frames = []
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        img = cv2.imread(str(_media(name)))
        side = max(img.shape[:2])
        canvas = np.zeros((side, side, 3), np.uint8)
        y, x = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
        canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
        canvas = cv2.resize(canvas, (640, 640), interpolation=cv2.INTER_AREA)
        frames += [canvas] * 10 + [canvas[:, ::-1]] * 10
    tmp = path.parent / ".demo_src"
    tmp.mkdir(exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp / f"{i:05d}.png"), np.ascontiguousarray(f))
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-framerate", "10", "-i", str(tmp / "%05d.png"),
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(path)]  # fmt: skip
    subprocess.run(cmd, capture_output=True, check=True)
    shutil.rmtree(tmp)


def demo(ws: Workspace, opts: DemoOptions) -> Report:
    from facelab.stages import clear, extract, merge, train, video
    from facelab.training.options import TrainOptions

    started = time.perf_counter()
    files = [p for p in ws.root.rglob("*") if p.is_file() and p.name != PLACEHOLDER] if ws.root.is_dir() else []
    if files and not opts.yes:
        raise ConfirmationNeeded(f"the demo clears {ws.root}, which holds {len(files)} files", "yes")
    steps: list[str] = []

    def done(report: Report, where: Path) -> None:
        line = f"{report.line()}  -> {where}"
        log.info(line)
        steps.append(line)

    clear.clear_workspace(ws, clear.ClearOptions(yes=True))
    _src_video(ws.root / "data_src.mp4")
    shutil.copy(_media("carphone.mp4"), ws.root / "data_dst.mp4")
    done(video.extract_video(ws, video.ExtractVideoOptions(side="src")), ws.frames_dir("src"))
    done(video.extract_video(ws, video.ExtractVideoOptions(side="dst")), ws.frames_dir("dst"))
    done(extract.extract(ws, extract.ExtractOptions(side="src", image_size=256)), ws.aligned_dir("src"))
    done(extract.extract(ws, extract.ExtractOptions(side="dst", image_size=256, output_debug=True, smooth_landmarks=True)),
         ws.aligned_dir("dst"))  # fmt: skip
    topts = resolve_options(TrainOptions, saved={"model_name": "demo", "resolution": 64, "ae_dims": 64, "e_dims": 32, "d_dims": 32,
                                                 "d_mask_dims": 16, "batch_size": 4, "target_iter": opts.iterations,
                                                 "preview": False, "seed": 1, "random_src_flip": True})  # fmt: skip
    done(train.train(ws, topts), ws.model_dir / "demo_SAEHD")
    mopts = resolve_options(merge.MergeOptions, saved={"model_name": "demo", "mask_mode": "dst", "erode": 20, "blur": 60})
    done(merge.merge(ws, mopts), ws.merged_dir)
    done(video.video_from_frames(ws, video.MergedVideoOptions()), ws.result_path("mp4"))
    return Report("demo", f"all stages ran; the swapped video is {ws.result_path('mp4')}", time.perf_counter() - started,
                  {"stages": len(steps)})  # fmt: skip

