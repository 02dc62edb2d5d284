"""
Load a DeepFashion2 split (``annos/*.json`` + ``image/*.jpg``) as Detectron2 dataset dicts.

Parsing runs in parallel worker processes (orjson for the JSON, ``imagesize`` to read image sizes
from the file header without decoding pixels); the result is cached as one folder of ``.npy``
arrays per split, so that a later registration, in a new process, reads flat arrays (each
CRC-checked, then memory-mapped) instead of parsing 192K JSON files.

The cache is an optimisation that never changes a result and never stops a load:

- it is keyed by (name, size, mtime, ctime) of every annotation file and of every image it
  names. A stat per file is cheap (no file is read); ctime cannot be set back by a user (``touch``
  and ``os.utime`` set it to now), so an edit whose mtime is restored is still seen, and an image
  replaced in place by one of another size changes its own key;
- each array's size and CRC-32 are recorded at write time and checked at load: a truncated,
  missing or bit-flipped array is detected, the cache removed and rebuilt;
- it is written to a temporary folder that is renamed into place; a write that fails (a read-only
  or full disk, a cache path that is a file) is reported as a warning and the load goes on without
  it; the temporary folders of processes that died while writing are removed by the next load;
- ``use_cache=False``, ``DF2_CACHE=0`` in the environment or ``DEEPFASHION2.CACHE False`` turn it
  off for every entry point.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from ..utils.checked import (
    CheckedFolderError,
    load_npy_file,
    read_manifest,
    remove_folder,
    verify_file,
    write_folder,
)
from ..utils.files import remove_dead_temporaries
from ..utils.process import die_with_parent
from .parse import DeepFashion2FormatError, ParsedImage, image_id_from_name, parse_annotation
from .store import SplitStore

logger = logging.getLogger(__name__)

# Bump when the parser or the store layout changes: old cache files are then ignored.
CACHE_VERSION = 4  # 3: items in the file's key order; 4: a checked folder (utils.checked)
CACHE_KIND = "deepfashion2 split cache"
_CACHE_NAME = re.compile(r"[0-9a-f]{20}-[0-9a-f]{12}")
DUPLICATE_ID = "file name: duplicate image id"  # the lenient skip reason of a second file
_CHUNK = 512


def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("DF2_CACHE_DIR", "~/.cache/deepfashion2/splits"))


def cache_enabled_by_default() -> bool:
    """``DF2_CACHE=0`` (or ``off``/``false``/``no``) turns the cache off everywhere."""
    return os.environ.get("DF2_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def _fingerprint(folder: str, names=None, suffix: str = "") -> tuple[list[str], str]:
    """
    Sorted names of the folder's files (ending in ``suffix``, or exactly ``names``) and a digest of
    each one's (name, size, mtime, ctime). A named file that is missing counts as such (the parse
    reports it).
    """
    h = hashlib.sha1()
    entries = []
    if names is None:
        with os.scandir(folder) as it:
            for e in it:
                # not only plain files: a FIFO or a folder named *.json is refused by the parse,
                # by name, never silently left out
                if e.name.endswith(suffix):
                    try:
                        st = e.stat()
                    except OSError:  # a dangling link or a link loop: the parse names it
                        entries.append((e.name, -1, -1, -1))
                        continue
                    entries.append((e.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    else:
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name))
                entries.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError:
                entries.append((name, -1, -1, -1))
    entries.sort()
    for e in entries:
        h.update("\0".join(map(str, e)).encode() + b"\n")
    return [e[0] for e in entries], h.hexdigest()


def _list_annotations(anno_dir: str) -> tuple[list[str], str]:
    """Sorted ``*.json`` names of the folder and a fingerprint of them."""
    return _fingerprint(anno_dir, suffix=".json")


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
            with ProcessPoolExecutor(
                num_workers, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
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
    One ``.npy`` per array in a checked folder (:mod:`..utils.checked`: a manifest of sizes and
    CRC-32s, written aside and renamed into place), so that a later load memory-maps them (the
    large polygon/landmark arrays stay file-backed instead of private memory). Concurrent loaders
    never see a partial cache; older caches of the same split are removed (processes that still
    map them keep their open files). Failing to write is a warning, never an error.
    """
    parent, name = os.path.split(path)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_dead_temporaries(parent)
        files = {k + ".npy": v for k, v in store.arrays().items()}
        write_folder(parent, name, files, {"skips": store.skips}, kind=CACHE_KIND)
    except OSError as e:  # unless another process wrote the same cache meanwhile
        if not os.path.isdir(path):
            logger.warning(f"Not caching the parsed split in {parent} ({e}); loading without it.")
            return
    split = name.split("-")[0]
    for old in os.listdir(parent):
        if old.startswith(split + "-") and old != name:
            remove_folder(parent, old, CACHE_KIND, _CACHE_NAME)


def _load(path: str) -> SplitStore | None:
    """The cached store, or None when there is none; a damaged cache is removed (and rebuilt)."""
    if not os.path.isdir(path):
        return None
    try:
        manifest = read_manifest(path, CACHE_KIND)
        arrays = {
            name: load_npy_file(verify_file(path, manifest, name + ".npy"))
            for name in SplitStore.array_fields()
        }
        return SplitStore(**arrays, skips=dict(manifest["skips"]))
    except (CheckedFolderError, OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(f"Damaged cache {path} ({e}): rebuilding it.")
        if _CACHE_NAME.fullmatch(os.path.basename(path)) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)  # a cache folder's name: ours
        return None


def load_split_store(
    anno_dir: str,
    image_dir: str,
    *,
    lenient: bool = False,
    cache_dir: str | None = None,
    use_cache: bool | None = None,
    num_workers: int | None = None,
    image_ext: str = ".jpg",
    progress: bool | None = None,
) -> SplitStore:
    """
    The parsed split, from the cache when none of its files has changed since it was written.
    ``use_cache=None`` follows ``$DF2_CACHE`` (on unless set to 0).
    """
    if not os.path.isdir(anno_dir):
        raise FileNotFoundError(f"DeepFashion2 annotation folder not found: {anno_dir}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"DeepFashion2 image folder not found: {image_dir}")
    if use_cache is None:
        use_cache = cache_enabled_by_default()
    names, fingerprint = _list_annotations(anno_dir)
    if not names:
        raise DeepFashion2FormatError(
            anno_dir,
            None,
            "folder",
            "holds no annotation files (*.json): expected a split's "
            "annos/ folder (e.g. validation/annos)",
            "folder: empty",
        )
    path = None
    if use_cache:
        # every image an annotation names: a replaced image changes its size, mtime and ctime
        images = [n[: -len(".json")] + image_ext for n in names]
        fingerprint += "|" + _fingerprint(image_dir, images)[1] + f"|{image_ext}"
        path = _cache_path(
            cache_dir or default_cache_dir(), anno_dir, image_dir, lenient, fingerprint
        )
        store = _load(path)
        if store is not None:
            _log_skips(anno_dir, store.skips)  # the same report as when it was parsed
            logger.info(f"Loaded {store.num_images} images, {store.num_items} items from {path}")
            return store
    names, duplicates = _one_file_per_image(anno_dir, names, lenient)
    store, skips = parse_split(
        anno_dir,
        image_dir,
        names,
        lenient=lenient,
        num_workers=num_workers,
        image_ext=image_ext,
        progress=progress,
    )
    if duplicates:
        skips[DUPLICATE_ID] = duplicates
    store.skips = skips
    _log_skips(anno_dir, skips)
    logger.info(f"Parsed {store.num_images} images, {store.num_items} items from {anno_dir}")
    if path is not None:
        _save(path, store)
    return store


_LOGGED_SKIPS: set[tuple] = set()  # what this process has already said: once per split and content


def _log_skips(anno_dir: str, skips: dict[str, int]) -> None:
    key = (os.path.realpath(anno_dir), tuple(sorted(skips.items())))
    if skips and key not in _LOGGED_SKIPS:
        _LOGGED_SKIPS.add(key)
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(skips.items(), key=lambda kv: -kv[1]))
        logger.warning(
            f"Lenient load of {anno_dir} skipped {sum(skips.values())} (reason: count): "
            f"{summary}"
        )


def _one_file_per_image(anno_dir: str, names: list[str], lenient: bool) -> tuple[list[str], int]:
    """
    ``names`` without a second file of the same image id (``0100001.json`` beside
    ``100001.json``): refused by name, or skipped and counted in lenient mode.
    """
    first: dict[int, str] = {}
    keep, duplicates = [], 0
    for n in names:
        try:
            i = image_id_from_name(n)
        except DeepFashion2FormatError:
            keep.append(n)  # the parse reports it with the full path
            continue
        if i in first:
            if not lenient:
                raise DeepFashion2FormatError(
                    os.path.join(anno_dir, n),
                    None,
                    "file name",
                    f"image id {i} again (already {first[i]})",
                    DUPLICATE_ID,
                )
            duplicates += 1
            continue
        first[i] = n
        keep.append(n)
    return keep, duplicates


def load_deepfashion2(
    anno_dir: str,
    image_dir: str,
    *,
    lenient: bool = False,
    cache_dir: str | None = None,
    use_cache: bool | None = None,
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
            ``~/.cache/deepfashion2/splits``); the cache is rebuilt when any annotation file or
            image changes.
        use_cache: False: neither read nor write the cache (None: ``$DF2_CACHE``, on by default).
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
