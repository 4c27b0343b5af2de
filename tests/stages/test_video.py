"""Video stages end to end through the numbered scripts, on the real carphone video.

What a user would check: frame counts, the exact 29.97 rate, duration, the audio really kept
(the tone is still a 440 Hz tone), lossless really lossless, the synthetic label, and that bad
input gives one line and a non-zero exit without deleting anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from facelab.io.ffmpeg import find_ffmpeg, probe
from facelab.io.frames import list_images, read_image
from facelab.labels import is_labelled
from facelab.workspace import Workspace

CARPHONE_FRAMES = 120
NTSC = Fraction(30000, 1001)


def _ffmpeg(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([find_ffmpeg(), "-hide_banner", "-nostdin", "-y", *args], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc


def _with_tone(video: Path, out: Path, hz: int = 440) -> Path:
    """The same video stream (copied, timing untouched) plus a sine tone as AAC audio."""
    info = probe(video)
    assert info.video is not None
    seconds = f"{float(info.video.duration):.4f}"
    _ffmpeg("-i", str(video), "-f", "lavfi", "-i", f"sine=frequency={hz}:sample_rate=48000:duration={seconds}",
            "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", str(out))  # fmt: skip
    return out


def _dominant_hz(media: Path) -> float:
    pcm = _ffmpeg("-i", str(media), "-map", "0:a:0", "-ac", "1", "-ar", "48000", "-f", "s16le", "-").stdout
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    assert samples.size >= 24000, "audio is missing or shorter than 0.5 s"
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / 48000)[spectrum.argmax()])


def _decode_frames(video: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    _ffmpeg("-i", str(video), "-map", "0:v:0", "-fps_mode", "passthrough", "-pix_fmt", "rgb24", str(folder / "%05d.png"))
    return list_images(folder)


@pytest.fixture
def dst_ws(ws, media, script):
    """A workspace whose data_dst.mp4 is carphone, extracted headless by script 3."""
    shutil.copy(media("carphone.mp4"), ws.root / "data_dst.mp4")
    proc = script("3_extract_images_dst", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    assert "[extract-video] 120 frames" in proc.stdout
    return ws


def _merge_by_copy(ws) -> list[Path]:
    """Stand-in for the merger: the dst frames copied to merged/."""
    for frame in list_images(ws.frames_dir("dst")):
        shutil.copy(frame, ws.merged_dir / frame.name)
    return list_images(ws.merged_dir)


def test_extract_dst_writes_every_frame_of_carphone(dst_ws, media):
    frames = list_images(dst_ws.frames_dir("dst"))
    assert [p.name for p in frames] == [f"{i:05d}.png" for i in range(1, CARPHONE_FRAMES + 1)]
    first = read_image(frames[0])
    assert first is not None and first.shape == (144, 176, 3)
    assert first.std() > 20  # a real picture, not a blank frame
    assert not [p for p in dst_ws.frames_dir("dst").iterdir() if p.name.startswith(".facelab-tmp")]


def test_merged_to_mp4_keeps_count_rate_duration_and_label(dst_ws, media, script):
    _merge_by_copy(dst_ws)
    proc = script("8_merged_to_mp4", "--workspace", str(dst_ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    source = probe(media("carphone.mp4"))
    result = probe(dst_ws.result_path("mp4"))
    assert result.video is not None and source.video is not None
    assert result.video.frames == source.video.frames == CARPHONE_FRAMES
    assert result.video.frame_rate == NTSC
    assert result.video.time_base == source.video.time_base
    assert result.video.duration == source.video.duration
    assert is_labelled(result.tags), result.tags
    assert not result.has_audio


def test_audio_of_dst_is_kept(ws, media, script, tmp_path):
    _with_tone(media("carphone.mp4"), ws.root / "data_dst.mp4")
    assert script("3_extract_images_dst", "--workspace", str(ws.root), "--non-interactive").returncode == 0
    _merge_by_copy(ws)
    proc = script("8_merged_to_mp4", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    assert "audio from data_dst.mp4 (aac)" in proc.stdout
    result = probe(ws.result_path("mp4"))
    assert result.audio_codecs == ("aac",)
    assert abs(_dominant_hz(ws.result_path("mp4")) - 440) < 5
    assert result.video is not None and result.video.frames == CARPHONE_FRAMES


def test_mov_lossless_is_bit_exact_and_mask_video_is_written(dst_ws, script, tmp_path):
    merged = _merge_by_copy(dst_ws)
    for i, frame in enumerate(merged):  # masks: a moving white square on black
        mask = np.zeros((144, 176), np.uint8)
        mask[20 + i // 4 : 80 + i // 4, 40:100] = 255
        import cv2

        cv2.imwrite(str(dst_ws.merged_mask_dir / frame.name), mask)
    proc = script("8_merged_to_mov_lossless", "--workspace", str(dst_ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    decoded = _decode_frames(dst_ws.result_path("mov"), tmp_path / "decoded")
    assert len(decoded) == CARPHONE_FRAMES
    for original, back in zip(merged[::17], decoded[::17]):
        assert np.array_equal(read_image(original), read_image(back)), original.name
    mask_info = probe(dst_ws.result_mask_path("mov"))
    assert mask_info.video is not None and mask_info.video.frames == CARPHONE_FRAMES
    assert is_labelled(mask_info.tags)
    masks_back = _decode_frames(dst_ws.result_mask_path("mov"), tmp_path / "masks")
    assert np.array_equal(read_image(masks_back[50])[..., 0], read_image(dst_ws.merged_mask_dir / "00051.png")[..., 0])


def test_mp4_lossless_is_far_closer_than_default(dst_ws, script, tmp_path):
    merged = _merge_by_copy(dst_ws)
    errors = {}
    for name, ext in (("8_merged_to_mp4_lossless", "lossless"), ("8_merged_to_mp4", "default")):
        assert script(name, "--workspace", str(dst_ws.root), "--non-interactive", "--bitrate", "1").returncode == 0
        back = _decode_frames(dst_ws.result_path("mp4"), tmp_path / ext)
        a, b = read_image(merged[60]).astype(int), read_image(back[60]).astype(int)
        errors[ext] = np.abs(a - b).mean()
    # 4:4:4 qp 0 loses only the RGB->YUV rounding; the 4:2:0 1 Mbit/s default loses far more.
    assert errors["lossless"] < 1.0 < errors["default"]


def test_gap_in_merged_is_refused_naming_it_and_old_result_kept(dst_ws, script):
    _merge_by_copy(dst_ws)
    assert script("8_merged_to_mp4", "--workspace", str(dst_ws.root), "--non-interactive").returncode == 0
    before = dst_ws.result_path("mp4").read_bytes()
    (dst_ws.merged_dir / "00050.png").unlink()
    proc = script("8_merged_to_mp4", "--workspace", str(dst_ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "frame 00050.png is missing" in proc.stderr
    assert dst_ws.result_path("mp4").read_bytes() == before


def test_unfinished_merge_names_first_missing_frame(dst_ws, script):
    for frame in list_images(dst_ws.frames_dir("dst"))[:100]:
        shutil.copy(frame, dst_ws.merged_dir / frame.name)
    proc = script("8_merged_to_mp4", "--workspace", str(dst_ws.root), "--non-interactive")
    assert proc.returncode == 2 and "frame 00101 " not in proc.stderr
    assert "frame 00101.png is missing" in proc.stderr and "20 of 120 frames not there" in proc.stderr


def test_src_at_lower_fps(ws, media, script):
    shutil.copy(media("carphone.mp4"), ws.root / "data_src.mp4")
    proc = script("2_extract_images_src", "--workspace", str(ws.root), "--non-interactive", "--fps", "10",
                  "--output-ext", "jpg")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frames = list_images(ws.frames_dir("src"))
    assert abs(len(frames) - 40) <= 1 and frames[0].suffix == ".jpg"


def test_existing_frames_are_kept_without_confirmation_and_replaced_with_it(dst_ws, script):
    frames = list_images(dst_ws.frames_dir("dst"))
    frames[0].write_bytes(b"user edit")
    proc = script("3_extract_images_dst", "--workspace", str(dst_ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "already holds 120 frames" in proc.stderr and "--overwrite" in proc.stderr
    assert frames[0].read_bytes() == b"user edit"
    proc = script("3_extract_images_dst", "--workspace", str(dst_ws.root), "--non-interactive", "--overwrite")
    assert proc.returncode == 0 and "replaced 120 old frames" in proc.stdout
    assert read_image(frames[0]) is not None


def test_dst_refuses_a_frame_rate(dst_ws, script):
    proc = script("3_extract_images_dst", "--workspace", str(dst_ws.root), "--fps", "10", "--overwrite")
    assert proc.returncode == 2 and "full frame rate" in proc.stderr


def test_missing_video_and_corrupt_video_are_one_line_errors(ws, script, media):
    proc = script("2_extract_images_src", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "no data_src.* video" in proc.stderr and "data_src.mp4" in proc.stderr
    data = media("carphone.mp4").read_bytes()
    (ws.root / "data_dst.mp4").write_bytes(b"\x00" * 64 + data[5000:20000])
    proc = script("3_extract_images_dst", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "cannot be read as a video" in proc.stderr and "Traceback" not in proc.stderr


def test_empty_folders_are_one_line_errors(ws, script):
    for name in ("8_merged_to_mp4", "3_denoise_dst"):
        proc = script(name, "--workspace", str(ws.root), "--non-interactive")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no frames" in proc.stderr, name


def test_cut_video_keeps_the_piece_and_its_audio(ws, media, script, tmp_path):
    video = _with_tone(media("carphone.mp4"), tmp_path / "talk.mp4")
    proc = script("3_cut_video", str(video), "--workspace", str(ws.root), "--non-interactive",
                  "--from-time", "00:00:01.000", "--to-time", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cut = probe(tmp_path / "talk_cut.mp4")
    assert cut.video is not None and 29 <= cut.video.frames <= 31
    assert cut.has_audio and abs(_dominant_hz(tmp_path / "talk_cut.mp4") - 440) < 5
    proc = script("3_cut_video", str(video), "--workspace", str(ws.root), "--non-interactive",
                  "--from-time", "3", "--to-time", "1")  # fmt: skip
    assert proc.returncode == 2 and "is not after" in proc.stderr


def test_denoise_smooths_in_place_keeping_names(dst_ws, script):
    frames = list_images(dst_ws.frames_dir("dst"))
    before = [read_image(p) for p in frames[:3]]
    proc = script("3_denoise_dst", "--workspace", str(dst_ws.root), "--non-interactive", "--factor", "15")
    assert proc.returncode == 0, proc.stderr
    after_frames = list_images(dst_ws.frames_dir("dst"))
    assert [p.name for p in after_frames] == [p.name for p in frames]
    for b, path in zip(before, after_frames[:3]):
        a = read_image(path)
        assert a is not None and a.shape == b.shape
        diff = np.abs(a.astype(int) - b.astype(int))
        assert 0 < diff.mean() < 10  # changed, but still the same picture
        # smoother: less high-frequency energy
        assert np.abs(np.diff(a.astype(int), axis=1)).mean() < np.abs(np.diff(b.astype(int), axis=1)).mean()


def test_an_interrupted_denoise_is_finished_and_no_frame_is_denoised_twice(dst_ws, tmp_path, monkeypatch):
    from facelab.stages import video

    folder = dst_ws.frames_dir("dst")
    clean = tmp_path / "clean"
    shutil.copytree(dst_ws.root, clean)
    opts = video.DenoiseOptions(side="dst", factor=15)
    video.denoise(Workspace.at(clean), opts)  # the reference: one uninterrupted run
    real_replace, done = os.replace, []

    def replace(src, dst):  # noqa: ANN001, ANN202 - killed after 40 of the 120 frames are replaced
        if Path(dst).parent == folder and Path(dst).suffix == ".png":
            if len(done) == 40:
                raise KeyboardInterrupt
            done.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(video.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        video.denoise(dst_ws, opts)
    monkeypatch.setattr(video.os, "replace", real_replace)
    assert (folder / video.DENOISE_PLAN).exists()
    report = video.denoise(dst_ws, opts)
    assert "finished the interrupted denoise" in report.summary and report.counts["frames"] == 120
    names = [p.name for p in list_images(folder)]
    assert names == [p.name for p in list_images(clean / "data_dst")] and len(names) == 120
    for name in names:  # each frame denoised exactly once: byte for byte the uninterrupted run's
        assert (folder / name).read_bytes() == (clean / "data_dst" / name).read_bytes(), name
    assert not (folder / video.DENOISE_PLAN).exists() and not list(folder.glob(".facelab-tmp-*"))


def test_clear_workspace_asks_then_clears(ws, script):
    (ws.root / "data_src.mp4").write_bytes(b"video")
    (ws.frames_dir("src") / "00001.png").write_bytes(b"frame")
    proc = script("1_clear_workspace", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and "--yes" in proc.stderr and (ws.root / "data_src.mp4").exists()
    proc = script("1_clear_workspace", "--workspace", str(ws.root), "--yes")
    assert proc.returncode == 0, proc.stderr
    left = sorted(str(p.relative_to(ws.root)) for p in ws.root.rglob("*") if p.is_file())
    assert left == sorted(str(d.relative_to(ws.root) / ".keep") for d in ws.layout_dirs())
