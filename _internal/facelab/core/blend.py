"""Putting a swapped face back into its frame (dfl-spec §11 "Per face"), as pure functions.

`paste_face(frame, face, cfg)` takes the frame (BGR, uint8 or float32 [0, 1]), the model's
outputs for one face in face space and the merge config, and returns a `Paste`: the new face and
its mask in a window of the frame around the face (`merge_face` applies it to a whole frame).
Modes (registry `register_mode` / `list_modes`): original, overlay, hist-match,
seamless, seamless-hist-match, raw-rgb, raw-predict. Mask modes: full, dst, learned-prd,
learned-dst, learned-prd*dst, learned-prd+dst, xseg-prd, xseg-dst, xseg-prd*dst, all.

Differences from DFL, on purpose (spec §14): denoise and bicubic degrade act on the swapped face,
not on the background frame; motion blur works with several faces per frame; super resolution is
not offered (no enhancer model ships); colour degrade quantises to a 64-level-per-channel grid
instead of PIL's adaptive palette (no Pillow in the set-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelab.core.color import color_balance, color_hist_match, create_color, masked_hist_match_inputs
from facelab.core.landmarks import FaceType, get_transform_mat, transform_points
from facelab.core.masks import LANDMARK_MASKS, hull_mask
from facelab.core.registry import Registry

MODES = Registry("merge mode")
MASK_MODES = ("full", "dst", "learned-prd", "learned-dst", "learned-prd*dst", "learned-prd+dst",
              "xseg-prd", "xseg-dst", "xseg-prd*dst", "all", "components", "extended")  # fmt: skip
COLOR_MODES = ("none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m", "avg-color")
SHARPEN_MODES = ("none", "box", "gaussian")
RANGES = {  # the numeric merge settings: (lowest, highest), as DFL's merger clamps them
    "erode": (-400, 400), "blur": (0, 400), "motion_blur_power": (0, 100), "output_face_scale": (-50, 50),
    "blursharpen_amount": (-100, 100), "hist_match_threshold": (0, 255), "image_denoise_power": (0, 500),
    "bicubic_degrade_power": (0, 100), "color_degrade_power": (0, 100),
    "brightness": (-100, 100), "contrast": (-100, 100), "temperature": (-100, 100), "tint": (-100, 100),
}  # fmt: skip


register_mode = MODES.register
list_modes = MODES.names


@dataclass(frozen=True)
class MergeConfig:
    """DFL's merger config; the defaults are DFL's interactive defaults."""

    mode: str = "overlay"
    mask_mode: str = "learned-prd*dst"
    # ranges: RANGES above
    erode: int = 0  # negative dilates; mask space px (4 x model resolution)
    blur: int = 0
    motion_blur_power: int = 0
    output_face_scale: int = 0  # %
    color_transfer: str = "rct"
    sharpen_mode: str = "none"
    blursharpen_amount: int = 0
    hist_match_threshold: int = 238
    masked_hist_match: bool = True
    image_denoise_power: int = 0
    bicubic_degrade_power: int = 0
    color_degrade_power: int = 0
    # manual colour balance of the swapped face, after the colour transfer (core.color.color_balance)
    brightness: int = 0
    contrast: int = 0
    temperature: int = 0
    tint: int = 0

    @classmethod
    def from_dict(cls, data: object) -> MergeConfig:
        """A config read from a file (the merger window's session): every field known, of its
        type, in its range or among its choices; ValueError naming the field otherwise."""
        from dataclasses import fields

        from facelab.core.color import list_colors

        if not isinstance(data, dict):
            raise ValueError("a merge config must be an object")
        known = {f.name: f for f in fields(cls)}
        if unknown := set(data) - set(known):
            raise ValueError(f"unknown merge settings {sorted(unknown)[:3]}")
        choices = {"mode": list_modes(), "mask_mode": MASK_MODES, "color_transfer": list_colors(), "sharpen_mode": SHARPEN_MODES}
        for key, value in data.items():
            kind = type(known[key].default)
            if type(value) is not kind and not (kind is float and type(value) is int):
                raise ValueError(f"{key}: expected {kind.__name__}, got {value!r:.40}")
            if key in RANGES and not RANGES[key][0] <= value <= RANGES[key][1]:
                raise ValueError(f"{key}: {value} is outside {RANGES[key][0]}..{RANGES[key][1]}")
            if key in choices and value not in choices[key]:
                raise ValueError(f"{key}: {value!r:.40} is not one of the known ones")
        return cls(**data)


@dataclass
class FaceInput:
    """One face: where it is and what the models made of it.

    Attributes:
        landmarks: 68 x 2 frame pixels (the face's source_landmarks).
        face_type: the model's framing; resolution: the model's size S.
        pred_face: S x S x 3 swapped face; pred_face_mask / dst_mask: S x S learned masks.
        dst_crop: S x S x 3 the frame cut out at the face (the model's input).
        xseg_prd / xseg_dst: S x S XSeg masks of the swapped face / of the dst face, when needed.
        motion: (power px, angle deg) of the face's movement between neighbouring frames.
    """

    landmarks: np.ndarray
    face_type: FaceType
    resolution: int
    pred_face: np.ndarray
    pred_face_mask: np.ndarray
    dst_mask: np.ndarray
    dst_crop: np.ndarray
    xseg_prd: np.ndarray | None = None
    xseg_dst: np.ndarray | None = None
    motion: tuple[float, float] = (0.0, 0.0)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


def face_mask(face: FaceInput, cfg: MergeConfig) -> np.ndarray:
    """The face-space mask (S x S float32) for the mask mode."""
    s = face.resolution
    m = cfg.mask_mode
    if m == "full":
        mask = np.ones((s, s), np.float32)
    elif m == "dst":
        lm = transform_points(face.landmarks, get_transform_mat(face.landmarks, s, face.face_type))
        mask = hull_mask((s, s), lm)[..., 0]
    elif m in LANDMARK_MASKS:  # faceswap's landmark masks
        lm = transform_points(face.landmarks, get_transform_mat(face.landmarks, s, face.face_type))
        mask = LANDMARK_MASKS[m]((s, s), lm)[..., 0]
    elif m.startswith("learned"):
        prd, dst = face.pred_face_mask, face.dst_mask
        mask = {"learned-prd": prd, "learned-dst": dst, "learned-prd*dst": prd * dst,
                "learned-prd+dst": np.clip(prd + dst, 0, 1)}[m]  # fmt: skip
    else:
        if face.xseg_prd is None or face.xseg_dst is None:
            raise ValueError(f"mask mode {m} needs a trained XSeg model")
        mask = {"xseg-prd": face.xseg_prd, "xseg-dst": face.xseg_dst, "xseg-prd*dst": face.xseg_prd * face.xseg_dst,
                "all": face.pred_face_mask * face.dst_mask * face.xseg_prd * face.xseg_dst}[m]  # fmt: skip
    mask = mask.astype(np.float32)
    mask[mask < 1 / 255] = 0
    return mask


def refine_mask(mask_s: np.ndarray, s: int, cfg: MergeConfig) -> np.ndarray:
    """Erode/dilate and blur in the 4S mask space, as DFL (with a zero border so edges fade)."""
    big = cv2.resize(mask_s, (4 * s, 4 * s), interpolation=cv2.INTER_CUBIC)
    pad = s
    big = np.pad(big, pad)
    if cfg.erode:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(cfg.erode), abs(cfg.erode)))
        big = cv2.erode(big, k) if cfg.erode > 0 else cv2.dilate(big, k)
    if cfg.blur:
        border = pad + cfg.blur // 2
        big[:border] = 0
        big[-border:] = 0
        big[:, :border] = 0
        big[:, -border:] = 0
        k = cfg.blur + (1 - cfg.blur % 2)
        big = cv2.GaussianBlur(big, (k, k), 0)
    return np.clip(big[pad:-pad, pad:-pad], 0, 1)


def _sharpen(img: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    a = cfg.blursharpen_amount
    if cfg.sharpen_mode == "none" or a == 0:
        return img
    if a < 0:
        out = img
        for _ in range(min(10, -a // 10 + 1)):
            out = cv2.medianBlur(out, 5)
        return out
    if cfg.sharpen_mode == "box":
        return np.clip(img + (a / 100) * (img - cv2.blur(img, (3, 3))), 0, 1)
    blurred = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(cv2.addWeighted(img, 1 + a / 200, blurred, -a / 200, 0), 0, 1)


def _motion_blur(img: np.ndarray, power: float, angle_deg: float) -> np.ndarray:
    size = int(np.clip(int(power) + 1, 2, 50))
    k = np.zeros((size, size), np.float32)
    k[size // 2, :] = 1.0 / size
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle_deg, 1.0)
    k = cv2.warpAffine(k, rot, (size, size))
    return cv2.filter2D(img, -1, k / max(k.sum(), 1e-6))


def _degrade(img: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    for _ in range(cfg.image_denoise_power // 50):
        img = cv2.medianBlur(img, 5)
    if cfg.bicubic_degrade_power:
        h, w = img.shape[:2]
        f = 1 - cfg.bicubic_degrade_power / 101
        small = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_CUBIC)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if cfg.color_degrade_power:
        q = np.round(img * 63) / 63
        img = img + (q - img) * cfg.color_degrade_power / 100
    return np.clip(img, 0, 1)


@dataclass
class Paste:
    """What one face puts into its frame, inside a window (rows y0.., cols x0..) around the face.

    Outside the window the frame is untouched and the face's mask is 0, so compositing costs
    the face's size, not the frame's (a 720p frame with one face: ~20x fewer pixels).

    Attributes:
        face: h x w x 3 float32, the new face warped into the frame.
        alpha: h x w float32, how much of it shows (the frame mask; raw-rgb: the whole square).
        mask: h x w float32, the face's frame mask (what `merged_mask` records).
    """

    y0: int
    x0: int
    face: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def blend_into(self, frame: np.ndarray) -> None:
        """frame * (1 - alpha) + face * alpha, in place; frame is uint8 or float32 in [0, 1]."""
        region = frame[self.window]
        a = self.alpha[..., None]
        if frame.dtype == np.uint8:
            mixed = region.astype(np.float32) * (1 / 255) * (1 - a) + self.face * a
            region[...] = (np.clip(mixed, 0, 1) * 255 + 0.5).astype(np.uint8)
        else:
            region[...] = np.clip(region * (1 - a) + self.face * a, 0, 1)


def paste_face(frame: np.ndarray, face: FaceInput, cfg: MergeConfig) -> Paste | None:
    """One face made ready for its frame (dfl-spec §11 "Per face" steps 3-5), or None when the
    mode pastes nothing (original, raw-predict) or the face lies outside the frame.

    `frame` (H x W x 3, uint8 or float32 [0, 1]) is only read, by the seamless modes."""
    if cfg.mode in ("original", "raw-predict"):
        return None
    h, w = frame.shape[:2]
    s = face.resolution
    out_mat = get_transform_mat(face.landmarks, s, face.face_type, scale=1 + cfg.output_face_scale / 100)
    window = face_window(out_mat, s, h, w)
    if window is None:
        return None
    y0, y1, x0, x1 = window
    size = (x1 - x0, y1 - y0)
    out_mat = _shift(out_mat, x0, y0)  # frame-window -> face space
    mask_s = face_mask(face, cfg)
    raw = cfg.mode == "raw-rgb"
    big = np.clip(cv2.resize(mask_s, (4 * s, 4 * s), interpolation=cv2.INTER_CUBIC), 0, 1) if raw else refine_mask(mask_s, s, cfg)
    frame_mask = cv2.warpAffine(big, out_mat * 4.0, size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    frame_mask = np.clip(frame_mask, 0, 1)
    frame_mask[frame_mask < 1 / 255] = 0
    new_face = MODES.get(cfg.mode)(face, mask_s, cfg)
    new_face = color_balance(new_face, cfg.brightness, cfg.contrast, cfg.temperature, cfg.tint)
    new_face = _sharpen(new_face, cfg)
    if cfg.motion_blur_power and face.motion[0] > 0:
        new_face = _motion_blur(new_face, face.motion[0] * cfg.motion_blur_power / 100, face.motion[1])
    new_face = _degrade(new_face, cfg)
    pasted = cv2.warpAffine(new_face, out_mat, size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    alpha = frame_mask
    if raw:  # DFL: the whole swapped square goes in; the mask only goes to merged_mask
        square = cv2.warpAffine(np.ones((s, s), np.float32), out_mat, size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
        alpha = np.clip(square, 0, 1)
    if cfg.mode in ("seamless", "seamless-hist-match"):
        pasted = _seamless(frame[y0:y1, x0:x1], pasted, frame_mask)
    return Paste(y0, x0, pasted, alpha, frame_mask)


def face_window(out_mat: np.ndarray, s: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): the frame pixels the S x S face square (out_mat: frame -> face) can reach,
    with a margin for the cubic kernels; None if none of them is inside the frame."""
    m = 3.0  # face px: the cubic kernel reaches 2 px past the square's edge
    corners = np.array([[-m, -m], [s + m, -m], [-m, s + m], [s + m, s + m]])
    pts = transform_points(corners, out_mat, invert=True)
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(y0), int(y1), int(x0), int(x1)


def _shift(mat: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The frame -> face matrix for a window whose top-left pixel is frame (x0, y0)."""
    mat = np.array(mat, np.float64)
    mat[:, 2] += mat[:, :2] @ np.array([x0, y0], np.float64)
    return mat


def merge_face(frame: np.ndarray, face: FaceInput, cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """(new frame, frame-space mask H x W) for one face on a float32 [0, 1] frame, which is not
    modified (raw-predict: the swapped S x S face itself)."""
    if cfg.mode == "raw-predict":
        return face.pred_face, np.ones(face.pred_face.shape[:2], np.float32)
    out, mask = frame.copy(), np.zeros(frame.shape[:2], np.float32)
    paste = paste_face(frame, face, cfg)
    if paste is not None:
        paste.blend_into(out)
        mask[paste.window] = paste.mask
    return out, mask


def _seamless(frame: np.ndarray, pasted: np.ndarray, frame_mask: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone at the mask's bounding box (binarised at the first tenth that leaves pixels).
    `frame` (uint8 or float32 [0, 1]), `pasted` and `frame_mask` are the same window of the frame."""
    for i in range(1, 10):
        binary = (frame_mask > i / 10).astype(np.uint8)
        if binary.sum():
            break
    else:
        return pasted
    x, y, bw, bh = cv2.boundingRect(binary)
    if bw < 4 or bh < 4:
        return pasted
    center = (x + bw // 2, y + bh // 2)
    src = (np.clip(pasted, 0, 1) * 255 + 0.5).astype(np.uint8)
    dst = frame if frame.dtype == np.uint8 else (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
    try:
        return cv2.seamlessClone(src, np.ascontiguousarray(dst), binary * 255, center, cv2.NORMAL_CLONE).astype(np.float32) / 255
    except cv2.error:
        return pasted


def _colour(face: FaceInput, mask_s: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    return create_color(cfg.color_transfer)(face.pred_face, face.dst_crop, mask_s[..., None], rng=face.rng)


def _hist(face: FaceInput, mask_s: np.ndarray, cfg: MergeConfig, img: np.ndarray) -> np.ndarray:
    hist_mask = mask_s[..., None] if cfg.masked_hist_match else np.ones_like(mask_s)[..., None]
    a, b = masked_hist_match_inputs(img, face.dst_crop, hist_mask)
    return np.clip(color_hist_match(a, b, cfg.hist_match_threshold), 0, 1).astype(np.float32)


register_mode("overlay")(lambda face, mask_s, cfg: np.clip(_colour(face, mask_s, cfg), 0, 1))
register_mode("hist-match")(lambda face, mask_s, cfg: _hist(face, mask_s, cfg, face.pred_face))
register_mode("seamless")(lambda face, mask_s, cfg: np.clip(_colour(face, mask_s, cfg), 0, 1))
register_mode("seamless-hist-match")(lambda face, mask_s, cfg: _hist(face, mask_s, cfg, face.pred_face))
register_mode("raw-rgb")(lambda face, mask_s, cfg: face.pred_face)
register_mode("raw-predict")(lambda face, mask_s, cfg: face.pred_face)
register_mode("original")(lambda face, mask_s, cfg: face.dst_crop)


def compose_frame(frame: np.ndarray, faces: list[FaceInput], cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """(merged frame, mask) as uint8 for a BGR uint8 frame and its faces; only the windows
    around the faces are touched. Each face sees the faces pasted before it (seamless)."""
    if cfg.mode == "raw-predict" and faces:
        pred = faces[0].pred_face
        return (pred * 255 + 0.5).clip(0, 255).astype(np.uint8), np.full(pred.shape[:2], 255, np.uint8)
    out, mask = frame.copy(), np.zeros(frame.shape[:2], np.float32)
    for face in faces:
        paste = paste_face(out, face, cfg)
        if paste is not None:
            paste.blend_into(out)
            mask[paste.window] += paste.mask
    return out, (np.minimum(mask, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(frame: np.ndarray, faces: list[FaceInput], cfg: MergeConfig, zoom_to_face: bool = True) -> np.ndarray:
    """The frame merged under every colour transfer, side by side with labels (BGR uint8), so
    the modes can be compared at a glance (DFL#5274)."""
    from dataclasses import replace as _replace

    tiles = []
    for name in COLOR_MODES:
        out = frame
        for face in faces:
            out, _ = merge_face(out, face, _replace(cfg, color_transfer=name))
        img = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
        if zoom_to_face and faces:
            mat = get_transform_mat(faces[0].landmarks, 256, FaceType.WHOLE_FACE)
            img = cv2.warpAffine(img, mat, (256, 256), flags=cv2.INTER_CUBIC)
        img = np.ascontiguousarray(img)
        cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
        cv2.putText(img, name, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    cols = 3
    rows = [np.hstack(tiles[i : i + cols] + [np.zeros_like(tiles[0])] * (cols - len(tiles[i : i + cols]))) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)


def motion_of(prev_centre: np.ndarray | None, next_centre: np.ndarray | None) -> tuple[float, float]:
    """DFL's motion estimate from the face centres of the neighbouring frames: (power, angle deg)."""
    if prev_centre is None or next_centre is None:
        return 0.0, 0.0
    d = next_centre - prev_centre
    return float(np.linalg.norm(d)), float(-math.degrees(math.atan2(d[1], d[0])))
