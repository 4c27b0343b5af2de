"""Every window, one toolkit (Qt through PySide6). Windows show state and return user actions.

This package's own module imports no Qt, so headless code can ask `can_show_windows()` cheaply;
each window module imports PySide6 itself.
"""

from __future__ import annotations

import os
import sys


def can_show_windows() -> bool:
    """False on a Linux machine with no display (a server, CI) unless a Qt platform is forced."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"))
    return True
