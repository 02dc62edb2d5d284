"""
The command-line tools' one rule for errors: the project's own errors and a user's ordinary
mistakes (a missing file, missing weights, an untrusted hash, a malformed dataset, a wrong
config) are one line on stderr, ``error: <what and why> (<what helps>)``, and exit status 2; a
traceback is for bugs only, or with ``DEEPFASHION2_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import sys

from ..errors import DeepFashion2Error, printable

DEBUG = "DEEPFASHION2_DEBUG"


def error_line(e: BaseException) -> str | None:
    """The one line for a user's mistake, or None for a bug (which keeps its traceback)."""
    if isinstance(e, DeepFashion2Error):
        hint = getattr(e, "hint", "")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"error: {first}" + (f" ({hint})" if hint else "")
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        where = printable(e.filename) if e.filename else ""
        return f"error: {where}: {e.strerror}" if where else f"error: {e.strerror or e}"
    if isinstance(e, OSError) and e.errno is not None and e.filename is None and e.strerror:
        return f"error: {e.strerror}"  # e.g. "no space left on the device writing <path>"
    return None


def exit_on_error(e: BaseException):
    """Print ``e``'s one line and exit with status 2, if it is a user's mistake; else re-raise."""
    line = error_line(e)
    if line is None or os.environ.get(DEBUG):
        raise e
    print(line, file=sys.stderr)
    raise SystemExit(2) from None


def fail(message: str, hint: str = ""):
    """A tool's own refusal (a bad argument): one line on stderr, exit status 2."""
    print(f"error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    raise SystemExit(2)


def tool_main(main):
    """Decorate a tool's ``main``: :func:`exit_on_error` for what it raises."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (DeepFashion2Error, OSError) as e:
            exit_on_error(e)

    return wrapped
