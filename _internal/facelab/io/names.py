"""Names read from files a user can be handed (a faceset's metadata file, a pack's manifest): each
must be a plain file name inside its folder, on Linux and on Windows alike, or it is refused.

`plain_file_name(name, source)` returns the name or raises `UnsafeName` saying which file named
what. One helper, used by every reader that turns a stored name into a path.
"""

from __future__ import annotations

import re

from facelab.errors import UserError

_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10)),
                    "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³", "CONIN$", "CONOUT$"}  # fmt: skip
_FORBIDDEN = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
MAX_NAME = 255


class UnsafeName(UserError):
    """A stored name that is not a plain file name (it could point outside its folder)."""


def plain_file_name(name: object, source: str) -> str:
    """`name` if it is a plain file name by Linux and Windows rules; else UnsafeName.

    Refused: anything not a string, empty, `.` / `..`, path separators, a drive (`C:x.jpg`), an
    alternate data stream (`x.jpg:ads`), characters Windows forbids, a trailing dot or space,
    Windows device names with any extension (`CON.jpg`), names over 255 characters.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or len(name) > MAX_NAME:
        raise UnsafeName(f"{source} names {name!r}, which is not a file name: refused (nothing was changed)")
    if _FORBIDDEN.search(name) or name[-1] in ". " or name.split(".")[0].upper().rstrip(" ") in _WINDOWS_DEVICES:
        raise UnsafeName(f"{source} names {name!r}, which is not a plain file name inside its folder: refused "
                         "(nothing was changed)")  # fmt: skip
    return name
