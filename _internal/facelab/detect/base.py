"""Face detector and landmarker contracts, and their registries.

Contracts (what every plugin takes and returns):
- A detector takes a frame, BGR uint8 H x W x 3, and returns `Detection`s in frame pixels,
  sorted largest first.
- A landmarker takes the frame and its detections and returns, per detection, 68 points
  (float32 68 x 2, iBUG order, frame pixels) or None when it found no face there. Plugins with
  more points map to 68 before returning.
- `detect_batch` / `landmarks_batch` take lists of frames; the default runs them one by one,
  plugins that batch (the torch ones) override them.

Registries follow timm's pattern: `@register_detector("name")`, `create_detector(name, **opts)`,
`list_detectors()`; duplicate names are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facelab.core.registry import Registry
from facelab.types import ImageBGR, Landmarks68


@dataclass(frozen=True)
class Detection:
    """A face box in frame pixels.

    Attributes:
        rect: (left, top, right, bottom) float.
        score: detector confidence in [0, 1].
        keypoints: optional K x 2 float32 frame pixels (BlazeFace: right eye, left eye, nose tip,
            mouth centre, right ear, left ear).
    """

    rect: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None

    @property
    def area(self) -> float:
        l, t, r, b = self.rect
        return max(0.0, r - l) * max(0.0, b - t)


class FaceDetector:
    """Base class: override `detect` (and `detect_batch` to batch)."""

    name = "?"

    def detect(self, frame_bgr: ImageBGR) -> list[Detection]:
        raise NotImplementedError

    def detect_batch(self, frames_bgr: Sequence[ImageBGR]) -> list[list[Detection]]:
        return [self.detect(f) for f in frames_bgr]


class Landmarker:
    """Base class: override `landmarks` (and `landmarks_batch` to batch)."""

    name = "?"

    def landmarks(self, frame_bgr: ImageBGR, detections: Sequence[Detection]) -> list[Landmarks68 | None]:
        raise NotImplementedError

    def landmarks_batch(
        self, frames_bgr: Sequence[ImageBGR], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Landmarks68 | None]]:
        return [self.landmarks(f, d) for f, d in zip(frames_bgr, detections)]


class IdentityModel:
    """Base class: override `embed`. An identity model turns each face (a frame, BGR uint8, and
    the face's 68 landmarks in its pixels) into an embedding, float32 of `dims` values, such that
    two faces of one person are less than `threshold` apart (Euclidean) and of two people more.
    `key` ("name/version") is stored beside every embedding, so that embeddings of another model
    are detected and never compared."""

    name = "?"
    version = "?"
    dims = 0
    threshold = 0.6

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    def embed(self, frame_bgr: ImageBGR, landmarks: Sequence[Landmarks68]) -> list[np.ndarray]:
        raise NotImplementedError


# Which module registers each plugin, so that listing names needs no import (torch is slow to
# import, and a headless run that uses the embedded models never needs it).
DETECTORS = Registry("detector", lazy={"blazeface": "facelab.detect.blazeface", "s3fd": "facelab.detect.s3fd_fan"})
LANDMARKERS = Registry("landmarker", lazy={"facemesh68": "facelab.detect.blazeface", "fan": "facelab.detect.s3fd_fan",
                                           "dlib68": "facelab.detect.dlib68"})  # fmt: skip
IDENTITIES = Registry("identity model", lazy={"dlib-resnet": "facelab.detect.identity"})
DEFAULT_IDENTITY = "dlib-resnet"


def _registrar(registry: Registry):  # noqa: ANN202
    """`@register_x("name")` for one registry: registers the plugin and gives it its name."""

    def register(name: str):  # noqa: ANN202
        def wrap(factory):  # noqa: ANN001, ANN202
            registry.register(name)(factory)
            factory.name = name
            return factory

        return wrap

    return register


register_detector = _registrar(DETECTORS)
register_landmarker = _registrar(LANDMARKERS)
register_identity = _registrar(IDENTITIES)


list_detectors = DETECTORS.names
list_landmarkers = LANDMARKERS.names
list_identities = IDENTITIES.names


def create_detector(name: str, **opts) -> FaceDetector:  # noqa: ANN003
    return DETECTORS.create(name, **opts)


def create_landmarker(name: str, **opts) -> Landmarker:  # noqa: ANN003
    return LANDMARKERS.create(name, **opts)


def create_identity(name: str = DEFAULT_IDENTITY, **opts) -> IdentityModel:  # noqa: ANN003
    return IDENTITIES.create(name, **opts)
