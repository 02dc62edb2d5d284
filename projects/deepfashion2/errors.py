"""
The project's own errors. Each one is a user's mistake or damaged input, never a bug: its message
is one line that names what (the file, the item, the field) and why, and the command-line tools
print it as such (``deepfashion2.utils.cli``), with ``hint`` (the switch or the path that helps)
where there is one. A traceback is for bugs only.
"""

from __future__ import annotations

import os


def printable(path) -> str:
    """
    ``path`` as text any output can carry (JSON, HTML, a terminal, a log): file-system bytes that
    are not UTF-8 (kept by Python as lone surrogates, which UTF-8 encoders refuse) are written as
    ``\\xNN``. The exact name stays where it was read from (``os.fsencode`` gives it back).
    """
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


class DeepFashion2Error(Exception):
    """
    Base of the project's own errors: a user's mistake or damaged input, never a bug. The message
    is one line; ``hint`` says what helps (a switch, a path), or is "".
    """

    hint: str = ""

    def __init__(self, *args, hint: str = ""):
        super().__init__(*args)
        if hint:
            self.hint = hint


class FileError(DeepFashion2Error):
    """
    An error about one file or folder, with its fields: ``path`` (as given), ``reason`` (why, one
    line) and ``hint``. ``str()`` is ``"<path>: <reason>"``, the path printable.
    """

    def __init__(self, path, reason: str = "", hint: str = ""):
        self.path, self.reason, self.hint = path, reason, hint
        super().__init__(f"{printable(path)}: {reason}" if reason else printable(path))

    def __reduce__(self):  # keep the fields across process boundaries
        return (type(self), (self.path, self.reason, self.hint))
