"""68-point landmark conventions, DFL's alignment template and face-type transform matrices.

Follows dfl-spec §4 ("LandmarksProcessor") and is checked against DFL's own numbers in
`dfl-golden/landmarks.npz`. Differences, on purpose:
- everything is float64 (DFL kept its anchor points in float32; the golden README measures the
  difference at <= 3.4e-4 px on mapped points);
- `warp_face` really uses the interpolation it names (DFL passed Lanczos in the `dst` argument
  and so warped bilinearly; spec §14 item 10).

Conventions: iBUG 300-W order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67),
(x, y) pixels with y down, "right" = the subject's right = image left.
"""

from __future__ import annotations

import math
from enum import IntEnum

import cv2
import numpy as np

from facelab.types import Affine2x3, ImageBGR, Landmarks68


FACE_TYPE_CHOICES = ("h", "mf", "f", "wf", "head")
"""The face types a user chooses among (short names; `FaceType.parse` reads them)."""


class FaceType(IntEnum):
    """DFL's face types; the int values are DFL's enum values (stored in its files)."""

    HALF = 0
    MID_FULL = 1
    FULL = 2
    FULL_NO_ALIGN = 3
    WHOLE_FACE = 4
    HEAD = 10
    HEAD_NO_ALIGN = 20
    MARK_ONLY = 100

    @property
    def dfl_name(self) -> str:
        """The name DFL writes into face metadata ("whole_face", ...)."""
        return _DFL_NAMES[self]

    @property
    def code(self) -> str:
        """Short option code as DFL's prompts use it (h, mf, f, wf, head, ...)."""
        return _CODES[self]

    @classmethod
    def parse(cls, value: str | int | FaceType) -> FaceType:
        """Accept an enum, its int, a DFL name ("whole_face") or a code ("wf")."""
        if isinstance(value, FaceType):
            return value
        if isinstance(value, int):
            return cls(value)
        key = str(value).strip().lower().replace("-", "_")
        for ft in cls:
            if key in (ft.dfl_name, ft.code, ft.name.lower()):
                return ft
        raise ValueError(f"unknown face type {value!r}; use one of {', '.join(ft.code for ft in cls)}")


_DFL_NAMES = {
    FaceType.HALF: "half_face", FaceType.MID_FULL: "midfull_face", FaceType.FULL: "full_face",
    FaceType.FULL_NO_ALIGN: "full_face_no_align", FaceType.WHOLE_FACE: "whole_face",
    FaceType.HEAD: "head", FaceType.HEAD_NO_ALIGN: "head_no_align", FaceType.MARK_ONLY: "mark_only",
}  # fmt: skip
_CODES = {
    FaceType.HALF: "h", FaceType.MID_FULL: "mf", FaceType.FULL: "f", FaceType.FULL_NO_ALIGN: "f_no_align",
    FaceType.WHOLE_FACE: "wf", FaceType.HEAD: "head", FaceType.HEAD_NO_ALIGN: "head_no_align",
    FaceType.MARK_ONLY: "mark_only",
}  # fmt: skip

# (padding, remove_align) per face type (spec §4 "Padding").
_PADDING = {
    FaceType.HALF: (0.0, False), FaceType.MID_FULL: (0.0675, False), FaceType.FULL: (0.2109375, False),
    FaceType.FULL_NO_ALIGN: (0.2109375, True), FaceType.WHOLE_FACE: (0.40, False),
    FaceType.HEAD: (0.70, False), FaceType.HEAD_NO_ALIGN: (0.70, True),
}  # fmt: skip

# Mirror pairs of the 68 points (spec §4 "Flip").
FLIP_PAIRS = (
    [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (31, 35), (32, 34),
       (50, 52), (49, 53), (48, 54), (59, 55), (58, 56), (67, 65), (60, 64), (61, 63)]
)  # fmt: skip

FLIP_INDEX = np.arange(68)
for _a, _b in FLIP_PAIRS:
    FLIP_INDEX[_a], FLIP_INDEX[_b] = _b, _a

# DFL's alignment target (`landmarks_2D_new`): normalised mean face of points 17-47, then 48, 54.
MEAN_FACE_ALIGN = np.array([
    [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482], [0.29077, 0.0344891],
    [0.393397, 0.0773906], [0.586856, 0.0773906], [0.689483, 0.0344891], [0.799124, 0.0187482],
    [0.904991, 0.038915], [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
    [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326], [0.426036, 0.609345],
    [0.490127, 0.628106], [0.554217, 0.609345], [0.613373, 0.587326], [0.121737, 0.216423],
    [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
    [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
    [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099], [0.254149, 0.780233],
    [0.726104, 0.780233],
], dtype=np.float64)  # fmt: skip
ALIGN_POINT_INDEX = np.r_[17:49, 54]

# 3D mean face (mm) for pose: the model DFL's estimate_pitch_yaw_roll uses (OpenFace's mean shape).
LANDMARKS_68_3D = np.array([
    [-73.393523, -29.801432, 47.667532], [-72.775014, -10.949766, 45.909403], [-70.533638, 7.929818, 44.842580],
    [-66.850058, 26.074280, 43.141114], [-59.790187, 42.564390, 38.635298], [-48.368973, 56.481080, 30.750622],
    [-34.121101, 67.246992, 18.456453], [-17.875411, 75.056892, 3.609035], [0.098749, 77.061286, -0.881698],
    [17.477031, 74.758448, 5.181201], [32.648966, 66.929021, 19.176563], [46.372358, 56.311389, 30.770570],
    [57.343480, 42.419126, 37.628629], [64.388482, 25.455880, 40.886309], [68.212038, 6.990805, 42.281449],
    [70.486405, -11.666193, 44.142567], [71.375822, -30.365191, 47.140426], [-61.119406, -49.361602, 14.254422],
    [-51.287588, -58.769795, 7.268147], [-37.804800, -61.996155, 0.442051], [-24.022754, -61.033399, -6.606501],
    [-11.635713, -56.686759, -11.967398], [12.056636, -57.391033, -12.051204], [25.106256, -61.902186, -7.315098],
    [38.338588, -62.777713, -1.022953], [51.191007, -59.302347, 5.349435], [60.053851, -50.190255, 11.615746],
    [0.653940, -42.193790, -13.380835], [0.804809, -30.993721, -21.150853], [0.992204, -19.944596, -29.284036],
    [1.226783, -8.414541, -36.948060], [-14.772472, 2.598255, -20.132003], [-7.180239, 4.751589, -23.536684],
    [0.555920, 6.562900, -25.944448], [8.272499, 4.661005, -23.695741], [15.214351, 2.643046, -20.858157],
    [-46.047290, -37.471411, 7.037989], [-37.674688, -42.730510, 3.021217], [-27.883856, -42.711517, 1.353629],
    [-19.648268, -36.754742, -0.111088], [-28.272965, -35.134493, -0.147273], [-38.082418, -34.919043, 1.476612],
    [19.265868, -37.032306, -0.665746], [27.894191, -43.342445, 0.247660], [37.437529, -43.110822, 1.696435],
    [45.170805, -38.086515, 4.894163], [38.196454, -35.532024, 0.282961], [28.764989, -35.484289, -1.172675],
    [-28.916267, 28.612716, -2.240310], [-17.533194, 22.172187, -15.934335], [-6.684590, 19.029051, -22.611355],
    [0.381001, 20.721118, -23.748437], [8.375443, 19.035460, -22.721995], [18.876618, 22.394109, -15.610679],
    [28.794412, 28.079924, -3.217393], [19.057574, 36.298248, -14.987997], [8.956375, 39.634575, -22.554245],
    [0.381549, 40.395647, -23.591626], [-7.428895, 39.836405, -22.406106], [-18.160634, 36.677899, -15.121907],
    [-24.377490, 28.677771, -4.785684], [-6.897633, 25.475976, -20.893742], [0.340663, 26.014269, -22.220479],
    [8.444722, 25.326198, -21.025520], [24.474473, 28.323008, -5.712776], [8.449166, 30.596216, -20.671489],
    [0.205322, 31.408738, -21.903670], [-7.198266, 30.844876, -20.328022],
], dtype=np.float32)  # fmt: skip


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image: x -> width - x - 1 and left/right swapped."""
    out = np.array(landmarks, dtype=np.float64, copy=True)[FLIP_INDEX]
    out[:, 0] = width - out[:, 0] - 1
    return out


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform src -> dst (Umeyama 1991); 3x3 homogeneous matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean
    a = dst_demean.T @ src_demean / num
    d = np.ones(dim)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1)
    u, s, vt = np.linalg.svd(a)
    rank = np.linalg.matrix_rank(a)
    if rank == 0:
        return np.full_like(t, np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            keep = d[dim - 1]
            d[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[dim - 1] = keep
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = (1.0 / src_demean.var(axis=0).sum()) * (s @ d) if estimate_scale else 1.0
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def transform_points(points: np.ndarray, mat: Affine2x3, invert: bool = False) -> np.ndarray:
    """Apply a 2x3 affine to N x 2 points (or its inverse); float64 out."""
    mat = np.asarray(mat, np.float64)
    if invert:
        mat = cv2.invertAffineTransform(mat)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ mat[:, :2].T + mat[:, 2]


def umeyama_to_mean_face(landmarks: Landmarks68) -> Affine2x3:
    """Frame pixels -> DFL's unit alignment square (the first step of every transform)."""
    lm = np.asarray(landmarks, np.float64)
    return umeyama(lm[ALIGN_POINT_INDEX], MEAN_FACE_ALIGN, True)[:2]


def estimate_averaged_yaw(landmarks: np.ndarray) -> float:
    """DFL's cheap yaw from the jaw/nose x-gaps (used for HEAD framing); positive = turned right."""
    lm = np.asarray(landmarks, np.float64)
    left = ((lm[27, 0] - lm[0, 0]) + (lm[28, 0] - lm[1, 0]) + (lm[29, 0] - lm[2, 0])) / 3.0
    right = ((lm[16, 0] - lm[27, 0]) + (lm[15, 0] - lm[28, 0]) + (lm[14, 0] - lm[29, 0])) / 3.0
    return float(right - left)


def get_transform_mat(landmarks: Landmarks68, size: int, face_type: FaceType | str, scale: float = 1.0) -> Affine2x3:
    """Frame -> aligned-face affine for a `size` x `size` crop of `face_type` (spec §4).

    Args:
        landmarks: 68 x 2 frame pixels.
        size: output square side in pixels.
        face_type: any face type but MARK_ONLY.
        scale: > 1 zooms in (the merger's output face scale).
    Returns:
        2 x 3 float64 matrix for `cv2.warpAffine(frame, M, (size, size))`.
    """
    face_type = FaceType.parse(face_type)
    if face_type == FaceType.MARK_ONLY:
        raise ValueError("mark_only faces have no transform")
    lm = np.asarray(landmarks, np.float64)
    mat = umeyama_to_mean_face(lm)
    g_p = transform_points(np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)], np.float64), mat, invert=True)
    g_c = g_p[4].copy()
    tb_diag = _unit(g_p[2] - g_p[0])
    bt_diag = _unit(g_p[1] - g_p[3])
    padding, remove_align = _PADDING[face_type]
    mod = (1.0 / scale) * (np.linalg.norm(g_p[0] - g_p[2]) * (padding * math.sqrt(2.0) + 0.5))
    if face_type == FaceType.WHOLE_FACE:
        vec = g_p[0] - g_p[3]
        g_c += vec * 0.07  # 7 % lower edge down: more forehead
    elif face_type == FaceType.HEAD:
        yaw = estimate_averaged_yaw(transform_points(lm, mat))
        hvec = g_p[0] - g_p[1]
        yaw *= abs(math.tanh(yaw * 2))  # damp near zero
        g_c -= hvec * (yaw / 2.0)
        g_c += (g_p[0] - g_p[3]) * 0.50
    if not remove_align:
        anchors = np.array([g_c - tb_diag * mod, g_c + bt_diag * mod, g_c + tb_diag * mod])
    else:
        square = np.array([g_c - tb_diag * mod, g_c + bt_diag * mod, g_c + tb_diag * mod, g_c - bt_diag * mod])
        side = math.sqrt(_polygon_area(square)) / 2
        anchors = np.array([g_c + [-side, -side], g_c + [side, -side], g_c + [side, side]])
    target = np.array([(0, 0), (size, 0), (size, size)], np.float64)
    return _affine_from_3_points(anchors, target)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _affine_from_3_points(src: np.ndarray, dst: np.ndarray) -> Affine2x3:
    """Exact affine through three point pairs, in float64 (cv2.getAffineTransform wants float32)."""
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


def get_rect_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """DFL's face box (l, t, r, b): the unrotated full-face square of the landmarks, in frame px."""
    mat = get_transform_mat(landmarks, 256, FaceType.FULL_NO_ALIGN)
    corners = transform_points(np.array([(0, 0), (255, 255)], np.float64), mat, invert=True)
    return np.array([corners[0, 0], corners[0, 1], corners[1, 0], corners[1, 1]])


def warp_face(
    frame_bgr: ImageBGR,
    mat_frame_to_face: Affine2x3,
    size: int,
    interpolation: int = cv2.INTER_LANCZOS4,
    border: int = cv2.BORDER_CONSTANT,
) -> ImageBGR:
    """Cut the aligned face out of a frame with the interpolation asked for (DFL: bilinear by mistake)."""
    return cv2.warpAffine(frame_bgr, np.asarray(mat_frame_to_face, np.float64), (size, size),
                          flags=interpolation, borderMode=border)  # fmt: skip


def estimate_pitch_yaw_roll(aligned_landmarks: np.ndarray, size: int = 256) -> tuple[float, float, float]:
    """Head pose in radians, each clipped to +-pi/2, returned as DFL does: (-pitch, yaw, roll).

    solvePnP of the 3D mean face (points 0-26 and 30-35) against aligned-face landmarks, with
    focal length `size` and the principal point at the centre.
    """
    lm = np.asarray(aligned_landmarks, np.float32)
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)
    model = np.concatenate([LANDMARKS_68_3D[:27], LANDMARKS_68_3D[30:36]])
    image = np.concatenate([lm[:27], lm[30:36]])
    _, rvec, _ = cv2.solvePnP(model, image, camera, np.zeros((4, 1)))
    rot = cv2.Rodrigues(rvec)[0]
    sy = math.sqrt(rot[0, 0] ** 2 + rot[1, 0] ** 2)
    if sy >= 1e-6:
        pitch = math.atan2(rot[2, 1], rot[2, 2])
        yaw = math.atan2(-rot[2, 0], sy)
        roll = math.atan2(rot[1, 0], rot[0, 0])
    else:
        pitch = math.atan2(-rot[1, 2], rot[1, 1])
        yaw = math.atan2(-rot[2, 0], sy)
        roll = 0.0
    half_pi = math.pi / 2
    pitch, yaw, roll = (float(np.clip(v, -half_pi, half_pi)) for v in (pitch, yaw, roll))
    return -pitch, yaw, roll


def calc_face_pitch(aligned_landmarks: np.ndarray) -> float:
    """DFL's quick pitch from the jaw/brow heights (used by its sorter)."""
    lm = np.asarray(aligned_landmarks, np.float64)
    t = ((lm[6, 1] - lm[8, 1]) + (lm[10, 1] - lm[8, 1])) / 2.0
    b = lm[8, 1]
    return float(b - t)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of `outer` after `inner`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def reframe_face(old_type: FaceType, new_type: FaceType, size: int, old_wh: tuple[int, int],
                 image_to_face: np.ndarray | None, source_landmarks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """(old face image -> new face image, frame -> new face image) for an aligned face of size
    `old_wh` resized to `size` px and, when the types differ, re-framed to `new_type` through its
    frame-space landmarks (both `image_to_face` and `source_landmarks` are needed then)."""
    if new_type != old_type:
        assert image_to_face is not None and source_landmarks is not None
        new_mat = get_transform_mat(source_landmarks, size, new_type)
        return compose_affine(new_mat, cv2.invertAffineTransform(image_to_face)), new_mat
    w, h = old_wh
    m = np.array([[size / w, 0, 0], [0, size / h, 0]])
    return m, None if image_to_face is None else compose_affine(m, image_to_face)
