# Sourced by every scripts/*.sh entry script: finds FaceLab's Python and workspace.
FACELAB_ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
FACELAB_PYTHON="$FACELAB_ROOT/_internal/venv/bin/python"
FACELAB_WORKSPACE="${FACELAB_WORKSPACE:-$FACELAB_ROOT/workspace}"
if [ ! -x "$FACELAB_PYTHON" ]; then
    echo "error: FaceLab is not set up yet: run ./setup.sh first" >&2
    exit 2
fi
export FACELAB_ROOT FACELAB_PYTHON FACELAB_WORKSPACE
