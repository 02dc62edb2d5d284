"""
Load a DeepFashion2 split (``annos/*.json`` + ``image/*.jpg``) as Detectron2 dataset dicts.

Parsing runs in parallel worker processes (orjson for the JSON, ``imagesize`` to read image sizes
from the file header without decoding pixels); the result is cached as one ``.npz`` per split so
that a later registration, in a new process, only loads flat arrays.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields

import numpy as np
from tqdm import tqdm

from .parse import DeepFashion2FormatError, ParsedImage, image_id_from_name, parse_annotation
from .store import SplitStore

logger = logging.getLogger(__name__)

# Bump when the parser or the store layout changes: old cache files are then ignored.
CACHE_VERSION = 1
_CHUNK = 512


def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("DF2_CACHE_DIR", "~/.cache/deepfashion2/splits"))


def _list_annotations(anno_dir: str) -> tuple[list[str], str]:
    """Sorted ``*.json`` names of the folder and a fingerprint of (name, size, mtime) of each."""
    h = hashlib.sha1()
    entries = []
    with os.scandir(anno_dir) as it:
        for e in it:
            if e.name.endswith(".json") and e.is_file():
                st = e.stat()
                entries.append((e.name, st.st_size, st.st_mtime_ns))
    entries.sort()
    for name, size, mtime in entries:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return [e[0] for e in entries], h.hexdigest()


def _parse_chunk(anno_dir: str, image_dir: str, names: list[str], lenient: bool, ext: str):
    """Worker: parse a chunk of files into a SplitStore; returns (store, skip counts)."""
    stems, images, skips = [], [], {}
    for name in names:
        anno_file = os.path.join(anno_dir, name)
        stem = name[: -len(".json")]
        try:
            parsed = parse_annotation(
                anno_file,
                os.path.join(image_dir, stem + ext),
                image_id_from_name(anno_file),
                lenient=lenient,
                skips=skips,
            )
        except DeepFashion2FormatError as e:
            if not lenient:
                raise
            skips[e.reason] = skips.get(e.reason, 0) + 1
            continue
        stems.append(stem)
        images.append(parsed)
    return SplitStore.from_parsed(stems, images), skips


def parse_split(
    anno_dir: str,
    image_dir: str,
    names: list[str],
    *,
    lenient: bool = False,
    num_workers: int | None = None,
    image_ext: str = ".jpg",
    progress: bool | None = None,
) -> tuple[SplitStore, dict[str, int]]:
    chunks = [names[i : i + _CHUNK] for i in range(0, len(names), _CHUNK)]
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(
        total=len(names),
        desc="Parsing DeepFashion2",
        unit="file",
        disable=progress is False if progress is not None else None,
        leave=False,
    )
    results = []
    try:
        if num_workers <= 1 or len(chunks) <= 1:
            for c in chunks:
                results.append(_parse_chunk(anno_dir, image_dir, c, lenient, image_ext))
                bar.update(len(c))
        else:
            with ProcessPoolExecutor(num_workers) as pool:
                futures = [
                    pool.submit(_parse_chunk, anno_dir, image_dir, c, lenient, image_ext)
                    for c in chunks
                ]
                for c, fut in zip(chunks, futures):
                    results.append(fut.result())  # re-raises the worker's error in file order
                    bar.update(len(c))
    finally:
        bar.close()
    skips: dict[str, int] = {}
    for _, s in results:
        for k, v in s.items():
            skips[k] = skips.get(k, 0) + v
    if not results:
        return SplitStore.from_parsed([], []), skips
    return SplitStore.concat([r[0] for r in results]), skips


def _cache_path(
    cache_dir: str, anno_dir: str, image_dir: str, lenient: bool, fingerprint: str
) -> str:
    """One folder per split and content: ``<split key>-<fingerprint hash>``."""
    key = f"{os.path.realpath(anno_dir)}\0{os.path.realpath(image_dir)}\0{lenient}\0{CACHE_VERSION}"
    split = hashlib.sha1(key.encode()).hexdigest()[:20]
    return os.path.join(cache_dir, f"{split}-{hashlib.sha1(fingerprint.encode()).hexdigest()[:12]}")


def _save(path: str, store: SplitStore) -> None:
    """
    One ``.npy`` per array in a folder, so a later load memory-maps them (near-instant, and the
    large polygon/landmark arrays stay file-backed instead of private memory). Written to a
    temporary folder and renamed, so concurrent loaders never see a partial cache; older caches of
    the same split are removed (processes that still map them keep their open files).
    """
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    for name, arr in store.arrays().items():
        np.save(os.path.join(tmp, name + ".npy"), arr, allow_pickle=False)
    try:
        os.rename(tmp, path)
    except OSError:  # another process wrote the same cache meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    split = os.path.basename(path).split("-")[0]
    for old in os.listdir(parent):
        if old.startswith(split + "-") and os.path.join(parent, old) != path:
            shutil.rmtree(os.path.join(parent, old), ignore_errors=True)


def _load(path: str) -> SplitStore | None:
    try:
        return SplitStore(
            **{
                f.name: np.load(
                    os.path.join(path, f.name + ".npy"), mmap_mode="r", allow_pickle=False
                )
                for f in fields(SplitStore)
            }
        )
    except (OSError, ValueError):
        return None


def load_split_store(
    anno_dir: str,
    image_dir: str,
    *,
    lenient: bool = False,
    cache_dir: str | None = None,
    use_cache: bool = True,
    num_workers: int | None = None,
    image_ext: str = ".jpg",
    progress: bool | None = None,
) -> SplitStore:
    """The parsed split, from the cache when the folders have not changed since it was written."""
    if not os.path.isdir(anno_dir):
        raise FileNotFoundError(f"DeepFashion2 annotation folder not found: {anno_dir}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"DeepFashion2 image folder not found: {image_dir}")
    names, fingerprint = _list_annotations(anno_dir)
    # the image folder's mtime changes when images are added, removed or renamed
    fingerprint += f"|{os.stat(image_dir).st_mtime_ns}|{image_ext}"
    path = _cache_path(cache_dir or default_cache_dir(), anno_dir, image_dir, lenient, fingerprint)
    if use_cache:
        store = _load(path)
        if store is not None:
            logger.info(f"Loaded {store.num_images} images, {store.num_items} items from {path}")
            return store
    store, skips = parse_split(
        anno_dir,
        image_dir,
        names,
        lenient=lenient,
        num_workers=num_workers,
        image_ext=image_ext,
        progress=progress,
    )
    if skips:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(skips.items(), key=lambda kv: -kv[1]))
        logger.warning(
            f"Lenient load of {anno_dir} skipped {sum(skips.values())} (reason: count): "
            f"{summary}"
        )
    logger.info(f"Parsed {store.num_images} images, {store.num_items} items from {anno_dir}")
    if use_cache:
        _save(path, store)
    return store


def load_deepfashion2(
    anno_dir: str,
    image_dir: str,
    *,
    lenient: bool = False,
    cache_dir: str | None = None,
    use_cache: bool = True,
    num_workers: int | None = None,
    image_ext: str = ".jpg",
) -> list[dict]:
    """
    Load a split as Detectron2 dataset dicts (see :meth:`SplitStore.to_dicts` for the fields and
    the coordinate conventions).

    Args:
        anno_dir: folder of per-image ``NNNNNN.json`` files.
        image_dir: folder of ``NNNNNN.jpg`` images.
        lenient: skip bad items/files (counted per reason and logged) instead of raising
            :class:`DeepFashion2FormatError` on the first one.
        cache_dir: where the parsed split is cached (default ``$DF2_CACHE_DIR`` or
            ``~/.cache/deepfashion2/splits``); the cache is rebuilt when any annotation file or the
            image folder changes.
    """
    store = load_split_store(
        anno_dir,
        image_dir,
        lenient=lenient,
        cache_dir=cache_dir,
        use_cache=use_cache,
        num_workers=num_workers,
        image_ext=image_ext,
    )
    return store.to_dicts(image_dir, image_ext)


def load_image_folder(image_dir: str, image_ext: str = ".jpg") -> list[dict]:
    """Dicts for an unannotated split (the test split): file name, id and size only."""
    from .parse import read_image_size

    names = sorted(n for n in os.listdir(image_dir) if n.endswith(image_ext))
    dicts = []
    for n in tqdm(names, desc="Reading image sizes", unit="image", disable=None, leave=False):
        path = os.path.join(image_dir, n)
        h, w = read_image_size(path, path)
        dicts.append(
            {"file_name": path, "image_id": image_id_from_name(path), "height": h, "width": w}
        )
    return dicts


__all__ = ["load_deepfashion2", "load_split_store", "load_image_folder", "ParsedImage"]
