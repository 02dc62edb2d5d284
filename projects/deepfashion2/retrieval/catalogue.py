"""
A shop catalogue: the garments detected in a folder of shop images, with their embeddings, stored
so that it can be searched with the embedding of a garment in any photo.

On disk (``CAT_DIR``)::

    catalogue.json      format, what identifies the model (config, weights sha256, embedding
                        size), the gallery policy and the image folder; created once, under a lock
    config.yaml         the full config of the model that built it (search rebuilds it from here)
    shards/<name>/      one batch of indexed images (:mod:`.shards`)
    index/<kind>-<key>/ the search index of the shards whose content hashes to <key>
                        (:mod:`.saved_index`)
    products/<name>/    the products (their images, fields, removals) named in catalogue.json
                        (:mod:`.products`): swapped atomically on each update

A catalogue is data, never code, and a damaged one is refused, never answered from:

- everything the project reads or writes inside the folder (``catalogue.json``, ``config.yaml``,
  ``shards/``, ``index/``, its lock) must be a real file or folder there, not a link out of it:
  anything else is refused by name at open, before anything is written or deleted; only folders
  of the project's own names and manifests are ever removed;
- a shard is written to a temporary folder, its manifest last, and renamed into ``shards/``: it is
  there complete or not at all, so an indexing run killed at any moment loses at most its current
  batch, and a rerun indexes exactly the images no shard holds;
- at load, every shard is checked against its manifest and validated (:mod:`.shards`): a damaged
  shard is refused by name (:class:`CatalogueError`), or skipped with a warning when the catalogue
  is opened with ``lenient=True``;
- a saved index that does not match its content, or does not find its own items as themselves,
  is rebuilt. A catalogue that cannot be written to (read-only) keeps a new index in memory;
- the image folder is the one recorded at indexing (or given): :meth:`Catalogue.image_folder`
  checks that it holds the catalogue's images with their recorded sizes, and
  :meth:`Catalogue.image_path` gives an item's image only inside it and only while it is the file
  that was indexed.

Entries are ordered by image path at load, so the catalogue's rows do not depend on how the work
was split into shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass

import numpy as np

from ..errors import printable
from ..evaluation.gallery import EXACT_MAX, GroupedIndex
from ..utils.checked import (
    ORDERED_NAME,
    CheckedFolderError,
    load_npy,
    ordered_name,
    read_file,
    read_json,
    read_manifest,
    remove_folder,
    write_bytes,
    write_folder,
)
from ..utils.files import locked, remove_dead_temporaries, write_json_atomic
from .errors import CatalogueError, CatalogueMismatchError
from .filters import parse_filter, row_mask
from .products import KIND as PRODUCTS_KIND
from .products import Products, column
from .saved_index import load_index, save_index
from .shards import COLUMNS, Shard, read_shard, stack, write_shard

logger = logging.getLogger(__name__)

FORMAT = 3  # 2: shard manifests, skipped images, content-keyed index; 3: image sizes, kinds
MAX_TOP_K = 1000  # results per garment: enough for any page, bounded for memory
_INDEX_KINDS = ("auto", "exact", "faiss")
_MASKS_KEPT = 16
_PROBED_IMAGES = 3  # images whose recorded size is checked in the image folder at open

__all__ = ["Catalogue", "CatalogueEntries", "CatalogueError", "CatalogueMismatchError"]


@dataclass
class CatalogueEntries:
    """Every indexed garment, ordered by image path (then detection order)."""

    images: list[str]  # (I,) paths relative to the image folder, sorted
    image_bytes: np.ndarray  # (I,) each image's size when indexed, -1 = unknown
    image: np.ndarray  # (N,) index into images
    boxes: np.ndarray  # (N, 4) XYXY
    categories: np.ndarray  # (N,) 1..13
    scores: np.ndarray  # (N,) detection scores
    embeddings: np.ndarray  # (N, E) float32, unit length

    def __len__(self) -> int:
        return len(self.image)


class Catalogue:
    def __init__(self, folder: str, *, lenient: bool = False):
        """
        Open an existing catalogue (see :meth:`create`). ``lenient``: skip damaged shards with a
        warning instead of refusing the catalogue.
        """
        self.folder = folder
        self.lenient = lenient
        meta = os.path.join(folder, "catalogue.json")
        if not os.path.lexists(meta):
            raise FileNotFoundError(f"{folder} is not a catalogue (no catalogue.json)")
        _check_layout(folder)
        try:
            self.meta = read_json(meta)
        except CheckedFolderError as e:
            raise CatalogueError(e.path, e.reason) from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            found = self.meta.get("format") if isinstance(self.meta, dict) else None
            raise CatalogueError(
                meta,
                f"catalogue format {found}, expected {FORMAT}: index the images again "
                "into a new catalogue",
            )
        _check_meta(self.meta, meta)
        self._shard_cache: dict[str, Shard] = {}
        self._entries: CatalogueEntries | None = None
        self._indexes: dict[bool, GroupedIndex] = {}  # by same_category
        self._products: Products | None = None
        self._milvus = None
        self._keys: np.ndarray | None = None
        self._key_row: dict | None = None
        self._masks: dict[str, np.ndarray | None] = {}  # by filter
        self._rows: dict | None = None  # per row: product, live; per product: fields

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
        _check_layout(folder)
        meta = os.path.join(folder, "catalogue.json")
        root = os.path.abspath(images_root) if images_root else ""
        with locked(os.path.join(folder, ".lock")):
            if os.path.lexists(meta):
                cat = cls(folder, lenient=lenient)
                cat.check_model(identity)
                cat.check_images_root(root)
                return cat
            os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
            if config_yaml:
                write_bytes(os.path.join(folder, "config.yaml"), config_yaml.encode())
            write_json_atomic(meta, {"format": FORMAT, "images_root": root, **identity})
        return cls(folder, lenient=lenient)

    # -- what built it -------------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        where = ("format", "images_root", "products", "milvus")  # what it is, not who built it
        return {k: v for k, v in self.meta.items() if k not in where}

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
                    self.folder,
                    f"was built with {what} {mine.get(key)} (config "
                    f"{mine.get('config')}), the model here has {identity.get(key)}: their "
                    "embeddings are not comparable. Search with the model that built it, or index "
                    "the images again into a new catalogue.",
                )

    def check_images_root(self, root: str) -> None:
        """Refuse to add another image folder's images (their paths would collide)."""
        if root and self.images_root and os.path.abspath(root) != self.images_root:
            raise CatalogueMismatchError(
                self.folder,
                f"indexes the images of {self.images_root}, not {root}: index "
                "another folder into a new catalogue",
            )

    # -- the shop images -----------------------------------------------------------------------

    def image_folder(self, root: str | None = None) -> str:
        """
        The real path of the folder of the catalogue's images: ``root`` if given, else the one
        recorded at indexing. Refused unless it exists and holds the catalogue's first images
        with the sizes recorded when they were indexed.
        """
        given = root or self.images_root
        if not given:
            raise CatalogueError(
                self.folder, "records no image folder", "give it: --images /path/to/shop_images"
            )
        real = os.path.realpath(given)
        if not os.path.isdir(real):
            raise CatalogueError(
                given,
                "the catalogue's image folder is not there",
                "give the folder it was indexed from: --images",
            )
        e = self.entries()
        known = [i for i in range(len(e.images)) if e.image_bytes[i] >= 0][:_PROBED_IMAGES]
        for i in known:
            if self._image_file(real, i) is None:
                raise CatalogueError(
                    given,
                    f"does not hold this catalogue's image {printable(e.images[i])} as it "
                    "was indexed (missing, outside the folder, or another size)",
                    "give the folder it was indexed from: --images",
                )
        return real

    def image_path(self, root: str, item: int) -> str | None:
        """
        The shop image of row ``item`` inside ``root`` (the real path :meth:`image_folder` gave),
        after resolving links, if it is still the file that was indexed (same size); else None.
        """
        e = self.entries()
        if not 0 <= item < len(e) or not self.rows()["live"][item]:
            return None
        return self._image_file(root, int(e.image[item]))

    def _image_file(self, root: str, i: int) -> str | None:
        e = self.entries()
        path = os.path.realpath(os.path.join(root, e.images[i]))
        if not path.startswith(root.rstrip(os.sep) + os.sep) or e.image_bytes[i] < 0:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        import stat

        if not stat.S_ISREG(st.st_mode) or st.st_size != e.image_bytes[i]:
            return None
        return path

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
        self,
        images: list[str],
        detections: list[tuple],
        skipped: dict[str, str] | None = None,
        image_bytes: list[int] | None = None,
    ) -> None:
        """
        One shard: ``images`` (paths relative to the image folder) and, for each, its detections
        ``(boxes (n, 4), categories (n,) 1..13, scores (n,), embeddings (n, E))``; ``skipped``:
        images that could not be read, with the reason; ``image_bytes``: each image's size
        (default: read from the image folder; -1 where there is none). Atomic.
        """
        if image_bytes is None:  # unknown (-1, never served) without a recorded image folder
            root = self.images_root
            image_bytes = [_size(os.path.join(root, p)) if root else -1 for p in images]
        write_shard(
            os.path.join(self.folder, "shards"),
            images,
            image_bytes,
            detections,
            skipped or {},
            self.meta["weights_sha256"],
            self.embed_dim,
        )
        self._entries, self._indexes, self._rows = None, {}, None
        self._keys = self._key_row = None
        self._masks = {}

    def remove_unfinished(self) -> None:
        """Temporary shard folders of runs that were killed while writing."""
        remove_dead_temporaries(os.path.join(self.folder, "shards"))

    # -- reading and searching -------------------------------------------------------------------

    def _shards(self) -> list[str]:
        shards = os.path.join(self.folder, "shards")
        return sorted(os.path.join(shards, n) for n in os.listdir(shards) if not n.startswith("."))

    def _verified_shards(self) -> list[Shard]:
        out = []
        for path in self._shards():
            shard = self._shard_cache.get(path)
            if shard is None:
                try:
                    shard = read_shard(path, self.meta["weights_sha256"], self.embed_dim)
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
        policy = self.meta["policy"]
        kind, exact_max = policy.get("index", "auto"), policy.get("exact_max", EXACT_MAX)
        content = [s.key for s in self._verified_shards()] + [kind, exact_max]
        prefix = "same" if same_category else "all"
        name = f"{prefix}-{hashlib.sha1(json.dumps(content).encode()).hexdigest()[:16]}"
        root = os.path.join(self.folder, "index")
        index = load_index(root, name, e, same_category)
        if index is None:
            index = GroupedIndex(
                e.embeddings,
                e.categories,
                same_category=same_category,
                kind=kind,
                exact_max=exact_max,
            )
            save_index(index, root, name)
        self._indexes[same_category] = index
        return index

    # -- products ------------------------------------------------------------------------------

    @property
    def products(self) -> Products:
        """The catalogue's products (empty: every image is its own product)."""
        if self._products is None:
            name = self.meta.get("products")
            if name is None:
                self._products = Products()
            else:
                if not (isinstance(name, str) and ORDERED_NAME.fullmatch(name)):
                    raise CatalogueError(
                        os.path.join(self.folder, "catalogue.json"), "products: not a table name"
                    )
                self._products = Products.read(os.path.join(self.folder, "products", name))
        return self._products

    def set_products(self, table: Products) -> None:
        """
        Make ``table`` the catalogue's products: a new folder, then ``catalogue.json`` swapped to
        name it (atomic: a reader sees the old table or the new one), then the old folder
        removed. Under the catalogue's lock, so that two updates do not lose one another.
        """
        self._swap("products", PRODUCTS_KIND, table.files(), lambda meta, name: {"products": name})
        self._products, self._rows, self._masks = table, None, {}

    def _swap(self, sub: str, kind: str, files: dict | None, changes) -> None:
        """
        Under the catalogue's lock: a new checked folder ``sub/<name>`` of ``files`` (None: no
        folder, name None), then ``catalogue.json`` updated atomically with ``changes(meta,
        name)`` (a dict of its new fields), then ``sub``'s other folders removed (the previous
        one, and any a kill left). A reader sees the catalogue before or after.
        """
        parent = os.path.join(self.folder, sub)
        with locked(os.path.join(self.folder, ".lock")):
            name = None
            if files is not None:
                os.makedirs(parent, exist_ok=True)
                remove_dead_temporaries(parent)
                name = ordered_name()
                write_folder(parent, name, files, kind=kind)
            self._rewrite_meta(lambda meta: changes(meta, name))
            if os.path.isdir(parent):
                for other in os.listdir(parent):
                    if other != name:
                        remove_folder(parent, other, kind, ORDERED_NAME)

    def _rewrite_meta(self, changes) -> None:
        """``catalogue.json`` with ``changes(meta)``'s fields, written atomically; the caller
        holds the lock."""
        path = os.path.join(self.folder, "catalogue.json")
        meta = read_json(path)
        meta.update(changes(meta))
        write_json_atomic(path, meta)
        self.meta = meta

    # -- Milvus ----------------------------------------------------------------------------------

    @property
    def uses_milvus(self) -> bool:
        return isinstance(self.meta.get("milvus"), dict)

    def use_milvus(self, uri: str, collection: str, index: str = "HNSW") -> None:
        """Record that the catalogue's vectors live in Milvus at ``uri`` (:mod:`.milvus`)."""

        def changes(meta: dict) -> dict:
            old = meta.get("milvus") or {}
            same = (old.get("uri"), old.get("collection")) == (uri, collection)
            return {"milvus": {"uri": uri, "collection": collection, "index": index,
                               "pushed": old.get("pushed") if same else None}}  # fmt: skip

        with locked(os.path.join(self.folder, ".lock")):
            self._rewrite_meta(changes)
        self._milvus = None

    def milvus(self):
        """The catalogue's :class:`.milvus.MilvusStore` (checked against its model)."""
        if self._milvus is None:
            from .milvus import MilvusStore

            where = self.meta.get("milvus")
            if not (isinstance(where, dict) and all(isinstance(where.get(k), str)
                                                    for k in ("uri", "collection"))):  # fmt: skip
                raise CatalogueError(
                    os.path.join(self.folder, "catalogue.json"), "milvus: uri and collection"
                )
            self._milvus = MilvusStore(
                where["uri"], where["collection"], self.meta, where.get("index", "HNSW")
            )
        return self._milvus

    def milvus_pushed(self) -> dict[int, int] | None:
        """key -> digest of what the last complete push sent to Milvus (:func:`.milvus.push`),
        or None when unknown (never pushed, a push under way or killed, a damaged record)."""
        name = (self.meta.get("milvus") or {}).get("pushed")
        if not (isinstance(name, str) and ORDERED_NAME.fullmatch(name)):
            return None
        try:
            folder = os.path.join(self.folder, "milvus", name)
            manifest = read_manifest(folder, MILVUS_KIND)
            keys = load_npy(read_file(folder, manifest, "keys.npy"), folder)
            digests = load_npy(read_file(folder, manifest, "digests.npy"), folder)
        except CheckedFolderError as e:
            logger.warning(f"the record of the last Milvus push is unreadable ({e}): rescanning")
            return None
        if keys.shape != digests.shape or keys.dtype.kind != "i" or digests.dtype.kind != "i":
            return None
        return dict(zip(keys.tolist(), digests.tolist()))

    def record_milvus_pushed(self, pushed: dict[int, int] | None) -> None:
        """Record what Milvus now holds (None: unknown, before a push starts). Atomic."""
        files = None
        if pushed is not None:
            n = len(pushed)
            files = {"keys.npy": np.fromiter(pushed.keys(), np.int64, n),
                     "digests.npy": np.fromiter(pushed.values(), np.int64, n)}  # fmt: skip

        def changes(meta: dict, name: str | None) -> dict:
            return {"milvus": {**meta.get("milvus", {}), "pushed": name}}

        self._swap("milvus", MILVUS_KIND, files, changes)

    def garment_keys(self) -> np.ndarray:
        """(R,) each row's stable key (:func:`.milvus.garment_keys`)."""
        if self._keys is None:
            from .milvus import garment_keys

            e = self.entries()
            self._keys = garment_keys(e.images, e.image)
        return self._keys

    def rows(self) -> dict:
        """
        Per row of :meth:`entries`: ``product`` (R,) index into ``product_ids``, ``live`` (R,)
        bool (not removed); per product: ``columns`` (field -> values), ``photos`` (its images
        not removed); ``grouped``: whether a products file named any image (results are then one
        per product).
        """
        if self._rows is None:
            e, table = self.entries(), self.products
            pid_of_image = [table.product_of(p) for p in e.images]
            ids = sorted(set(pid_of_image))
            number = {p: i for i, p in enumerate(ids)}
            image_pid = np.array([number[p] for p in pid_of_image], np.int64)
            live_image = np.array([p not in table.removed for p in e.images], bool)
            photos = np.bincount(image_pid[live_image], minlength=len(ids))
            self._rows = {
                "product_ids": ids,
                "product": image_pid[e.image] if len(e.images) else np.zeros(0, np.int64),
                "live": live_image[e.image] if len(e.images) else np.zeros(0, bool),
                "photos": photos,
                "columns": {
                    f: column([table.products.get(p, {}).get(f) for p in ids], kind)
                    for f, kind in table.fields.items()
                },
                "grouped": bool(table.images),
            }
        return self._rows

    def check_filter(self, where: str) -> None:
        """Raise :class:`FilterError` (one line) if ``where`` is not a filter of this catalogue;
        nothing is computed over the rows."""
        parse_filter(where, self.products.fields)

    def allowed(self, where: str | None = None) -> np.ndarray | None:
        """(R,) bool: the rows a search may return (not removed, and the filter ``where``:
        :mod:`.filters`), or None when that is every row. A bad filter: :class:`FilterError`.
        The last filters' masks are kept (a shop's page asks the same few)."""
        rows = self.rows()
        key = where or ""
        if key in self._masks:
            return self._masks[key]
        mask = None if rows["live"].all() else rows["live"].copy()
        if where:
            clauses = parse_filter(where, self.products.fields)
            hit = row_mask(clauses, self.entries().categories, rows["product"],
                           rows["product_ids"], rows["columns"])  # fmt: skip
            mask = hit if mask is None else mask & hit
        if len(self._masks) >= _MASKS_KEPT:
            self._masks.pop(next(iter(self._masks)))
        self._masks[key] = mask
        return mask

    # -- searching -------------------------------------------------------------------------------

    def search_rows(
        self,
        embeddings: np.ndarray,
        categories: np.ndarray,
        k: int = 20,
        same_category=True,
        where: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        (similarities, rows), each (Q, k), best first; rows of :meth:`entries`, -1 = none. Only
        rows that are not removed and satisfy the filter ``where``, chosen before the top-k;
        one row per product (its best) where the catalogue has products.
        """
        if not (isinstance(k, (int, np.integer)) and 1 <= k <= MAX_TOP_K):
            raise ValueError(f"top-k must be an integer from 1 to {MAX_TOP_K}, got {k!r}")
        q = np.asarray(embeddings, np.float32)
        if not np.isfinite(q).all():
            raise ValueError("the model gave a non-finite embedding: its weights are damaged")
        if self.uses_milvus:
            return self._search_milvus(q, categories, int(k), same_category, where)
        allowed = self.allowed(where)
        index, rows = self.index(same_category), self.rows()
        if rows["grouped"]:
            sims, found = best_per_group(index, q, categories, int(k), allowed, rows["product"])
        else:
            sims, found = index.search(q, categories, int(k), allowed)
        # unit vectors: a cosine, within float rounding of [-1, 1]
        return np.clip(sims, -1.0, 1.0), found

    def _search_milvus(self, q, categories, k: int, same_category, where):
        clauses = parse_filter(where, self.products.fields) if where else []
        rows = self.rows()
        sims, keys = self.milvus().search(q, categories, k, same_category, clauses,
                                          rows["grouped"])  # fmt: skip
        if self._key_row is None:
            self._key_row = {int(key): r for r, key in enumerate(self.garment_keys().tolist())}
        found = np.array([[self._key_row.get(int(x), -1) for x in line] for line in keys.tolist()],
                         np.int64).reshape(keys.shape)  # fmt: skip
        # a row Milvus holds and the folder no longer serves (a push not yet made): not shown
        found[(found >= 0) & ~rows["live"][np.maximum(found, 0)]] = -1
        return np.clip(sims, -1.0, 1.0), found

    def search(
        self,
        embeddings: np.ndarray,
        categories: np.ndarray,
        k: int = 20,
        same_category=True,
        where: str | None = None,
    ) -> list[list[dict]]:
        """
        For each query garment, its top-k catalogue items: ``item`` (the row of
        :meth:`entries`, stable while the catalogue's shards are unchanged), image (printable:
        bytes that are not UTF-8 as ``\\xNN``), box, category, detection score, similarity,
        ``product`` (``{"id", fields...}``) and ``other_photos`` (the product's other images).
        """
        sims, found = self.search_rows(embeddings, categories, k, same_category, where)
        e, rows, table = self.entries(), self.rows(), self.products
        out = []
        for q_sims, q_rows in zip(sims.tolist(), found.tolist()):
            out.append(
                [
                    {
                        "item": int(r),
                        "image": printable(e.images[e.image[r]]),
                        "box": [float(v) for v in e.boxes[r]],
                        "category": int(e.categories[r]),
                        "score": float(e.scores[r]),
                        "similarity": float(s),
                        "product": table.describe(rows["product_ids"][rows["product"][r]]),
                        "other_photos": int(rows["photos"][rows["product"][r]]) - 1,
                    }
                    for s, r in zip(q_sims, q_rows)
                    if r >= 0
                ]
            )
        return out


def best_per_group(index, q: np.ndarray, categories, k: int, allowed, group: np.ndarray):
    """
    The k best rows of k distinct groups (products) per query, best first: the index is asked
    for more rows (x4 each time) until k groups are found or every allowed row was seen.
    ``index.search(q, categories, k, allowed)`` as :class:`GroupedIndex`'s.
    """
    n = len(group) if allowed is None else int(np.count_nonzero(allowed))
    sims = np.full((len(q), k), -np.inf, np.float32)
    out = -np.ones((len(q), k), np.int64)
    cats = np.asarray(categories)
    todo, want = np.arange(len(q)), min(4 * k, max(n, 1))
    while len(todo):
        s, r = index.search(q[todo], cats[todo], want, allowed)
        again = []
        for j, qi in enumerate(todo.tolist()):
            seen: set[int] = set()
            for sim, row in zip(s[j].tolist(), r[j].tolist()):
                if row < 0 or len(seen) == k:
                    break
                g = int(group[row])
                if g not in seen:
                    sims[qi, len(seen)], out[qi, len(seen)] = sim, row
                    seen.add(g)
            if len(seen) < k and want < n and r[j][-1] >= 0:
                again.append(qi)  # the rows asked for were all there: more may be
        todo, want = np.array(again, np.int64), min(want * 4, n)
    return sims, out


# -- the folder --------------------------------------------------------------------------------


# what the project reads or writes in a catalogue folder, and what each must be
_LAYOUT = {
    "catalogue.json": "file",
    "config.yaml": "file",
    ".lock": "file",
    "shards": "folder",
    "index": "folder",
    "products": "folder",
    "milvus": "folder",
}
MILVUS_KIND = "deepfashion2 catalogue milvus record"


def _check_layout(folder: str) -> None:
    """Each of the catalogue's own names is absent or a real file / folder: never a link."""
    for name, what in _LAYOUT.items():
        path = os.path.join(folder, name)
        if os.path.islink(path):
            raise CatalogueError(path, "a link (refused: a catalogue's files are its own)")
        if os.path.exists(path) and os.path.isdir(path) != (what == "folder"):
            raise CatalogueError(path, f"not a {what}")


def _check_meta(meta: dict, where: str) -> None:
    """catalogue.json's fields that are used as numbers and names, checked once at open."""
    dim, policy = meta.get("embed_dim"), meta.get("policy")
    if not (_is_int(dim) and 0 < dim <= 65536 and isinstance(policy, dict)):
        raise CatalogueError(where, "embed_dim or policy missing or invalid")
    exact_max = policy.get("exact_max", EXACT_MAX)
    if (
        not (_is_int(exact_max) and exact_max >= 0)
        or policy.get("index", "auto") not in _INDEX_KINDS
    ):
        raise CatalogueError(where, f"policy: index one of {_INDEX_KINDS}, exact_max an integer")
    if not isinstance(meta.get("weights_sha256"), str) or not isinstance(
        meta.get("images_root", ""), str
    ):
        raise CatalogueError(where, "weights_sha256 or images_root is not a string")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _entries(shards: list[Shard], dim: int) -> CatalogueEntries:
    """All shards' entries, each image once (the first shard holding it), ordered by path."""
    paths: list[str] = []
    sizes: list[np.ndarray] = []
    first: list[bool] = []  # per (shard, image) slot: the first occurrence of its path
    slot_of_row, columns = [], {n: [] for n in COLUMNS[:4]}
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
        sizes.append(shard.image_bytes)
    if not paths:
        return CatalogueEntries(images=[], image_bytes=np.zeros(0, np.int64), **stack([], dim))
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
        image_bytes=np.concatenate(sizes)[kept[order]],
        image=image[perm],
        **{n: np.concatenate(c)[keep_row][perm] for n, c in columns.items()},
    )
