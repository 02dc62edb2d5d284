"""
``deepfashion2://`` paths for Detectron2's ``PathManager``: model-zoo names resolved against a
configurable base URL, downloaded once into a local cache and verified by sha256 before use.

The expected sha256 comes from the model-zoo table (:data:`.model_zoo.CHECKPOINTS`) for published
checkpoints, else from the ``<file>.sha256`` published beside the file (what
``tools/export_model.py`` writes). A mismatch deletes the download and raises.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request

from detectron2.utils.file_io import PathManager
from iopath.common.file_io import PathHandler

# Where the project's release assets live; override with $DEEPFASHION2_MODEL_ZOO_URL.
DEFAULT_BASE_URL = "https://github.com/deepfashion2-detectron2/deepfashion2/releases/download/v0.1/"
ENV_BASE_URL = "DEEPFASHION2_MODEL_ZOO_URL"
ENV_CACHE = "DEEPFASHION2_CACHE"


class ChecksumError(RuntimeError):
    pass


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_url() -> str:
    url = os.environ.get(ENV_BASE_URL, DEFAULT_BASE_URL)
    return url if url.endswith("/") else url + "/"


def cache_dir() -> str:
    root = os.environ.get(
        ENV_CACHE, os.path.join(os.path.expanduser("~"), ".cache", "deepfashion2")
    )
    return os.path.join(root, "checkpoints")


class DeepFashion2Handler(PathHandler):
    PREFIX = "deepfashion2://"

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        name = path[len(self.PREFIX) :]
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not a model-zoo name: {path!r}")
        url = base_url() + name
        expected = _expected_sha256(name, url)
        local = os.path.join(cache_dir(), expected[:16], os.path.basename(name))
        if os.path.exists(local) and not force:
            return local  # verified when it was downloaded
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
        except Exception:
            return False

    def _isfile(self, path: str, **kwargs) -> bool:
        return self._exists(path)


def _expected_sha256(name: str, url: str) -> str:
    from .model_zoo import CHECKPOINTS

    for entry in CHECKPOINTS.values():
        if entry["file"] == name:
            return entry["sha256"]
    try:
        with urllib.request.urlopen(url + ".sha256", timeout=60) as r:
            text = r.read().decode().split()
    except OSError as e:
        raise ChecksumError(
            f"deepfashion2://{name}: no known sha256 and none published at {url}.sha256 ({e})"
        ) from None
    if not text or len(text[0]) != 64:
        raise ChecksumError(f"deepfashion2://{name}: malformed {url}.sha256")
    return text[0].lower()


PathManager.register_handler(DeepFashion2Handler())
