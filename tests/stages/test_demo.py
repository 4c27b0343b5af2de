"""The demo (script 0): every stage on the real demo media, ending in a labelled result.mp4."""

from __future__ import annotations

import pytest

from facelab.io.ffmpeg import probe
from facelab.labels import is_labelled
from media import REPO


@pytest.mark.slow
def test_demo_runs_every_stage_to_a_labelled_video(tmp_path, script):
    if not (REPO / "_internal" / "demo_media" / "packages").is_dir():
        pytest.skip("setup did not fetch the demo media (no package registry)")
    ws = tmp_path / "workspace"
    proc = script("0_demo", "--workspace", str(ws), "--non-interactive", "--iterations", "20", timeout=900)
    assert proc.returncode == 0, proc.stderr
    for stage in ("extract-video", "extract", "train", "merge", "video-from-frames", "demo"):
        assert f"[{stage}]" in proc.stdout + proc.stderr, stage
    info = probe(ws / "result.mp4")
    assert info.video.frames == 120 and is_labelled(info.tags)
    # a workspace with files is not cleared without --yes
    proc = script("0_demo", "--workspace", str(ws), "--non-interactive")
    assert proc.returncode == 2 and "--yes" in proc.stderr
