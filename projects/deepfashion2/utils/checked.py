"""
Checked folders: a set of files and a manifest of their sizes and CRC-32s, written to a temporary
folder and renamed into place (complete or absent), and checked when read (refused by name when
damaged). The split cache, the catalogue's shards and its saved search indexes are such folders.

A folder read from someone else is data: its manifest is bounded JSON naming plain files inside the
folder (no links, no paths), each size an integer checked against the file before anything is read,
and an ``.npy`` file's header is checked against its size before an array is made from it.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import time
import uuid
import zlib

import numpy as np

from ..errors import FileError
from .files import temporary_folder, temporary_prefix

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILE_BYTES = 1 << 40  # a size beyond this in a manifest is damage, not data
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # no paths, no hidden names


class CheckedFolderError(FileError, ValueError):
    """A checked folder, or one of its files, that is not what its manifest says."""


# Folders written in creation order (shards, products tables, push records): their names sort by
# when they were written, and only names of this form are ever removed (remove_folder)
ORDERED_NAME = re.compile(r"\d{20}-[0-9a-f]{8}")


def ordered_name() -> str:
    """A new :data:`ORDERED_NAME`: the time in ns, and 8 random hex digits against collisions."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def write_folder(
    parent: str, name: str, files: dict, meta: dict | None = None, *, kind: str
) -> str:
    """
    ``parent/name`` holding ``files`` (file name -> bytes, or an array saved as ``.npy`` straight
    to its file, so that a large one is never held twice in memory) and a manifest
    ``{"kind": kind, "files": {name: {size, crc32}}, **meta}`` written last; renamed into place
    when complete. Raises ``OSError`` if ``parent/name`` exists (another writer won).
    """
    tmp = temporary_folder(parent)
    try:
        entries = {}
        for fname, content in files.items():
            path = os.path.join(tmp, fname)
            if isinstance(content, np.ndarray):
                np.save(path, content, allow_pickle=False)
                entries[fname] = {"size": os.path.getsize(path), "crc32": file_crc32(path)}
            else:
                entries[fname] = write_bytes(path, content)
        manifest = {"kind": kind, "files": entries, **(meta or {})}
        write_bytes(os.path.join(tmp, MANIFEST), json.dumps(manifest).encode())
        path = os.path.join(parent, name)
        os.rename(tmp, path)
        return path
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(path: str, data: bytes) -> dict:
    """Write ``data`` (fsync); a full disk is said as such, with the path. Its manifest entry."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, f"no space left on the device writing {path}") from None
        raise
    return {"size": len(data), "crc32": zlib.crc32(data)}


def read_json(path: str, max_bytes: int = MAX_MANIFEST_BYTES):
    """A JSON file someone else may have written: a plain file, bounded in size and nesting."""
    data = read_plain_file(path, max_bytes)
    return parse_json(data, path)


def parse_json(data: bytes, where: str):
    try:
        return json.loads(data)
    except RecursionError:
        raise CheckedFolderError(where, "unreadable: nested too deeply") from None
    except ValueError as e:
        raise CheckedFolderError(where, f"unreadable: {e}") from None


def read_plain_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a plain file (not a link, not special) of at most ``max_bytes``."""
    if os.path.islink(path) or not os.path.isfile(path):
        raise CheckedFolderError(path, "missing, or not a plain file (links are refused)")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise CheckedFolderError(path, f"unreadable: {e.strerror}") from None
    if len(data) > max_bytes:
        raise CheckedFolderError(path, f"more than the {max_bytes:,} bytes such a file may have")
    return data


def read_manifest(folder: str, kind: str) -> dict:
    """The manifest of ``folder`` (a plain folder, not a link), if it is a valid one of ``kind``."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        raise CheckedFolderError(folder, "not a plain folder (links are refused)")
    path = os.path.join(folder, MANIFEST)
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("kind") != kind:
        raise CheckedFolderError(path, f"not a manifest of a {kind}")
    for name, entry in files.items():
        if not _NAME.fullmatch(name) or name == MANIFEST:
            raise CheckedFolderError(path, f"{name!r} is not a file name of a {kind}")
        if not (
            isinstance(entry, dict)
            and _is_int(entry.get("size"))
            and 0 <= entry["size"] <= MAX_FILE_BYTES
            and _is_int(entry.get("crc32"))
        ):
            raise CheckedFolderError(path, f"the entry of {name} is not {{size, crc32}} integers")
    return manifest


def read_file(folder: str, manifest: dict, name: str) -> bytes:
    """A file of the folder, if it is what the manifest says (a plain file, size, CRC-32)."""
    path, entry = _listed(folder, manifest, name)
    with open(path, "rb") as f:
        data = f.read(entry["size"] + 1)
    if len(data) != entry["size"] or zlib.crc32(data) != entry["crc32"]:
        raise CheckedFolderError(path, "damaged (size or CRC-32 differs from the manifest)")
    return data


def verify_file(folder: str, manifest: dict, name: str) -> str:
    """Check a (large) file against the manifest without holding it in memory; its path."""
    path, entry = _listed(folder, manifest, name)
    if file_crc32(path) != entry["crc32"]:
        raise CheckedFolderError(path, "damaged (CRC-32 differs from the manifest)")
    return path


def _listed(folder: str, manifest: dict, name: str) -> tuple[str, dict]:
    """(path, manifest entry) of a listed file that is a plain file of the listed size."""
    path = os.path.join(folder, name)
    entry = manifest["files"].get(name)
    if entry is None:
        raise CheckedFolderError(path, "not in the folder's manifest")
    if os.path.islink(path) or not os.path.isfile(path):
        raise CheckedFolderError(path, "missing, or not a plain file (links are refused)")
    if os.path.getsize(path) != entry["size"]:
        raise CheckedFolderError(path, "damaged (size differs from the manifest)")
    return path, entry


def file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return crc


def load_npy_file(path: str) -> np.ndarray:
    """A verified ``.npy`` file memory-mapped (read-only), its header checked against its size
    first (as :func:`load_npy` does for bytes)."""
    with open(path, "rb") as file:
        f = io.BytesIO(file.read(1 << 16))
    shape, _, dtype = _npy_header(f, path)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != os.path.getsize(path) - f.tell():
        raise CheckedFolderError(path, f"its header (shape {shape}) does not fit its size")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def load_npy(data: bytes, where: str) -> np.ndarray:
    """
    An array from ``.npy`` bytes, its header checked against the bytes that follow it before
    anything is allocated (a header may claim 10^9 rows); no pickled objects. Read-only.
    """
    f = io.BytesIO(data)
    shape, fortran, dtype = _npy_header(f, where)
    if dtype.hasobject:
        raise CheckedFolderError(where, "an array of Python objects (refused: pickled data)")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data) - f.tell():
        raise CheckedFolderError(
            where,
            f"its header says shape {shape} ({expected:,} bytes), the file holds "
            f"{len(data) - f.tell():,}",
        )
    flat = np.frombuffer(data, dtype, count=math.prod(shape), offset=f.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def _npy_header(f, where: str):
    """(shape, fortran order, dtype) of the ``.npy`` header at ``f``; ``f`` left after it."""
    try:
        version = np.lib.format.read_magic(f)
        reader = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if reader is None:
            raise ValueError(f"unknown .npy version {version}")
        return reader(f)
    except (ValueError, TypeError, SyntaxError) as e:
        raise CheckedFolderError(where, f"not a .npy array ({e})") from None


def remove_folder(parent: str, name: str, kind: str, pattern: re.Pattern) -> bool:
    """
    Remove ``parent/name`` only if it is one of ours: a name ``pattern`` matches, a plain folder
    (never through a link) with a manifest of ``kind``. Whether it was removed. Renamed to this
    process's temporary name first: a kill while deleting leaves a temporary that
    :func:`..files.remove_dead_temporaries` removes, never a half-deleted folder of ours.
    """
    path = os.path.join(parent, name)
    if not pattern.fullmatch(name):
        return False
    try:
        read_manifest(path, kind)
    except CheckedFolderError:
        return False
    doomed = os.path.join(parent, f"{temporary_prefix()}removing-{name}")
    try:
        os.rename(path, doomed)
    except OSError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
