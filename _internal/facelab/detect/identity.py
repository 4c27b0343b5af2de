"""Identity models (who a face is) and reference faces.

`dlib-resnet`: dlib's ResNet face-recognition model (dlib_face_recognition_resnet_model_v1,
128 values; Davis King's, public domain or CC0 1.0 as `face-recognition-models` says, the
package itself MIT), shipped in PyPI's `face-recognition-models` and run by `dlib-bin`. It is fed from our own
68 landmarks: dlib cuts its 150 x 150 chip (padding 0.25) around them, so no second detector
runs. Same person: distance under 0.6 (dlib's threshold).

`reference_identities(path, model, detector, landmarker)`: the embeddings of the person a user
points at, from a photo, a folder of photos, or an aligned faceset (their stored identities where
they come from the same model).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from facelab.detect.base import FaceDetector, IdentityModel, Landmarker, register_identity
from facelab.detect.dlib68 import INSTALL, registry_model
from facelab.errors import UserError
from facelab.types import ImageBGR, Landmarks68

log = logging.getLogger(__name__)

CHIP = 150
PADDING = 0.25


@register_identity("dlib-resnet")
class DlibResNetIdentity(IdentityModel):
    version = "v1"
    dims = 128
    threshold = 0.6

    def __init__(self, weights: str | None = None, **_ignored):  # noqa: ANN003
        try:
            import dlib
        except ImportError:
            raise UserError(f"identities need dlib: {INSTALL}") from None
        self._dlib = dlib
        self.net = dlib.face_recognition_model_v1(str(weights or registry_model("dlib_face_recognition_resnet_model_v1.dat")))

    def chip(self, rgb: np.ndarray, landmarks: Landmarks68) -> np.ndarray:
        dlib = self._dlib
        pts = np.asarray(landmarks, np.float64)
        (l, t), (r, b) = pts.min(0), pts.max(0)
        shape = dlib.full_object_detection(dlib.rectangle(int(l), int(t), int(r), int(b)),
                                           [dlib.point(int(round(x)), int(round(y))) for x, y in pts])  # fmt: skip
        return dlib.get_face_chip(rgb, shape, size=CHIP, padding=PADDING)

    def embed(self, frame_bgr: ImageBGR, landmarks: Sequence[Landmarks68]) -> list[np.ndarray]:
        if not len(landmarks):
            return []
        chips = []
        for lm in landmarks:  # only the face's surroundings are converted, not the whole frame
            pts = np.asarray(lm, np.float64)
            (l, t), (r, b) = pts.min(0), pts.max(0)
            m = max(r - l, b - t)
            x0, y0 = max(int(l - m), 0), max(int(t - m), 0)
            crop = frame_bgr[y0 : max(int(b + m), y0 + 1), x0 : max(int(r + m), x0 + 1), ::-1]
            chips.append(self.chip(np.ascontiguousarray(crop), pts - (x0, y0)))
        return [np.asarray(v, np.float32) for v in self.net.compute_face_descriptor(chips)]


def default_model() -> type[IdentityModel]:
    """The identity model FaceLab uses now (its class: key and threshold without loading it)."""
    from facelab.detect.base import DEFAULT_IDENTITY, IDENTITIES

    return IDENTITIES.get(DEFAULT_IDENTITY)


def default_key() -> str:
    cls = default_model()
    return f"{cls.name}/{cls.version}"


def stored_identity(meta, model: IdentityModel | str) -> np.ndarray | None:  # noqa: ANN001 - FaceMeta
    """A face's stored embedding if `model` (or the model of that key) made it, else None."""
    key = model if isinstance(model, str) else model.key
    if meta is None or meta.identity is None or meta.identity_model != key:
        return None
    return np.asarray(meta.identity, np.float32)


def faceset_identities(faces: Sequence, folder: Path) -> tuple[np.ndarray, list[int], list[int]]:  # Sequence[Face]
    """(embeddings K x D, the indices of the faces they belong to, the indices of faces without
    one from the current model). UserError, one line, when no face has one."""
    key = default_key()
    found = [(i, stored_identity(f.meta, key)) for i, f in enumerate(faces)]
    have = [(i, e) for i, e in found if e is not None]
    missing = [i for i, e in found if e is None]
    if not have:
        others = sorted({f.meta.identity_model for f in faces if f.meta is not None and f.meta.identity is not None})
        why = f"their identities come from another model ({', '.join(map(str, others))})" if others else "they have no identities"
        raise UserError(f"the faces in {folder} cannot be told apart: {why}. Run `faceset add-identities` on them "
                        "(4.2_src_util_add_identities / 5.2_dst_util_add_identities), or extract them again")  # fmt: skip
    if missing:
        log.warning("%d faces in %s have no identity from %s: they are left out (run faceset add-identities)", len(missing), folder, key)
    return np.stack([e for _, e in have]), [i for i, _ in have], missing


def reference_identities(path: Path, model: IdentityModel, detector: FaceDetector, landmarker: Landmarker) -> np.ndarray:
    """Embeddings (K x D) of the reference person in `path`: a photo, a folder of photos, or an
    aligned faceset. A photo with several faces gives its largest (and says so); photos without
    a face are named; UserError when no reference face is left."""
    from facelab.io.faceimage import FaceMetaError, read_face
    from facelab.io.frames import list_images, read_image

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"the reference {path} does not exist: give a photo of the person, a folder of photos, or an aligned faceset")
    files = list_images(path) if path.is_dir() else [path]
    if not files:
        raise UserError(f"the reference folder {path} holds no images: put photos of the person in it")
    out, faceless = [], []
    for file in files:
        try:
            image, meta = read_face(file)
        except FaceMetaError:
            image, meta = None, None
        if image is None:
            image = read_image(file)
        if image is None:
            faceless.append(file.name)
            continue
        if meta is not None:  # an aligned face: its own landmarks (or the identity it carries)
            known = stored_identity(meta, model)
            out.append(known if known is not None else model.embed(image, [meta.landmarks])[0])
            continue
        dets = detector.detect(image)
        marks = [(d, m) for d, m in zip(dets, landmarker.landmarks(image, dets)) if m is not None]
        if not marks:
            faceless.append(file.name)
            continue
        if len(marks) > 1:
            log.warning("the reference %s shows %d faces: using the largest (crop the photo to choose another)", file.name, len(marks))
        det, lm = max(marks, key=lambda dm: dm[0].area)
        out.append(model.embed(image, [lm])[0])
    if faceless:
        log.warning("no face found in %d reference images: %s", len(faceless), ", ".join(faceless[:5]))
    if not out:
        raise UserError(f"no face found in the reference {path}: give a photo where the person's face is clearly visible")
    return np.stack(out)
