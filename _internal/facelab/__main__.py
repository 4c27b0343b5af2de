"""`python -m facelab <stage> ...`: the entry point every numbered script calls."""

import sys

from facelab.cli import main

sys.exit(main())
