"""
``deepfashion2://`` paths for Detectron2's ``PathManager``: model-zoo files downloaded once into a
local cache and verified by sha256 every time they are used.

What is trusted, and only that: the sha256 pinned in this project's model-zoo table
(:data:`.model_zoo.CHECKPOINTS`), one given by the user in the path
(``deepfashion2://NAME.pth#sha256=<64 hex digits>``, pip's hash-fragment form: Detectron2's main
branch strips a ``?query`` from checkpoint paths before they reach this handler), or one listed in
a file the user names with ``$DEEPFASHION2_TRUSTED_SHA256`` (lines ``<sha256> <NAME>``, as
``sha256sum`` writes them). A hash published on the same server as the file is never used: it would
only detect a corrupted transfer, not a forged file. Formats that Detectron2 unpickles (``.pkl``)
are refused: a ``.pth`` is loaded with ``torch.load(weights_only=True)``, which runs no code.

A hash the user gives or lists is trusted for any name, pinned names included (a model you
trained yourself is never bit-identical to the published one).

The files come from ``$DEEPFASHION2_MODEL_ZOO_URL`` (no default: the project hosts no release
yet), within ``$DEEPFASHION2_MAX_DOWNLOAD_BYTES`` (2 GiB) and ``$DEEPFASHION2_DOWNLOAD_DEADLINE``
seconds for the whole download (1800); the ``.part`` files of killed downloads are removed by the
next one. A file already in the cache is used offline, after its hash is checked again: what
loads is a private copy made from the very bytes that were hashed, so a file swapped in the cache
between the check and the load is never used.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

from ..errors import DeepFashion2Error
from ..utils.files import remove_dead_temporaries, temporary_prefix

ENV_BASE_URL = "DEEPFASHION2_MODEL_ZOO_URL"
ENV_CACHE = "DEEPFASHION2_CACHE"
ENV_TRUSTED = "DEEPFASHION2_TRUSTED_SHA256"
ENV_MAX_BYTES = "DEEPFASHION2_MAX_DOWNLOAD_BYTES"  # default 2 GiB
ENV_DEADLINE = "DEEPFASHION2_DOWNLOAD_DEADLINE"  # seconds for a whole download, default 1800
# formats Detectron2's checkpointer reads with pickle (arbitrary code on load)
PICKLE_SUFFIXES = (".pkl", ".pickle")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")


class ModelZooError(DeepFashion2Error, RuntimeError):
    """A model-zoo file that cannot be had: unreachable, too large, too slow, untrusted."""


class ChecksumError(ModelZooError):
    pass


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_url() -> str:
    url = os.environ.get(ENV_BASE_URL)
    if not url:
        raise ModelZooError(
            f"no model-zoo location: set ${ENV_BASE_URL} to the URL (or file:// folder) that "
            "serves the checkpoints (tools/release_model.py writes them)"
        )
    return url if url.endswith("/") else url + "/"


def cache_dir() -> str:
    root = os.environ.get(
        ENV_CACHE, os.path.join(os.path.expanduser("~"), ".cache", "deepfashion2")
    )
    return os.path.join(root, "checkpoints")


def parse_path(path: str) -> tuple[str, str | None]:
    """``deepfashion2://NAME[#sha256=HEX]`` -> (NAME, the user's sha256 or None); validated."""
    rest = path[len(DeepFashion2Handler.PREFIX) :]
    name, _, query = rest.partition("#")
    if "?" in name:
        raise ValueError(f"{path}: give the hash as deepfashion2://NAME#sha256=<64 hex digits>")
    if not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise ValueError(f"not a model-zoo name: {path!r}")
    if name.lower().endswith(PICKLE_SUFFIXES):
        raise ValueError(
            f"{path}: refused: Detectron2 reads {os.path.splitext(name)[1]} files with pickle, "
            "which runs whatever code the file holds. Use weights exported as .pth "
            "(tools/release_model.py), loaded without running code."
        )
    given = None
    if query:
        params = urllib.parse.parse_qs(query, strict_parsing=True)
        if set(params) != {"sha256"} or len(params["sha256"]) != 1:
            raise ValueError(f"{path}: the only parameter is #sha256=<64 hex digits>")
        given = params["sha256"][0].lower()
        if not _SHA256.fullmatch(given):
            raise ValueError(f"{path}: sha256 must be 64 hexadecimal digits")
    return name, given


def trusted_sha256s(name: str, given: str | None = None) -> dict[str, str]:
    """
    Every sha256 ``name`` may have, with where it comes from: the user's (in the path), the
    zoo table's, and the user's trusted list's. A hash the user gives or lists is trusted for
    any name, a pinned one included: a model you trained yourself never matches a published hash
    (training is not bit-identical across machines).
    """
    out = {}
    if given:
        out[given] = "given in the path"
    from .model_zoo import CHECKPOINTS

    for entry in CHECKPOINTS.values():
        if entry["file"] == name:
            out.setdefault(entry["sha256"], "pinned in deepfashion2.model_zoo.CHECKPOINTS")
    listing = os.environ.get(ENV_TRUSTED)
    if listing:
        with open(listing) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") == name:
                    if not _SHA256.fullmatch(parts[0].lower()):
                        raise ChecksumError(f"{listing}: malformed sha256 for {name}")
                    out.setdefault(parts[0].lower(), f"listed in {listing}")
    if not out:
        raise ChecksumError(
            f"deepfashion2://{name}: no trusted sha256. Give one in the path "
            f"(deepfashion2://{name}#sha256=...), or list it in a file named by ${ENV_TRUSTED}; "
            "a hash published beside the file is not trusted."
        )
    return out


def max_download_bytes() -> int:
    return int(os.environ.get(ENV_MAX_BYTES, 2 << 30))


def download_deadline() -> float:
    return float(os.environ.get(ENV_DEADLINE, 1800))


class _Deadline:
    """
    One deadline for a whole HTTP exchange: connect, status line, headers, chunk framing, body.
    A watchdog shuts the connection's socket down when it passes, which ends any read in
    progress however slowly the server trickles (a per-read timeout cannot: each byte resets it).
    """

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.001)

    def watch(self, sock: socket.socket) -> None:
        self._sockets.append(sock)
        if self.expired:
            self._expire()

    def _expire(self) -> None:
        self.expired = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _watched(connection_class):
    class Watched(connection_class):
        def __init__(self, *args, deadline: _Deadline, **kwargs):
            super().__init__(*args, **kwargs)
            self._deadline = deadline

        def connect(self):
            super().connect()
            self._deadline.watch(self.sock)

    return Watched


_HTTP, _HTTPS = _watched(http.client.HTTPConnection), _watched(http.client.HTTPSConnection)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_HTTP, req, deadline=self.deadline)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_HTTPS, req, context=self._context, deadline=self.deadline)


def _download(url: str, f, limit: int, deadline: float) -> str:
    """Stream ``url`` into ``f`` within ``limit`` bytes and ``deadline`` seconds; its sha256."""
    h, size = hashlib.sha256(), 0
    clock = _Deadline(deadline)
    late = ModelZooError(
        f"{url}: not downloaded within the {deadline:g} s deadline (${ENV_DEADLINE})"
    )
    opener = urllib.request.build_opener(_HTTPHandler(clock), _HTTPSHandler(clock))
    try:
        # the per-read timeout bounds a silent server; the watchdog, the whole exchange
        with opener.open(url, timeout=min(60.0, deadline)) as r:
            length = r.headers.get("Content-Length") if hasattr(r, "headers") else None
            if length and length.isdigit() and int(length) > limit:
                raise ModelZooError(
                    f"{url}: {int(length):,} bytes, more than the {limit:,} allowed"
                )
            read = getattr(r, "read1", r.read)  # returns what one receive brings
            while True:
                if clock.expired:
                    raise late
                block = read(1 << 20)
                if not block:
                    if clock.expired:  # the watchdog ended the read: not the file's end
                        raise late
                    return h.hexdigest()
                size += len(block)
                if size > limit:
                    raise ModelZooError(
                        f"{url}: more than the {limit:,} bytes allowed (${ENV_MAX_BYTES})"
                    )
                h.update(block)
                f.write(block)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        if clock.expired:
            raise late from None
        reason = getattr(e, "reason", None) or e
        raise ModelZooError(f"cannot download {url}: {reason}") from None
    finally:
        clock.cancel()


# (cached file, sha256, its size, mtime, ctime) -> the private verified copy
_VERIFIED: dict[tuple, str] = {}
_PRIVATE: list[str] = []  # this process's private folder, once made


def _private_dir() -> str:
    """A folder only this process's user can write (mode 0700), removed when the process exits."""
    if not _PRIVATE:
        path = tempfile.mkdtemp(prefix="deepfashion2-verified-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _PRIVATE.append(path)
    return _PRIVATE[0]


def _verified_copy(local: str, expected: str) -> str | None:
    """
    A private copy of ``local`` made from the bytes that were hashed (so a file swapped after
    the check is never what loads), or None when ``local`` does not hash to ``expected``.
    """
    st = os.stat(local)
    key = (local, expected, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _VERIFIED.get(key)
    if known and os.path.isfile(known):  # the same cached file, already copied and checked
        return known
    h = hashlib.sha256()
    fd, copy = tempfile.mkstemp(dir=_private_dir(), suffix="-" + os.path.basename(local))
    with os.fdopen(fd, "wb") as out, open(local, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            out.write(block)
    if h.hexdigest() != expected:
        os.remove(copy)
        return None
    _VERIFIED[key] = copy
    return copy


class DeepFashion2Handler(PathHandler):
    PREFIX = "deepfashion2://"

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        """A verified private copy of the file (see :func:`_verified_copy`)."""
        name, given = parse_path(path)
        trusted = trusted_sha256s(name, given)
        base = os.path.basename(name)
        # folders are named by a trusted hash, never by anything a server sent
        if not force:
            for digest in trusted:
                local = os.path.join(cache_dir(), digest[:16], base)
                if os.path.exists(local):
                    copy = _verified_copy(local, digest)
                    if copy:
                        return copy
                    os.remove(local)  # changed since it was verified: fetch it again
        url = base_url() + name
        root = cache_dir()
        os.makedirs(root, exist_ok=True)
        remove_dead_temporaries(root)  # the .part files of downloads that were killed
        fd, tmp = tempfile.mkstemp(dir=root, prefix=temporary_prefix(), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                actual = _download(url, f, max_download_bytes(), download_deadline())
            if actual not in trusted:
                expected = "; ".join(f"{d} ({why})" for d, why in trusted.items())
                raise ChecksumError(
                    f"{path}: the file from {url} has sha256 {actual}, and the trusted one is "
                    f"{expected}: refusing to use it. If you made this file yourself (your own "
                    f"training is never bit-identical to a published run), trust it with "
                    f"deepfashion2://{name}#sha256={actual} or the line '{actual}  {name}' in the "
                    f"file named by ${ENV_TRUSTED}."
                )
            local = os.path.join(root, actual[:16], base)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        copy = _verified_copy(local, actual)
        if copy is None:
            raise ChecksumError(f"{local}: changed while it was being stored; try again")
        return copy

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        if "w" in mode or "a" in mode:
            raise ValueError(f"{path}: model-zoo paths are read-only")
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs) -> bool:
        try:
            self._get_local_path(path)
            return True
        except (OSError, ValueError, RuntimeError):
            return False

    def _isfile(self, path: str, **kwargs) -> bool:
        return self._exists(path)


PathManager.register_handler(DeepFashion2Handler())
