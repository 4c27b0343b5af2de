"""`python -m facelab <stage> ...`: the entry point every numbered script calls."""

import sys

try:
    from facelab.cli import main
except ImportError as exc:  # a runtime with packages missing: one line, not a traceback
    from facelab.runtime import repair_hint

    missing = exc.name or str(exc)
    sys.stderr.write(f"error: FaceLab cannot start: the package '{missing}' is missing ({exc}); {repair_hint()}\n")
    sys.exit(2)

sys.exit(main())
