"""Extraction speed: frames/s end to end and ms per step, for 720p video with one face.

The identity embedding's cost is printed per face (`identity_ms`), and end to end with and
without identities (`--no-identity`): along a dst track it is computed every 8th frame.

Builds 1280x720 frames from the real carphone video (upscaled x4 and placed in a 720p frame,
the face moving), then runs the extraction stage exactly as script 5 does (detect, landmarks,
Lanczos warp, JPEG q90 write, debug images off) and, separately, times each step on one frame.

    _internal/venv/bin/python bench/extract.py [--frames 120] [--ext png|jpg]

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402
from media import media_file  # noqa: E402

from facelab.core.landmarks import FaceType, get_transform_mat, warp_face  # noqa: E402
from facelab.detect.base import create_detector, create_identity, create_landmarker  # noqa: E402
from facelab.io.frames import encode_image, read_image  # noqa: E402
from facelab.stages.extract import ExtractOptions, extract  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402


def make_frames(folder: Path, count: int, ext: str) -> None:
    cap = cv2.VideoCapture(str(media_file("carphone.mp4")))
    frames = []
    while len(frames) < 120:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    for i in range(count):
        big = cv2.resize(frames[i % len(frames)], (704, 576), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((720, 1280, 3), 40, np.uint8)
        x = 100 + (i * 3) % 400
        canvas[72:648, x : x + 704] = big
        cv2.imwrite(str(folder / f"{i + 1:05d}.{ext}"), canvas)


def median_ms(fn, repeat: int = 15) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--ext", choices=("png", "jpg"), default="png")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="facelab-bench-"))
    try:
        ws = Workspace.at(tmp / "workspace")
        ws.create_layout()
        make_frames(ws.frames_dir("dst"), args.frames, args.ext)
        base = {"bench": "extract", "device": "cpu", **machine(),
                "cores": os.cpu_count(), "frame": "1280x720", "frame_format": args.ext,
                "detector": "blazeface", "landmarker": "facemesh68"}  # fmt: skip

        frame_path = sorted(ws.frames_dir("dst").glob(f"*.{args.ext}"))[0]
        frame = read_image(frame_path)
        det, lmk = create_detector("blazeface"), create_landmarker("facemesh68")
        dets = det.detect(frame)
        lm = lmk.landmarks(frame, dets)[0]
        mat = get_transform_mat(lm, 512, FaceType.WHOLE_FACE)
        face = warp_face(frame, mat, 512)
        identity = create_identity()
        steps = {
            "decode_ms": median_ms(lambda: read_image(frame_path)),
            "detect_ms": median_ms(lambda: det.detect(frame)),
            "landmarks_ms": median_ms(lambda: lmk.landmarks(frame, dets)),
            "warp_ms": median_ms(lambda: warp_face(frame, mat, 512)),
            "jpeg_encode_ms": median_ms(lambda: encode_image(face, ".jpg", 90)),
            "identity_ms": median_ms(lambda: identity.embed(frame, [lm])),
        }
        print(json.dumps({**base, "what": "ms per step, one frame, one thread", **{k: round(v, 2) for k, v in steps.items()}}))

        for smooth, ident in ((False, False), (False, True), (True, True)):
            opts = ExtractOptions(side="dst", smooth_landmarks=smooth, identity=ident, overwrite=True)
            t = time.perf_counter()
            report = extract(ws, opts)
            seconds = time.perf_counter() - t
            print(json.dumps({**base, "what": "end to end (stage 5, JPEG q90 writes)", "smooth": smooth, "identity": ident,
                              "frames": report.counts["frames"], "faces": report.counts["faces"],
                              "seconds": round(seconds, 2), "frames_per_s": round(report.counts["frames"] / seconds, 1)}))  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
