"""ffmpeg: pure command builders, one runner, and a probe that needs no ffprobe.

Builders return argument lists without the executable and touch nothing, so tests compare
them by equality (facefusion's `ffmpeg_builder.py` habit). `run_ffmpeg` is the one place a
process starts; it adds progress reporting and turns failures into `FFmpegError`.

The binary is the one shipped in `imageio-ffmpeg` (or one on PATH; `FACELAB_FFMPEG` overrides).
That package ships no ffprobe, so `probe` reads what it needs from ffmpeg itself:
- the stream listing on stderr (codecs, sizes, which streams are audio, container tags);
- a `framecrc` stream copy of the first video stream: its exact time base and every packet's
  duration, so 29.97 fps comes back as 30000/1001 and the frame count is exact, without
  decoding a single frame.

Video behaviour follows dfl-spec §12, with these deliberate differences:
- "lossless" is really lossless: x264 `-qp 0` in 4:4:4 for mp4, PNG in mov (DFL wrote 4:2:0);
- audio is copied when the container can hold it, else AAC 192k (DFL always re-encoded);
- the output keeps the reference's exact frame rate and time base (DFL#815: 29.97 -> 30);
- every video made from a swap carries the synthetic-media label (ARCHITECTURE.md §6).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from facelab.errors import UserError

log = logging.getLogger(__name__)

# Audio codecs each container takes as they are (anything else is re-encoded to AAC).
_COPY_AUDIO = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s32le",
            "pcm_f32le", "pcm_s16be", "pcm_s24be"},
}  # fmt: skip


class FFmpegError(Exception):
    """ffmpeg exited non-zero. `detail` is the most telling line of its log."""

    def __init__(self, args: Sequence[str], returncode: int, log_text: str):
        self.args_list = list(args)
        self.returncode = returncode
        self.log_text = log_text
        self.detail = _telling_line(log_text)
        super().__init__(f"ffmpeg failed ({returncode}): {self.detail}")


def _telling_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        low = ln.lower()
        if any(w in low for w in ("invalid", "error", "not found", "no such", "unknown", "does not")):
            return re.sub(r"^\[[^\]]+\]\s*", "", ln)
    return lines[-1] if lines else "no output"


def find_ffmpeg() -> str:
    """Path of the ffmpeg binary: $FACELAB_FFMPEG, imageio-ffmpeg's, or one on PATH."""
    override = os.environ.get("FACELAB_FFMPEG")
    if override:
        return override
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - fall back to PATH below
        pass
    found = shutil.which("ffmpeg")
    if found:
        return found
    raise UserError("ffmpeg was not found: run setup again (it installs imageio-ffmpeg), or put ffmpeg on PATH")


# ---------------------------------------------------------------- probe


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int
    height: int
    time_base: Fraction
    frame_rate: Fraction
    frames: int
    duration: Fraction  # seconds, from the packet timestamps


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    video: VideoStream | None
    audio_codecs: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)


def build_probe_args(path: Path) -> list[str]:
    """Stream-copy the first video stream into framecrc on stdout (no decoding)."""
    return ["-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0?", "-c", "copy", "-f", "framecrc", "-"]


_STREAM = re.compile(r"^\s*Stream #0:(\d+)\S*: (Video|Audio): (\w+)(.*)$")
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)\b")


def probe(path: Path) -> MediaInfo:
    """Describe a media file; raises FFmpegError if ffmpeg cannot read it."""
    args = build_probe_args(path)
    proc = subprocess.run(
        [find_ffmpeg(), *args], capture_output=True, text=True, errors="replace", check=False
    )
    if proc.returncode != 0:
        raise FFmpegError(args, proc.returncode, proc.stderr)
    return parse_probe(path, proc.stdout, proc.stderr)


def parse_probe(path: Path, framecrc: str, stderr: str) -> MediaInfo:
    """Pure parser behind `probe` (kept separate so it is testable on captured text)."""
    input_part = stderr.split("Stream mapping:")[0]
    video_line = None
    audio: list[str] = []
    for line in input_part.splitlines():
        m = _STREAM.match(line)
        if not m:
            continue
        if m.group(2) == "Video" and video_line is None and "attached pic" not in line:
            video_line = line
        elif m.group(2) == "Audio":
            audio.append(m.group(3))
    tags = _global_tags(input_part)
    video = _video_from_framecrc(framecrc, video_line) if video_line else None
    return MediaInfo(path=path, video=video, audio_codecs=tuple(audio), tags=tags)


def _global_tags(text: str) -> dict[str, str]:
    """The input's container metadata block (indented 2, entries 4) from ffmpeg's listing."""
    tags: dict[str, str] = {}
    lines = text.splitlines()
    inside = False
    for line in lines:
        if line.startswith("Input #0"):
            inside = False
            continue
        if line == "  Metadata:":
            inside = True
            continue
        if inside:
            if line.startswith("    ") and not line.startswith("     ") and ":" in line:
                key, _, value = line.strip().partition(":")
                tags[key.strip()] = value.strip()
            elif line.startswith("      ") and tags:  # a multi-line value continues
                last = next(reversed(tags))
                tags[last] += "\n" + line.strip().lstrip(": ")
            else:
                inside = False
    return tags


def _video_from_framecrc(framecrc: str, video_line: str) -> VideoStream:
    m = _STREAM.match(video_line)
    assert m is not None
    codec = m.group(3)
    size = _SIZE.search(m.group(4))
    width, height = (int(size.group(1)), int(size.group(2))) if size else (0, 0)
    time_base = Fraction(1, 1)
    starts: list[int] = []
    ends: list[int] = []
    durations: list[int] = []
    for line in framecrc.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            time_base = Fraction(int(num), int(den))
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 4 and parts[0] == "0":
                pts, dur = int(parts[2]), int(parts[3])
                starts.append(pts)
                ends.append(pts + dur)
                durations.append(dur)
    frames = len(durations)
    positive = [d for d in durations if d > 0]
    if positive:
        frame_rate = 1 / (time_base * statistics.median_low(positive))
    else:
        frame_rate = _listed_frame_rate(m.group(4))
    if frames and positive:
        duration = (max(ends) - min(starts)) * time_base
    else:
        duration = Fraction(frames) / frame_rate if frame_rate else Fraction(0)
    return VideoStream(
        codec=codec, width=width, height=height, time_base=time_base,
        frame_rate=Fraction(frame_rate), frames=frames, duration=Fraction(duration),
    )  # fmt: skip


def _listed_frame_rate(text: str) -> Fraction:
    """Fallback from ffmpeg's printed '29.97 fps' when packets carry no duration."""
    m = _FPS.search(text)
    if not m:
        return Fraction(25)
    value = float(m.group(1)) * (1000 if m.group(2) else 1)
    return snap_frame_rate(value)


def snap_frame_rate(value: float) -> Fraction:
    """A typed frame rate as an exact fraction: 29.97 -> 30000/1001, 25 -> 25."""
    if value <= 0:
        raise ValueError("frame rate must be positive")
    if abs(value - round(value)) < 1e-6:
        return Fraction(round(value))
    ntsc = round(value * 1.001)
    if abs(value * 1.001 - ntsc) < 0.01:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(value).limit_denominator(1001)


# ---------------------------------------------------------------- builders


def build_extract_frames_args(
    video: Path, out_pattern: Path, *, fps: float = 0.0, ext: str = "png", jpeg_qscale: int = 2
) -> list[str]:
    """Frames of a video as `%05d.<ext>` from 1 (dfl-spec §12 extract-video).

    fps 0 keeps every frame at the native rate; otherwise frames are resampled to `fps`.
    """
    args = ["-hide_banner", "-nostdin", "-y", "-i", str(video), "-map", "0:v:0"]
    if fps > 0:
        args += ["-vf", f"fps={_rate(snap_frame_rate(fps))}"]
    else:
        args += ["-fps_mode", "passthrough"]
    if ext == "png":
        args += ["-pix_fmt", "rgb24", "-c:v", "png"]
    else:
        args += ["-pix_fmt", "yuvj444p", "-c:v", "mjpeg", "-q:v", str(jpeg_qscale)]
    args += ["-start_number", "1", str(out_pattern)]
    return args


def build_cut_video_args(
    video: Path,
    out_path: Path,
    *,
    start_s: float,
    duration_s: float | None,
    audio_track: int | None,
    bitrate_mbit: int,
    muxer: str,
) -> list[str]:
    """A re-encoded cut of `video` (dfl-spec §12 cut-video): libx264 yuv420p, AAC audio."""
    args = ["-hide_banner", "-nostdin", "-y"]
    if start_s > 0:
        args += ["-ss", _seconds(start_s)]
    args += ["-i", str(video)]
    if duration_s is not None:
        args += ["-t", _seconds(duration_s)]
    args += ["-map", "0:v:0"]
    if audio_track is not None:
        args += ["-map", f"0:a:{audio_track}?", "-c:a", "aac", "-b:a", "192k"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-b:v", f"{bitrate_mbit}M", "-f", muxer, str(out_path)]
    return args


def build_denoise_args(in_pattern: Path, out_pattern: Path, *, factor: int, ext: str) -> list[str]:
    """Temporal denoise of an image sequence with hqdn3d (dfl-spec §12 denoise, factor 1-20)."""
    args = ["-hide_banner", "-nostdin", "-y", "-i", str(in_pattern),
            "-vf", f"hqdn3d={factor}:{factor}:5:5"]  # fmt: skip
    if ext == "png":
        args += ["-pix_fmt", "rgb24", "-c:v", "png"]
    else:
        args += ["-pix_fmt", "yuvj444p", "-c:v", "mjpeg", "-q:v", "2"]
    args += ["-start_number", "1", str(out_pattern)]
    return args


@dataclass(frozen=True)
class EncodeSettings:
    """How frames become a video.

    Attributes:
        container: "mp4" or "mov".
        lossless: mp4 -> x264 qp 0 in 4:4:4 (lossless after the RGB->YUV step); mov -> PNG
            frames, bit-exact RGB.
        bitrate_mbit: video bitrate when not lossless.
        frame_rate: exact rate, e.g. Fraction(30000, 1001).
        timescale: the mp4/mov track time scale (the reference's time base denominator), so
            timestamps match the source exactly; None lets ffmpeg choose.
        pad_to_even: 4:2:0 needs even sizes; pads one pixel right/bottom when set.
        gray: the frames are a mask; encode one plane.
    """

    container: str = "mp4"
    lossless: bool = False
    bitrate_mbit: int = 16
    frame_rate: Fraction = Fraction(25)
    timescale: int | None = None
    pad_to_even: bool = False
    gray: bool = False


def audio_codec_args(container: str, source_codec: str) -> list[str]:
    """Copy the audio if `container` can hold `source_codec`, else AAC 192k."""
    if source_codec in _COPY_AUDIO.get(container, set()):
        return ["-c:a", "copy"]
    return ["-c:a", "aac", "-b:a", "192k"]


def build_video_from_frames_args(
    first_frame_pattern: str,
    start_number: int,
    out_path: Path,
    settings: EncodeSettings,
    *,
    audio_source: Path | None = None,
    audio_codec: str | None = None,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Encode a numbered image sequence (dfl-spec §12 video-from-sequence, fixed as the
    module docstring says), optionally muxing the first audio stream of `audio_source`."""
    rate = _rate(settings.frame_rate)
    args = ["-hide_banner", "-nostdin", "-y", "-framerate", rate, "-start_number", str(start_number),
            "-i", first_frame_pattern]  # fmt: skip
    if audio_source is not None:
        args += ["-i", str(audio_source)]
    args += ["-map", "0:v:0"]
    if audio_source is not None:
        args += ["-map", "1:a:0"]
    filters = []
    if settings.pad_to_even and not (settings.lossless and settings.container == "mov"):
        filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
    if filters:
        args += ["-vf", ",".join(filters)]
    if settings.lossless and settings.container == "mov":
        args += ["-c:v", "png", "-pix_fmt", "gray" if settings.gray else "rgb24"]
    elif settings.lossless:
        args += ["-c:v", "libx264", "-qp", "0", "-preset", "veryslow" if settings.gray else "medium",
                 "-pix_fmt", "gray" if settings.gray else "yuv444p"]  # fmt: skip
    else:
        args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-b:v", f"{settings.bitrate_mbit}M"]
    args += ["-fps_mode", "passthrough"]
    if audio_source is not None:
        args += audio_codec_args(settings.container, audio_codec or "")
    if settings.timescale:
        args += ["-video_track_timescale", str(settings.timescale)]
    for key, value in (metadata or {}).items():
        args += ["-metadata", f"{key}={value}"]
    args += ["-movflags", "+faststart+use_metadata_tags" if metadata else "+faststart"]
    args += ["-f", settings.container, str(out_path)]
    return args


def _rate(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}" if rate.denominator != 1 else str(rate.numerator)


def _seconds(value: float) -> str:
    return f"{value:.3f}"


# ---------------------------------------------------------------- runner


def run_ffmpeg(args: Sequence[str], *, total_frames: int | None = None, desc: str = "ffmpeg") -> None:
    """Run ffmpeg with `args`, showing a frame progress bar; raise FFmpegError on failure.

    stderr goes to a temporary file (read back only on failure), stdout carries
    `-progress` key=value lines that drive the bar.
    """
    from facelab.log import progress

    full = [find_ffmpeg(), "-progress", "pipe:1", "-nostats", *args]
    log.debug("running %s", subprocess.list2cmdline(full))
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as err:
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, text=True, errors="replace")
        bar = progress(total=total_frames, desc=desc, unit="frame")
        reader = threading.Thread(target=_follow_progress, args=(proc, bar), daemon=True)
        reader.start()
        try:
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=5)
            bar.close()
        if returncode != 0:
            err.seek(0)
            raise FFmpegError(args, returncode, err.read())


def _follow_progress(proc: subprocess.Popen, bar) -> None:  # noqa: ANN001 - tqdm
    assert proc.stdout is not None
    done = 0
    for line in proc.stdout:
        key, _, value = line.strip().partition("=")
        if key == "frame" and value.isdigit():
            frame = int(value)
            if frame > done:
                bar.update(frame - done)
                done = frame
