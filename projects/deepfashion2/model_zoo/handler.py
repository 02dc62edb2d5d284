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

The files come from ``$DEEPFASHION2_MODEL_ZOO_URL`` (no default: the project hosts no release
yet). A file already in the cache is used offline, after its hash is checked again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

ENV_BASE_URL = "DEEPFASHION2_MODEL_ZOO_URL"
ENV_CACHE = "DEEPFASHION2_CACHE"
ENV_TRUSTED = "DEEPFASHION2_TRUSTED_SHA256"
# formats Detectron2's checkpointer reads with pickle (arbitrary code on load)
PICKLE_SUFFIXES = (".pkl", ".pickle")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")


class ChecksumError(RuntimeError):
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
        raise RuntimeError(
            f"no model-zoo location: set ${ENV_BASE_URL} to the URL (or file:// folder) that "
            "serves the checkpoints (tools/export_model.py writes them)"
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
            "(tools/export_model.py), loaded without running code."
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


def trusted_sha256(name: str, given: str | None = None) -> str:
    """The sha256 ``name`` must have: the user's, the zoo table's, or the user's trusted list's."""
    if given:
        return given
    from .model_zoo import CHECKPOINTS

    for entry in CHECKPOINTS.values():
        if entry["file"] == name:
            return entry["sha256"]
    listing = os.environ.get(ENV_TRUSTED)
    if listing:
        with open(listing) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") == name:
                    if not _SHA256.fullmatch(parts[0].lower()):
                        raise ChecksumError(f"{listing}: malformed sha256 for {name}")
                    return parts[0].lower()
    raise ChecksumError(
        f"deepfashion2://{name}: no trusted sha256. Give one in the path "
        f"(deepfashion2://{name}#sha256=...), or list it in a file named by ${ENV_TRUSTED}; "
        "a hash published beside the file is not trusted."
    )


class DeepFashion2Handler(PathHandler):
    PREFIX = "deepfashion2://"

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        name, given = parse_path(path)
        expected = trusted_sha256(name, given)
        # the folder is named by the validated hash, never by anything a server sent
        local = os.path.join(cache_dir(), expected[:16], os.path.basename(name))
        if os.path.exists(local) and not force:
            if sha256_of(local) == expected:
                return local
            os.remove(local)  # changed since it was verified: fetch it again
        url = base_url() + name
        os.makedirs(os.path.dirname(local), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(local), suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
                shutil.copyfileobj(r, f)
            actual = sha256_of(tmp)
            if actual != expected:
                raise ChecksumError(
                    f"{path}: the download from {url} has sha256 {actual}, expected {expected}; "
                    "refusing to use it (corrupted or tampered download)"
                )
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return local

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
