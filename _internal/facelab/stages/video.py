"""Video stages: frames from video (scripts 2, 3), cut, denoise (3), merged frames to video (8).

Follows dfl-spec §12 with the differences listed in `facelab.io.ffmpeg`'s docstring, plus:
- frames are extracted into a temporary folder first; existing frames are replaced only after
  the new ones are complete, and only with the user's confirmation (`--overwrite` headless);
- a merged sequence with a gap, or fewer frames than data_dst, is refused naming the first
  missing frame (DFL silently wrote a shorter, faster video: DFL#792, DFL#5387).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from facelab.errors import ConfirmationNeeded, UserError
from facelab.io import ffmpeg
from facelab.io.frames import fsync_dir, link_or_copy, list_images, numbered_sequence, read_image, write_text_atomic
from facelab.io.names import plain_file_name
from facelab.labels import SYNTHETIC_TAGS
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

_TMP_PREFIX = ".facelab-tmp-"


# ---------------------------------------------------------------- helpers


def _probe_video(path: Path) -> ffmpeg.MediaInfo:
    """Probe and require a video stream, with a user-level error for unreadable files."""
    try:
        info = ffmpeg.probe(path)
    except ffmpeg.FFmpegError as exc:
        raise UserError(
            f"{path} cannot be read as a video ({exc.detail}): check that the file is complete, "
            "or re-export it as mp4"
        ) from None
    if info.video is None or info.video.frames == 0:
        raise UserError(f"{path} holds no video frames: give a video file")
    return info


def _fresh_tmp_dir(parent: Path, purpose: str) -> Path:
    """A temporary folder inside `parent` (same disk, so moving files out is a rename)."""
    tmp = parent / f"{_TMP_PREFIX}{purpose}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from an interrupted run of ours; never user data
    tmp.mkdir(parents=True)
    return tmp


def _fmt_rate(rate: Fraction) -> str:
    return f"{float(rate):.3f}".rstrip("0").rstrip(".") + (
        f" ({rate.numerator}/{rate.denominator})" if rate.denominator != 1 else ""
    )


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return str(Path(ws.root.name) / path.relative_to(ws.root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- extract frames


@dataclass(frozen=True)
class ExtractVideoOptions:
    side: str = option("Side", "src", choices=("src", "dst"), ask=False,
                       help="which video: src = data_src.*, dst = data_dst.*")  # fmt: skip
    fps: float = option(
        "FPS", 0.0, min=0, max=240, ask=lambda v: v["side"] == "src",
        help="frames per second to extract; 0 = every frame (the video's own rate). "
        "data_dst is always extracted at its full rate.",
    )  # fmt: skip
    output_ext: str = option("Output image format", "png", choices=("png", "jpg"),
                             help="png is lossless; jpg is smaller and faster to write")  # fmt: skip
    overwrite: bool = option("Replace existing frames", False, ask=False,
                             help="replace frames already in the folder without asking")  # fmt: skip


def extract_video(ws: Workspace, opts: ExtractVideoOptions) -> Report:
    """`data_<side>.*` -> `data_<side>/00001.<ext>` ..."""
    started = time.perf_counter()
    ws.require()
    side = opts.side
    if side == "dst" and opts.fps:
        raise UserError("data_dst frames are always extracted at the video's full frame rate: drop --fps")
    video = ws.find_video(side)
    assert video is not None
    info = _probe_video(video)
    assert info.video is not None
    out_dir = ws.frames_dir(side)
    existing = list_images(out_dir)
    if existing and not opts.overwrite:
        raise ConfirmationNeeded(
            f"{_rel(ws, out_dir)} already holds {len(existing)} frames that will be deleted", "overwrite"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_tmp_dir(out_dir, "extract")
    expected = info.video.frames
    if opts.fps:
        expected = int(round(float(info.video.duration) * opts.fps))
    args = ffmpeg.build_extract_frames_args(video, tmp / f"%05d.{opts.output_ext}", fps=opts.fps, ext=opts.output_ext)
    try:
        ffmpeg.run_ffmpeg(args, total_frames=expected, desc=f"frames from {video.name}")
    except ffmpeg.FFmpegError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not extract frames from {video} ({exc.detail})") from None
    new_frames = list_images(tmp)
    if not new_frames:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"ffmpeg wrote no frames from {video}: the video may be empty or damaged")
    for old in existing:
        old.unlink()
    for frame in new_frames:
        os.replace(frame, out_dir / frame.name)
    shutil.rmtree(tmp, ignore_errors=True)
    rate = ffmpeg.snap_frame_rate(opts.fps) if opts.fps else info.video.frame_rate
    return Report(
        stage="extract-video",
        summary=f"{len(new_frames)} frames from {video.name} -> {_rel(ws, out_dir)} "
        f"({opts.output_ext}, {_fmt_rate(rate)} fps)"
        + (f"; replaced {len(existing)} old frames" if existing else ""),
        seconds=time.perf_counter() - started,
        counts={"frames": len(new_frames), "replaced": len(existing)},
    )


# ---------------------------------------------------------------- cut video

_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)$")


def parse_time(text: str) -> float:
    """'01:02:03.5', '02:03', '3.5' -> seconds; ValueError otherwise."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not a time like 00:01:30.500")
    parts = [g for g in m.groups() if g is not None]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + float(part)
    return seconds


@dataclass(frozen=True)
class CutVideoOptions:
    input_file: str = option("Input file", "", ask=False, positional=True,
                             help="the video to cut (drop it on 3_cut_video); default workspace/data_dst.*")  # fmt: skip
    from_time: str = option("From time", "00:00:00.000", help="start of the cut, HH:MM:SS.mmm")
    to_time: str = option("To time", "00:00:00.000", help="end of the cut, HH:MM:SS.mmm; 00:00:00.000 = to the end")
    audio_track_id: int = option("Specify audio track id", 0, min=0, max=64,
                                 help="which audio track to keep (0 = the first); none is fine")  # fmt: skip
    bitrate: int = option("Bitrate of output file in MB/s", 25, min=1, max=500, help="video bitrate in Mbit/s")
    overwrite: bool = option("Replace an existing cut", False, ask=False, help="replace <name>_cut.<ext> without asking")


def cut_video(ws: Workspace, opts: CutVideoOptions) -> Report:
    """`<video>` -> `<video stem>_cut<ext>` beside it."""
    started = time.perf_counter()
    if opts.input_file:
        video = Path(opts.input_file).expanduser().resolve()
        if not video.is_file():
            raise UserError(f"{video} does not exist: give the path of the video to cut")
    else:
        ws.require()
        found = ws.find_video("dst")
        assert found is not None
        video = found
    try:
        start = parse_time(opts.from_time)
        end = parse_time(opts.to_time)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    info = _probe_video(video)
    assert info.video is not None
    total = float(info.video.duration)
    if end and end <= start:
        raise UserError(f"'To time' {opts.to_time} is not after 'From time' {opts.from_time}")
    if start >= total:
        raise UserError(f"'From time' {opts.from_time} is past the end of {video.name} ({total:.3f} s)")
    duration = (min(end, total) - start) if end else None
    out = video.with_name(f"{video.stem}_cut{video.suffix}")
    if out.exists() and not opts.overwrite:
        raise ConfirmationNeeded(f"{out} exists and will be replaced", "overwrite")
    partial = out.with_name(f"{_TMP_PREFIX}{out.name}")
    audio = opts.audio_track_id if len(info.audio_codecs) > opts.audio_track_id else None
    if info.audio_codecs and audio is None:
        log.warning("%s has %d audio track(s); track %d does not exist, the cut has no audio",
                    video.name, len(info.audio_codecs), opts.audio_track_id)  # fmt: skip
    args = ffmpeg.build_cut_video_args(
        video, partial, start_s=start, duration_s=duration, audio_track=audio, bitrate_mbit=opts.bitrate,
        muxer=_muxer_for(out),
    )
    expected = int(float(info.video.frame_rate) * (duration if duration is not None else total - start))
    try:
        ffmpeg.run_ffmpeg(args, total_frames=expected, desc="cut")
    except ffmpeg.FFmpegError as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not cut {video} ({exc.detail})") from None
    os.replace(partial, out)
    cut = _probe_video(out)
    assert cut.video is not None
    return Report(
        stage="cut-video",
        summary=f"{out.name}: {cut.video.frames} frames, {float(cut.video.duration):.3f} s"
        + (", with audio" if cut.has_audio else ", no audio"),
        seconds=time.perf_counter() - started,
        counts={"frames": cut.video.frames},
    )


def _muxer_for(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return {"mkv": "matroska", "m4v": "mp4", "ts": "mpegts", "mts": "mpegts", "m2ts": "mpegts",
            "mpg": "mpeg", "mpeg": "mpeg", "wmv": "asf", "3gp": "3gp"}.get(ext, ext)  # fmt: skip


# ---------------------------------------------------------------- denoise


@dataclass(frozen=True)
class DenoiseOptions:
    side: str = option("Side", "dst", choices=("src", "dst"), ask=False, help="which frames to denoise")
    factor: int = option("Denoise factor", 7, min=1, max=20, help="hqdn3d strength; higher = smoother, softer")


def denoise(ws: Workspace, opts: DenoiseOptions) -> Report:
    """Temporal denoise of `data_<side>/` frames, in place (each file replaced atomically).

    ffmpeg writes every denoised frame into a temporary folder first; then the plan of which
    result replaces which frame (`.facelab-denoise.json`) is written before the first frame is
    replaced. A run stopped while replacing is finished by the next run, which then denoises
    nothing: no frame is denoised twice."""
    started = time.perf_counter()
    ws.require()
    folder = ws.frames_dir(opts.side)  # type: ignore[arg-type]
    finished = _finish_denoise(folder)
    if finished:
        return Report("denoise", f"finished the interrupted denoise of {_rel(ws, folder)}: {finished} frames "
                      "(nothing was denoised twice; run again to denoise once more)", time.perf_counter() - started,
                      {"frames": finished})  # fmt: skip
    frames = list_images(folder)
    if not frames:
        raise UserError(f"{_rel(ws, folder)} has no frames: run the frame extraction first")
    exts = sorted({p.suffix.lower() for p in frames})
    if len(exts) > 1:
        raise UserError(f"{_rel(ws, folder)} mixes image formats ({', '.join(exts)}): keep one")
    ext = "png" if exts[0] == ".png" else "jpg"
    if exts[0] not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"denoise works on png or jpg frames, {_rel(ws, folder)} holds {exts[0]}")
    tmp = _fresh_tmp_dir(folder, "denoise")
    try:
        src_dir, out_dir = tmp / "in", tmp / "out"
        src_dir.mkdir()
        out_dir.mkdir()
        # A gap-free view of the frames in name order, whatever their names (links, not copies).
        for i, frame in enumerate(frames, start=1):
            link_or_copy(frame, src_dir / f"{i:06d}{frame.suffix}")
        args = ffmpeg.build_denoise_args(src_dir / f"%06d{frames[0].suffix}", out_dir / f"%06d.{ext}",
                                         factor=opts.factor, ext=ext)  # fmt: skip
        try:
            ffmpeg.run_ffmpeg(args, total_frames=len(frames), desc="denoise")
        except ffmpeg.FFmpegError as exc:
            raise UserError(f"denoise failed on {_rel(ws, folder)} ({exc.detail})") from None
        results = list_images(out_dir)
        if len(results) != len(frames):
            raise UserError(f"denoise wrote {len(results)} frames for {len(frames)}: nothing was replaced")
        moves = [(result.name, frame.name) for frame, result in zip(frames, results)]
        write_text_atomic(folder / DENOISE_PLAN, json.dumps({"factor": opts.factor, "moves": moves}))
        _replace_denoised(folder, moves)
    finally:
        if not (folder / DENOISE_PLAN).exists():  # else the results are needed to finish
            shutil.rmtree(tmp, ignore_errors=True)
    return Report(
        stage="denoise",
        summary=f"{len(frames)} frames in {_rel(ws, folder)} denoised (factor {opts.factor})",
        seconds=time.perf_counter() - started,
        counts={"frames": len(frames)},
    )


DENOISE_PLAN = ".facelab-denoise.json"


def _replace_denoised(folder: Path, moves: list[tuple[str, str]]) -> None:
    out_dir = folder / f"{_TMP_PREFIX}denoise" / "out"
    for result, frame in moves:
        if (out_dir / result).exists():  # gone: that frame was replaced before the interruption
            os.replace(out_dir / result, folder / frame)
    fsync_dir(folder)
    (folder / DENOISE_PLAN).unlink()
    shutil.rmtree(out_dir.parent, ignore_errors=True)


def _finish_denoise(folder: Path) -> int:
    """Finish the replacing an interrupted denoise left; how many frames its plan covered (0: none)."""
    path = folder / DENOISE_PLAN
    if not path.exists():
        return 0
    try:
        moves = [(plain_file_name(r, str(path)), plain_file_name(f, str(path))) for r, f in json.loads(path.read_text("utf-8"))["moves"]]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise UserError(f"{path} (the plan of an interrupted denoise) cannot be read: delete it and extract the frames again") from None
    log.warning("finishing the interrupted denoise of %d frames in %s", len(moves), folder)
    _replace_denoised(folder, moves)
    return len(moves)


# ---------------------------------------------------------------- merged -> video


@dataclass(frozen=True)
class MergedVideoOptions:
    container: str = option("Container", "mp4", choices=("mp4", "mov"), ask=False, help="output file type")
    lossless: bool = option("Lossless", False, ask=False,
                            help="mp4: x264 lossless in 4:4:4; mov: PNG frames (bit-exact, large)")  # fmt: skip
    bitrate: int = option("Bitrate of output file in MB/s", 16, min=1, max=500,
                          ask=lambda v: not v["lossless"], help="video bitrate in Mbit/s (ignored when lossless)")  # fmt: skip
    fps: float = option("FPS", 0.0, min=0, max=240, ask=False,
                        help="0 = exactly data_dst's frame rate (25 if there is no data_dst video)")  # fmt: skip
    include_audio: bool = option("Include audio", True, ask=False, help="copy the audio of data_dst.* into the result")


def video_from_frames(ws: Workspace, opts: MergedVideoOptions) -> Report:
    """`data_dst/merged/` -> `result.<ext>`, and `merged_mask/` -> `result_mask.<ext>`."""
    started = time.perf_counter()
    ws.require()
    frames = list_images(ws.merged_dir)
    if not frames:
        raise UserError(f"{_rel(ws, ws.merged_dir)} has no frames: run 7_merge_SAEHD first")
    dst_stems = [p.stem for p in list_images(ws.frames_dir("dst"))]
    try:
        seq = numbered_sequence(frames, expected_stems=dst_stems)
    except ValueError as exc:
        raise UserError(f"{exc}: merge every frame first (7_merge_*), then run this again") from None

    reference = ws.find_video("dst", required=False)
    ref_info = _probe_video(reference) if reference is not None else None
    rate, timescale = _output_rate(opts, ref_info)
    first = read_image(frames[0])
    if first is None:
        raise UserError(f"{frames[0]} cannot be read as an image")
    height, width = first.shape[:2]
    settings = ffmpeg.EncodeSettings(
        container=opts.container,
        lossless=opts.lossless,
        bitrate_mbit=opts.bitrate,
        frame_rate=rate,
        timescale=timescale,
        pad_to_even=bool(width % 2 or height % 2),
    )
    audio_source = None
    audio_codec = None
    if opts.include_audio and ref_info is not None and ref_info.has_audio:
        audio_source, audio_codec = reference, ref_info.audio_codecs[0]

    out = ws.result_path(opts.container)
    _encode(ws, seq.pattern, seq.first, seq.count, out, settings, audio_source, audio_codec)
    summary = f"{_rel(ws, out)}: {seq.count} frames at {_fmt_rate(rate)} fps, " + (
        f"audio from {reference.name if reference else ''} ({audio_codec})" if audio_source else "no audio"
    )

    masks = list_images(ws.merged_mask_dir)
    if masks:
        summary += f"; mask video {_rel(ws, _encode_masks(ws, opts, masks, frames, settings))}"
    return Report(
        stage="video-from-frames",
        summary=summary,
        seconds=time.perf_counter() - started,
        counts={"frames": seq.count, "masks": len(masks)},
    )


def _output_rate(opts: MergedVideoOptions, ref_info) -> tuple[Fraction, int | None]:  # noqa: ANN001
    """(frame rate, container timescale) of the result: --fps, else data_dst's, else 25."""
    if opts.fps:
        return ffmpeg.snap_frame_rate(opts.fps), None
    if ref_info is not None and ref_info.video is not None:
        tb = ref_info.video.time_base
        return ref_info.video.frame_rate, tb.denominator if tb.numerator == 1 else None
    log.warning("no data_dst.* video to take the frame rate from: using 25 fps (set --fps)")
    return Fraction(25), None


def _encode_masks(ws: Workspace, opts: MergedVideoOptions, masks: list[Path], frames: list[Path],
                  settings: ffmpeg.EncodeSettings) -> Path:  # fmt: skip
    """`merged_mask/` -> `result_mask.<ext>` (lossless grey, the result's rate and padding)."""
    try:
        mseq = numbered_sequence(masks, expected_stems=[p.stem for p in frames])
    except ValueError as exc:
        raise UserError(f"{exc}: the mask frames do not match the merged frames") from None
    mask_settings = ffmpeg.EncodeSettings(
        container=opts.container, lossless=True, frame_rate=settings.frame_rate, timescale=settings.timescale,
        pad_to_even=settings.pad_to_even, gray=True,
    )  # fmt: skip
    mask_out = ws.result_mask_path(opts.container)
    _encode(ws, mseq.pattern, mseq.first, mseq.count, mask_out, mask_settings, None, None)
    return mask_out


def _encode(
    ws: Workspace,
    pattern: str,
    start: int,
    count: int,
    out: Path,
    settings: ffmpeg.EncodeSettings,
    audio_source: Path | None,
    audio_codec: str | None,
) -> None:
    """Encode to a temporary name, check the frame count, then rename over `out`."""
    partial = out.with_name(f"{_TMP_PREFIX}{out.name}")
    args = ffmpeg.build_video_from_frames_args(
        pattern, start, partial, settings, audio_source=audio_source, audio_codec=audio_codec,
        metadata=SYNTHETIC_TAGS,
    )  # fmt: skip
    try:
        ffmpeg.run_ffmpeg(args, total_frames=count, desc=out.name)
        written = ffmpeg.probe(partial)
    except ffmpeg.FFmpegError as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"could not write {_rel(ws, out)} ({exc.detail})") from None
    frames_written = written.video.frames if written.video else 0
    if frames_written != count:
        partial.unlink(missing_ok=True)
        raise UserError(f"{out.name} came out with {frames_written} frames instead of {count}; nothing replaced")
    os.replace(partial, out)



@dataclass(frozen=True)
class TimelapseVideoOptions:
    model: str = option("Model", "saehd", choices=("saehd", "quick96"), ask=False, help="which kind of model")
    model_name: str = option("Model name", "", ask=False, help="whose timelapse; default: the most recently trained model")
    fps: int = option("Frames per second", 10, min=1, max=120, ask=False, help="timelapse images shown per second")


def timelapse_video(ws: Workspace, opts: TimelapseVideoOptions) -> Report:
    """`model/<name>/timelapse/*.jpg` (one per save) -> `model/<name>/timelapse.mp4`, a frame per image.

    The images are linked into a numbered sequence in a temporary folder (their names are
    iterations, with gaps) and encoded as the merged frames are, synthetic label included."""
    from facelab.models import store
    from facelab.training import timelapse

    started = time.perf_counter()
    ws.require()
    folder = store.find(ws, opts.model, opts.model_name)
    images = timelapse.timelapse_images(folder)
    if not images:
        raise UserError(f"{folder / timelapse.FOLDER} holds no timelapse images: train with the timelapse on "
                        "(the default) and let it save at least once")  # fmt: skip
    out = folder / "timelapse.mp4"
    staging = folder / f"{_TMP_PREFIX}timelapse"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for i, image in enumerate(images, 1):
            link_or_copy(image, staging / f"{i:07d}.jpg")
        settings = ffmpeg.EncodeSettings(frame_rate=Fraction(opts.fps), pad_to_even=True)
        _encode(ws, str(staging / "%07d.jpg"), 1, len(images), out, settings, None, None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    first, last = int(images[0].stem), int(images[-1].stem)
    return Report("timelapse-video", f"{_rel(ws, out)}: {len(images)} frames, iterations {first} to {last}, {opts.fps} per second",
                  time.perf_counter() - started, {"frames": len(images)})  # fmt: skip
