"""Files that are complete or absent: atomic writes, and the leftovers of killed writers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


def atomic_write(path: str, write, mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)``: a temporary file, fsync, then rename over it."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temporary_prefix() + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


def write_json_atomic(path: str, obj) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def temporary_prefix() -> str:
    """``.tmp-<pid>-``: what this process's temporary files and folders are named with, all of
    them (:func:`atomic_write`, :func:`temporary_folder`, downloads), so that one cleaner,
    :func:`remove_dead_temporaries`, removes what a killed process left."""
    return f".tmp-{os.getpid()}-"


def temporary_folder(parent: str) -> str:
    """A new ``.tmp-<pid>-*`` folder in ``parent``, to be renamed into place when complete."""
    return tempfile.mkdtemp(dir=parent, prefix=temporary_prefix())


def remove_dead_temporaries(parent: str) -> None:
    """The ``.tmp-<pid>-*`` folders and files of ``parent`` whose writing process is gone."""
    for name in os.listdir(parent):
        if not name.startswith(".tmp-"):
            continue
        pid = name.split("-")[1]
        if pid.isdigit() and not alive(int(pid)):
            path = os.path.join(parent, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def locked(path: str):
    """An exclusive ``fcntl`` lock on the file ``path`` (created if absent; a link is refused),
    released when the block ends, or by the kernel when the holder dies."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
