"""
A shop catalogue: the garments detected in a folder of shop images, with their embeddings, stored
so that it can be searched with the embedding of a garment in any photo.

On disk (``CAT_DIR``)::

    catalogue.json      format, what identifies the model (config, weights sha256, embedding
                        size), the gallery policy and the image folder; created once, under a lock
    config.yaml         the full config of the model that built it (search rebuilds it from here)
    shards/<name>/      one batch of indexed images: images.json (their paths, relative to the
                        image folder, including those without any garment), skipped.json (images
                        that could not be read, with the reason), boxes.npy (n, 4) XYXY,
                        categories.npy (n,) 1..13, scores.npy (n,), embeddings.npy (n, E),
                        image.npy (n,) index into images.json, and manifest.json: the weights'
                        sha256 and each file's size and CRC-32
    index/<kind>-<key>/ the search index (FAISS files for large categories) of the shards whose
                        content hashes to <key>, with index.json (each file's size and CRC-32)

A catalogue is data, never code, and a damaged one is refused, never answered from:

- a shard is written to a temporary folder, its manifest last, and renamed into ``shards/``: it is
  there complete or not at all, so an indexing run killed at any moment loses at most its current
  batch, and a rerun indexes exactly the images no shard holds;
- at load, every shard file is checked against its manifest (size, CRC-32), the manifest's
  weights against the catalogue's, and the contents are validated (categories 1..13, image
  indices within images.json, finite unit-length embeddings, relative image paths): a damaged
  shard is refused by name (:class:`CatalogueError`), or skipped with a warning when the catalogue
  is opened with ``lenient=True``; a symbolic link in ``shards/`` is refused the same way;
- a saved index is keyed by the shards' content and checked (CRC-32, size, and each category's
  index must find its own first items): one that does not match is rebuilt. A catalogue that
  cannot be written to (read-only) keeps a new index in memory.

Entries are ordered by image path at load, so the catalogue's rows do not depend on how the work
was split into shards.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..evaluation.gallery import EXACT_MAX, GroupedIndex
from ..landmarks import NUM_CATEGORIES
from ..utils.files import remove_dead_temporaries, temporary_folder, write_json_atomic

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: shard manifests, skipped images, content-keyed index
_COLUMNS = ("boxes", "categories", "scores", "embeddings", "image")
MANIFEST = "manifest.json"
MAX_TOP_K = 1000  # results per garment: enough for any page, bounded for memory
_UNIT_TOLERANCE = 1e-3  # |norm - 1| of a stored embedding (float32 rounding is ~1e-7)


class CatalogueError(ValueError):
    """A catalogue file that is damaged, or not what a catalogue may hold; the message names it."""


class CatalogueMismatchError(CatalogueError):
    """The catalogue was built by another model (or from another folder) than the one asked."""


@dataclass
class CatalogueEntries:
    """Every indexed garment, ordered by image path (then detection order)."""

    images: list[str]  # (I,) paths relative to the image folder, sorted
    image: np.ndarray  # (N,) index into images
    boxes: np.ndarray  # (N, 4) XYXY
    categories: np.ndarray  # (N,) 1..13
    scores: np.ndarray  # (N,) detection scores
    embeddings: np.ndarray  # (N, E) float32, unit length

    def __len__(self) -> int:
        return len(self.image)


@dataclass
class _Shard:
    path: str
    images: list[str]
    skipped: dict[str, str]
    columns: dict[str, np.ndarray]
    key: str  # digest of the manifest's file list: the shard's content


class Catalogue:
    def __init__(self, folder: str, *, lenient: bool = False):
        """
        Open an existing catalogue (see :meth:`create`). ``lenient``: skip damaged shards with a
        warning instead of refusing the catalogue.
        """
        self.folder = folder
        self.lenient = lenient
        meta = os.path.join(folder, "catalogue.json")
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"{folder} is not a catalogue (no catalogue.json)")
        self.meta = _read_json(meta)
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            found = self.meta.get("format") if isinstance(self.meta, dict) else None
            raise CatalogueError(
                f"{meta}: catalogue format {found}, expected {FORMAT}: index the images again "
                "into a new catalogue"
            )
        dim = self.meta.get("embed_dim")
        if not (isinstance(dim, int) and dim > 0 and isinstance(self.meta.get("policy"), dict)):
            raise CatalogueError(f"{meta}: embed_dim or policy missing or invalid")
        self._shard_cache: dict[str, _Shard] = {}
        self._entries: CatalogueEntries | None = None
        self._indexes: dict[bool, GroupedIndex] = {}  # by same_category

    @classmethod
    def create(
        cls,
        folder: str,
        identity: dict,
        config_yaml: str = "",
        images_root: str = "",
        *,
        lenient: bool = False,
    ) -> "Catalogue":
        """
        A new catalogue, or the existing one in ``folder`` if the same model built it from the
        same image folder (to add the images it does not hold yet). ``identity``: ``config``,
        ``weights_sha256``, ``embed_dim`` and the gallery policy (``policy``); ``images_root``:
        the folder image paths are relative to. Exclusive: two indexers starting at once with
        different models cannot both create it.
        """
        os.makedirs(folder, exist_ok=True)
        meta = os.path.join(folder, "catalogue.json")
        root = os.path.abspath(images_root) if images_root else ""
        with _locked(folder):
            if os.path.isfile(meta):
                cat = cls(folder, lenient=lenient)
                cat.check_model(identity)
                cat.check_images_root(root)
                return cat
            os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
            if config_yaml:
                _write(os.path.join(folder, "config.yaml"), config_yaml.encode())
            write_json_atomic(meta, {"format": FORMAT, "images_root": root, **identity})
        return cls(folder, lenient=lenient)

    # -- what built it -------------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        return {k: v for k, v in self.meta.items() if k not in ("format", "images_root")}

    @property
    def images_root(self) -> str:
        return self.meta.get("images_root", "")

    @property
    def embed_dim(self) -> int:
        return int(self.meta["embed_dim"])

    def check_model(self, identity: dict) -> None:
        """Refuse a model with other weights or another embedding size than the catalogue's."""
        mine = self.meta
        for key, what in (("weights_sha256", "weights"), ("embed_dim", "embedding size")):
            if identity.get(key) != mine.get(key):
                raise CatalogueMismatchError(
                    f"{self.folder} was built with {what} {mine.get(key)} (config "
                    f"{mine.get('config')}), the model here has {identity.get(key)}: their "
                    "embeddings are not comparable. Search with the model that built it, or index "
                    "the images again into a new catalogue."
                )

    def check_images_root(self, root: str) -> None:
        """Refuse to add another image folder's images (their paths would collide)."""
        if root and self.images_root and os.path.abspath(root) != self.images_root:
            raise CatalogueMismatchError(
                f"{self.folder} indexes the images of {self.images_root}, not {root}: index "
                "another folder into a new catalogue"
            )

    # -- adding --------------------------------------------------------------------------------

    def indexed_images(self, *, with_skipped: bool = True) -> set[str]:
        """Images a shard holds; with those recorded as unreadable unless ``with_skipped=False``."""
        done: set[str] = set()
        for shard in self._verified_shards():
            done.update(shard.images)
            if with_skipped:
                done.update(shard.skipped)
        return done

    def skipped_images(self) -> dict[str, str]:
        """Images that could not be read, with the reason, unless a later shard holds them."""
        shards = self._verified_shards()
        held = {p for s in shards for p in s.images}
        return {p: r for s in shards for p, r in s.skipped.items() if p not in held}

    def add(
        self, images: list[str], detections: list[tuple], skipped: dict[str, str] | None = None
    ) -> None:
        """
        One shard: ``images`` (paths relative to the image folder) and, for each, its detections
        ``(boxes (n, 4), categories (n,) 1..13, scores (n,), embeddings (n, E))``; ``skipped``:
        images that could not be read, with the reason. Atomic.
        """
        shards = os.path.join(self.folder, "shards")
        tmp = temporary_folder(shards)
        try:
            cols = _stack(detections, self.embed_dim)
            _validate_columns(cols, len(images), self.embed_dim, tmp)
            files = {}
            for name in _COLUMNS:
                files[name + ".npy"] = _write_npy(os.path.join(tmp, name + ".npy"), cols[name])
            files["images.json"] = _write(
                os.path.join(tmp, "images.json"), json.dumps(list(images)).encode()
            )
            files["skipped.json"] = _write(
                os.path.join(tmp, "skipped.json"), json.dumps(dict(skipped or {})).encode()
            )
            manifest = {
                "weights_sha256": self.meta["weights_sha256"],
                "embed_dim": self.embed_dim,
                "files": files,
            }
            _write(os.path.join(tmp, MANIFEST), json.dumps(manifest).encode())
            # named in creation order: an image indexed twice keeps its first entries
            os.rename(tmp, os.path.join(shards, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._entries, self._indexes = None, {}

    def remove_unfinished(self) -> None:
        """Temporary shard folders of runs that were killed while writing."""
        remove_dead_temporaries(os.path.join(self.folder, "shards"))

    # -- reading and searching -------------------------------------------------------------------

    def _shards(self) -> list[str]:
        shards = os.path.join(self.folder, "shards")
        return sorted(os.path.join(shards, n) for n in os.listdir(shards) if not n.startswith("."))

    def _verified_shards(self) -> list[_Shard]:
        out = []
        for path in self._shards():
            shard = self._shard_cache.get(path)
            if shard is None:
                try:
                    shard = _read_shard(path, self.meta["weights_sha256"], self.embed_dim)
                except CatalogueError as e:
                    if not self.lenient:
                        raise
                    logger.warning(f"skipped a damaged shard: {e}")
                    continue
                self._shard_cache[path] = shard
            out.append(shard)
        return out

    def entries(self) -> CatalogueEntries:
        if self._entries is None:
            self._entries = _entries(self._verified_shards(), self.embed_dim)
        return self._entries

    def __len__(self) -> int:
        return len(self.entries())

    def index(self, same_category: bool = True) -> GroupedIndex:
        """
        The search index: exact or FAISS by size, built once per content of the shards and saved
        beside them (kept in memory where the catalogue cannot be written).
        """
        if same_category in self._indexes:
            return self._indexes[same_category]
        e = self.entries()
        policy = self.meta.get("policy", {})
        kind, exact_max = policy.get("index", "auto"), policy.get("exact_max", EXACT_MAX)
        content = [s.key for s in self._verified_shards()] + [kind, exact_max]
        prefix = "same" if same_category else "all"
        key = hashlib.sha1(json.dumps(content).encode()).hexdigest()[:16]
        root = os.path.join(self.folder, "index")
        folder = os.path.join(root, f"{prefix}-{key}")
        index = _load_index(folder, e, same_category)
        if index is None:
            index = GroupedIndex(
                e.embeddings, e.categories, same_category=same_category, kind=kind,
                exact_max=exact_max,
            )  # fmt: skip
            _save_index(index, root, folder, prefix)
        self._indexes[same_category] = index
        return index

    def search_rows(
        self, embeddings: np.ndarray, categories: np.ndarray, k: int = 20, same_category=True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), each (Q, k), best first; rows of :meth:`entries`, -1 = none."""
        if not (isinstance(k, (int, np.integer)) and 1 <= k <= MAX_TOP_K):
            raise ValueError(f"top-k must be an integer from 1 to {MAX_TOP_K}, got {k!r}")
        q = np.asarray(embeddings, np.float32)
        if not np.isfinite(q).all():
            raise ValueError("the model gave a non-finite embedding: its weights are damaged")
        sims, rows = self.index(same_category).search(q, categories, int(k))
        # unit vectors: a cosine, within float rounding of [-1, 1]
        return np.clip(sims, -1.0, 1.0), rows

    def search(
        self, embeddings: np.ndarray, categories: np.ndarray, k: int = 20, same_category=True
    ) -> list[list[dict]]:
        """
        For each query garment, its top-k catalogue items: ``item`` (the row of
        :meth:`entries`, stable while the catalogue is unchanged), image, box, category,
        detection score, similarity.
        """
        sims, rows = self.search_rows(embeddings, categories, k, same_category)
        e = self.entries()
        out = []
        for q_sims, q_rows in zip(sims.tolist(), rows.tolist()):
            out.append(
                [
                    {
                        "item": int(r),
                        "image": e.images[e.image[r]],
                        "box": [float(v) for v in e.boxes[r]],
                        "category": int(e.categories[r]),
                        "score": float(e.scores[r]),
                        "similarity": float(s),
                    }
                    for s, r in zip(q_sims, q_rows)
                    if r >= 0
                ]
            )
        return out


# -- files -------------------------------------------------------------------------------------


@contextmanager
def _locked(folder: str):
    """An exclusive lock on the catalogue folder (released when the lock file is closed)."""
    with open(os.path.join(folder, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _write(path: str, data: bytes) -> dict:
    """Write ``data``; a full disk is said as such, with the path. Returns its manifest entry."""
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


def _write_npy(path: str, array: np.ndarray) -> dict:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return _write(path, buf.getvalue())


def _read_checked(path: str, entry) -> bytes:
    """A shard file's bytes, if they are what its manifest says (a plain file, size, CRC-32)."""
    if not (isinstance(entry, dict) and {"size", "crc32"} <= set(entry)):
        raise CatalogueError(f"{path}: no valid manifest entry")
    if os.path.islink(path) or not os.path.isfile(path):
        raise CatalogueError(f"{path}: missing, or not a plain file")
    with open(path, "rb") as f:
        data = f.read(int(entry["size"]) + 1)
    if len(data) != entry["size"] or zlib.crc32(data) != entry["crc32"]:
        raise CatalogueError(f"{path}: damaged (size or CRC-32 differs from the shard's manifest)")
    return data


def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError) as e:
        raise CatalogueError(f"{path}: unreadable: {e}") from None


def _read_shard(path: str, weights_sha256: str, dim: int) -> _Shard:
    import io

    if os.path.islink(path) or not os.path.isdir(path):
        raise CatalogueError(f"{path}: not a plain folder (shards are never links)")
    manifest = _read_json(os.path.join(path, MANIFEST))
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise CatalogueError(f"{path}/{MANIFEST}: not a shard manifest")
    if manifest.get("weights_sha256") != weights_sha256 or manifest.get("embed_dim") != dim:
        raise CatalogueError(
            f"{path}: written by weights {manifest.get('weights_sha256')} (embedding size "
            f"{manifest.get('embed_dim')}), not the catalogue's {weights_sha256} ({dim})"
        )
    data = {n: _read_checked(os.path.join(path, n), files.get(n)) for n in _shard_files()}
    try:
        images = json.loads(data["images.json"])
        skipped = json.loads(data["skipped.json"])
        cols = {n: np.load(io.BytesIO(data[n + ".npy"]), allow_pickle=False) for n in _COLUMNS}
    except ValueError as e:
        raise CatalogueError(f"{path}: unreadable: {e}") from None
    if not (isinstance(images, list) and all(_relative_path(p) for p in images)):
        raise CatalogueError(f"{path}/images.json: not a list of relative image paths")
    if not (isinstance(skipped, dict) and all(_relative_path(p) for p in skipped)):
        raise CatalogueError(f"{path}/skipped.json: not a map of relative image paths")
    _validate_columns(cols, len(images), dim, path)
    key = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return _Shard(path, images, {str(k): str(v) for k, v in skipped.items()}, cols, key)


def _shard_files() -> list[str]:
    return [n + ".npy" for n in _COLUMNS] + ["images.json", "skipped.json"]


def _relative_path(p) -> bool:
    return (
        isinstance(p, str) and bool(p) and not os.path.isabs(p) and ".." not in p.split("/")
        and "\0" not in p
    )  # fmt: skip


def _validate_columns(cols: dict, num_images: int, dim: int, where: str) -> None:
    """Shapes, dtypes and values a shard's arrays must have; the first violation is named."""
    n = len(cols["image"])
    expect = {"boxes": (n, 4), "categories": (n,), "scores": (n,), "embeddings": (n, dim)}
    for name, shape in expect.items():
        if cols[name].shape != shape:
            raise CatalogueError(f"{where}/{name}.npy: shape {cols[name].shape}, expected {shape}")
    for name in _COLUMNS:
        kind = "i" if name in ("categories", "image") else "f"
        if cols[name].dtype.kind != kind:
            raise CatalogueError(f"{where}/{name}.npy: dtype {cols[name].dtype}")
    c, img = cols["categories"], cols["image"]
    if n and (c.min() < 1 or c.max() > NUM_CATEGORIES):
        raise CatalogueError(f"{where}/categories.npy: a category outside 1..{NUM_CATEGORIES}")
    if n and (img.min() < 0 or img.max() >= num_images):
        raise CatalogueError(f"{where}/image.npy: an index outside images.json")
    for name in ("boxes", "scores", "embeddings"):
        if not np.isfinite(cols[name]).all():
            raise CatalogueError(f"{where}/{name}.npy: a value that is not finite")
    norms = np.linalg.norm(cols["embeddings"].astype(np.float64), axis=1)
    if n and np.abs(norms - 1).max() > _UNIT_TOLERANCE:
        raise CatalogueError(f"{where}/embeddings.npy: an embedding that is not unit length")


def _stack(detections: list[tuple], dim: int) -> dict[str, np.ndarray]:
    boxes, cats, scores, embs, image = [], [], [], [], []
    for i, (b, c, s, e) in enumerate(detections):
        boxes.append(np.asarray(b, np.float64).reshape(-1, 4))
        cats.append(np.asarray(c, np.int64))
        scores.append(np.asarray(s, np.float64))
        embs.append(np.asarray(e, np.float32).reshape(-1, dim))
        image.append(np.full(len(boxes[-1]), i, np.int64))
    if not detections:
        return {
            "boxes": np.zeros((0, 4)), "categories": np.zeros(0, np.int64),
            "scores": np.zeros(0), "embeddings": np.zeros((0, dim), np.float32),
            "image": np.zeros(0, np.int64),
        }  # fmt: skip
    return {
        "boxes": np.concatenate(boxes),
        "categories": np.concatenate(cats),
        "scores": np.concatenate(scores),
        "embeddings": np.concatenate(embs),
        "image": np.concatenate(image),
    }


def _entries(shards: list[_Shard], dim: int) -> CatalogueEntries:
    """All shards' entries, each image once (the first shard holding it), ordered by path."""
    paths: list[str] = []
    first: list[bool] = []  # per (shard, image) slot: the first occurrence of its path
    slot_of_row, columns = [], {n: [] for n in _COLUMNS[:4]}
    seen: set[str] = set()
    for shard in shards:
        cols = shard.columns
        slot_of_row.append(cols["image"] + len(paths))
        for n in columns:
            columns[n].append(cols[n])
        for p in shard.images:
            first.append(p not in seen)
            seen.add(p)
        paths += shard.images
    if not paths:
        return CatalogueEntries(images=[], **_stack([], dim))
    keep_slot = np.array(first, bool)
    row_slot = np.concatenate(slot_of_row)
    keep_row = keep_slot[row_slot]
    kept = np.flatnonzero(keep_slot)
    order = sorted(range(len(kept)), key=lambda i: paths[kept[i]])
    rank_of_slot = np.full(len(paths), -1, np.int64)
    rank_of_slot[kept[order]] = np.arange(len(order))
    image = rank_of_slot[row_slot[keep_row]]
    perm = np.argsort(image, kind="stable")  # by path, detection order kept within an image
    return CatalogueEntries(
        images=[paths[kept[i]] for i in order],
        image=image[perm],
        **{n: np.concatenate(c)[keep_row][perm] for n, c in columns.items()},
    )


# -- the saved index ---------------------------------------------------------------------------


def _load_index(folder: str, e: CatalogueEntries, same_category: bool) -> GroupedIndex | None:
    """The saved index of this content, if it is intact and answers for its own items."""
    listing = os.path.join(folder, "index.json")
    if not os.path.isfile(listing):
        return None
    try:
        files = _read_json(listing)
        if not isinstance(files, dict):
            raise CatalogueError(f"{listing}: not an index listing")
        for name, entry in files.items():
            if "/" in name or not name.endswith(".faiss"):
                raise CatalogueError(f"{listing}: {name!r} is not an index file name")
            _read_checked(os.path.join(folder, name), entry)
        index = GroupedIndex.load(folder, e.embeddings, e.categories, same_category)
        _probe(index, e)
        return index
    except (CatalogueError, ValueError, RuntimeError) as err:
        logger.warning(f"{folder}: saved index not used, rebuilt ({err})")
        return None


def _probe(index: GroupedIndex, e: CatalogueEntries, per_group: int = 4) -> None:
    """Each group's index must find its own first items at similarity 1 (not another's file)."""
    for c, rows in index.rows.items():
        probe = rows[:per_group]
        cats = np.full(len(probe), c) if index.same_category else e.categories[probe]
        sims, found = index.search(e.embeddings[probe], cats, 1)
        if (found[:, 0] < 0).any() or (np.abs(sims[:, 0] - 1) > _UNIT_TOLERANCE).any():
            raise CatalogueError(f"the index of category {c} does not hold its own items")


def _save_index(index: GroupedIndex, root: str, folder: str, prefix: str) -> None:
    """Save beside the shards; older indexes of the same kind go. Read-only: kept in memory."""
    try:
        os.makedirs(root, exist_ok=True)
        tmp = temporary_folder(root)
    except OSError as e:
        logger.info(f"{root}: cannot save the search index ({e.strerror}): kept in memory")
        return
    try:
        index.save(tmp)
        files = {}
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                data = f.read()
            files[name] = {"size": len(data), "crc32": zlib.crc32(data)}
        _write(os.path.join(tmp, "index.json"), json.dumps(files).encode())
        for old in os.listdir(root):  # indexes of other content (the other kind is kept)
            if old.startswith(prefix + "-"):
                shutil.rmtree(os.path.join(root, old), ignore_errors=True)
        os.rename(tmp, folder)
    except OSError as e:  # a full disk, or another process saved the same index meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(folder):
            logger.info(f"{root}: cannot save the search index ({e}): kept in memory")
