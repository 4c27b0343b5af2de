"""ffmpeg command builders (compared by equality) and the ffprobe-free probe parser."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from facelab.io import ffmpeg

CARPHONE_STDERR = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'carphone.mp4':
  Metadata:
    major_brand     : isom
    synthetic       : true
    comment         : Synthetic media
  Duration: 00:00:04.00, start: 0.000000, bitrate: 1176 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 176x144 [SAR 128:117 DAR 1408:1053], 1171 kb/s, 29.97 fps, 29.97 tbr, 30k tbn (default)
    Metadata:
      handler_name    : VideoHandler
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, mono, fltp, 69 kb/s (default)
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
"""
CARPHONE_CRC = "#tb 0: 1/30000\n#media_type 0: video\n" + "".join(
    f"0, {i * 1001 - 2002}, {i * 1001}, 1001, 100, 0x0\n" for i in range(120)
)


def test_parse_probe_gives_exact_rate_count_duration_audio_and_tags():
    info = ffmpeg.parse_probe(Path("x.mp4"), CARPHONE_CRC, CARPHONE_STDERR)
    assert info.video is not None
    assert info.video.frame_rate == Fraction(30000, 1001)
    assert info.video.time_base == Fraction(1, 30000)
    assert info.video.frames == 120
    assert info.video.duration == Fraction(120 * 1001, 30000)
    assert (info.video.width, info.video.height, info.video.codec) == (176, 144, "h264")
    assert info.audio_codecs == ("aac",)
    assert info.tags["synthetic"] == "true" and info.tags["comment"] == "Synthetic media"
    assert "handler_name" not in info.tags  # stream tags are not container tags


@pytest.mark.parametrize(
    "typed, exact",
    [(29.97, Fraction(30000, 1001)), (23.976, Fraction(24000, 1001)), (59.94, Fraction(60000, 1001)),
     (25, Fraction(25)), (30.0, Fraction(30)), (12.5, Fraction(25, 2))],
)  # fmt: skip
def test_snap_frame_rate(typed, exact):
    assert ffmpeg.snap_frame_rate(typed) == exact


def test_extract_frames_args():
    assert ffmpeg.build_extract_frames_args(Path("v.mp4"), Path("out/%05d.png")) == [
        "-hide_banner", "-nostdin", "-y", "-i", "v.mp4", "-map", "0:v:0", "-fps_mode", "passthrough",
        "-pix_fmt", "rgb24", "-c:v", "png", "-start_number", "1", "out/%05d.png",
    ]  # fmt: skip
    assert ffmpeg.build_extract_frames_args(Path("v.mp4"), Path("o/%05d.jpg"), fps=29.97, ext="jpg") == [
        "-hide_banner", "-nostdin", "-y", "-i", "v.mp4", "-map", "0:v:0", "-vf", "fps=30000/1001",
        "-pix_fmt", "yuvj444p", "-c:v", "mjpeg", "-q:v", "2", "-start_number", "1", "o/%05d.jpg",
    ]  # fmt: skip


def test_cut_video_args():
    args = ffmpeg.build_cut_video_args(
        Path("in.mov"), Path("in_cut.mov"), start_s=1.5, duration_s=2.0, audio_track=1, bitrate_mbit=25, muxer="mov"
    )
    assert args == [
        "-hide_banner", "-nostdin", "-y", "-ss", "1.500", "-i", "in.mov", "-t", "2.000", "-map", "0:v:0",
        "-map", "0:a:1?", "-c:a", "aac", "-b:a", "192k", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-b:v", "25M", "-f", "mov", "in_cut.mov",
    ]  # fmt: skip


def test_video_from_frames_keeps_rate_timescale_audio_and_label():
    settings = ffmpeg.EncodeSettings(container="mp4", bitrate_mbit=16, frame_rate=Fraction(30000, 1001), timescale=30000)
    args = ffmpeg.build_video_from_frames_args(
        "m/%05d.png", 1, Path("r.mp4"), settings, audio_source=Path("d.mp4"), audio_codec="aac",
        metadata={"synthetic": "true"},
    )  # fmt: skip
    assert args == [
        "-hide_banner", "-nostdin", "-y", "-framerate", "30000/1001", "-start_number", "1", "-i", "m/%05d.png",
        "-i", "d.mp4", "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        "-b:v", "16M", "-fps_mode", "passthrough", "-c:a", "copy", "-video_track_timescale", "30000",
        "-metadata", "synthetic=true", "-movflags", "+faststart+use_metadata_tags", "-f", "mp4", "r.mp4",
    ]  # fmt: skip


def test_lossless_variants_and_audio_reencode():
    mp4 = ffmpeg.EncodeSettings(container="mp4", lossless=True, frame_rate=Fraction(25), pad_to_even=True)
    args = ffmpeg.build_video_from_frames_args("m/%05d.png", 1, Path("r.mp4"), mp4, audio_source=Path("d.avi"),
                                               audio_codec="pcm_s16le")  # fmt: skip
    assert args[args.index("-c:v") : args.index("-c:v") + 8] == [
        "-c:v", "libx264", "-qp", "0", "-preset", "medium", "-pix_fmt", "yuv444p",
    ]  # fmt: skip
    assert "pad=ceil(iw/2)*2:ceil(ih/2)*2" in args
    assert args[args.index("-c:a") : args.index("-c:a") + 4] == ["-c:a", "aac", "-b:a", "192k"]
    mov = ffmpeg.EncodeSettings(container="mov", lossless=True, frame_rate=Fraction(25), pad_to_even=True)
    args = ffmpeg.build_video_from_frames_args("m/%05d.png", 7, Path("r.mov"), mov)
    assert ["-c:v", "png", "-pix_fmt", "rgb24"] == args[args.index("-c:v") : args.index("-c:v") + 4]
    assert "-vf" not in args  # PNG needs no even size: nothing is padded
    assert args[args.index("-start_number") + 1] == "7"
    assert ffmpeg.audio_codec_args("mov", "pcm_s16le") == ["-c:a", "copy"]


def test_ffmpeg_error_names_the_telling_line():
    err = ffmpeg.FFmpegError(["-i", "x"], 1, "ffmpeg version 9\n[in#0 @ 0x1] x.mp4: Invalid data found when processing input\nConversion failed!\n")
    assert err.detail == "x.mp4: Invalid data found when processing input"
