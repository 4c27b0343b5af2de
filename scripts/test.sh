#!/bin/sh
# Run FaceLab's tests in its venv (./setup.sh first). Extra arguments go to pytest,
# e.g. scripts/test.sh -k video   or   scripts/test.sh -m "not slow"
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
PY="$ROOT/_internal/venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "error: FaceLab is not set up yet: run ./setup.sh first" >&2
    exit 2
fi
cd "$ROOT" && exec "$PY" -m pytest "$@"
