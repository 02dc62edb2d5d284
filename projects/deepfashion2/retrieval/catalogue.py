"""
A shop catalogue: the garments detected in a folder of shop images, with their embeddings, stored
so that it can be searched with the embedding of a garment in any photo.

On disk (``CAT_DIR``)::

    catalogue.json      format, what identifies the model (config, weights sha256, embedding
                        size) and the gallery policy; written once, atomically
    config.yaml         the full config of the model that built it (search rebuilds it from here)
    shards/<name>/      one batch of indexed images: images.json (their paths, relative to the
                        image folder, including those without any garment), boxes.npy (n, 4)
                        XYXY, categories.npy (n,) 1..13, scores.npy (n,), embeddings.npy (n, E),
                        image.npy (n,) index into images.json
    index/<stamp>/      the search index of the shards it names (FAISS files for large
                        categories), rebuilt when shards are added

A shard is written to a temporary folder and renamed into ``shards/``: it is there complete or not
at all, so an indexing run killed at any moment loses at most its current batch, and a rerun
indexes exactly the images no shard holds. Entries are ordered by image path at load, so the
catalogue's rows do not depend on how the work was split into shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass

import numpy as np

from ..evaluation.gallery import GroupedIndex
from ..utils.files import remove_dead_temporaries, temporary_folder, write_json_atomic

FORMAT = 1
_COLUMNS = ("boxes", "categories", "scores", "embeddings", "image")


class CatalogueMismatchError(ValueError):
    """The catalogue was built by another model than the one asked to search or extend it."""


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


class Catalogue:
    def __init__(self, folder: str):
        """Open an existing catalogue (see :meth:`create`)."""
        self.folder = folder
        meta = os.path.join(folder, "catalogue.json")
        if not os.path.isfile(meta):
            raise FileNotFoundError(f"{folder} is not a catalogue (no catalogue.json)")
        with open(meta) as f:
            self.meta = json.load(f)
        if self.meta.get("format") != FORMAT:
            raise ValueError(
                f"{meta}: catalogue format {self.meta.get('format')}, expected {FORMAT}"
            )
        self._entries: CatalogueEntries | None = None
        self._index: GroupedIndex | None = None

    @classmethod
    def create(
        cls, folder: str, identity: dict, config_yaml: str = "", images_root: str = ""
    ) -> "Catalogue":
        """
        A new catalogue, or the existing one in ``folder`` if the same model built it (to add the
        images it does not hold yet). ``identity``: ``config``, ``weights_sha256``, ``embed_dim``
        and the gallery policy (``policy``); ``images_root``: the folder image paths are relative
        to.
        """
        meta = os.path.join(folder, "catalogue.json")
        if os.path.isfile(meta):
            cat = cls(folder)
            cat.check_model(identity)
            return cat
        os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
        if config_yaml:
            with open(os.path.join(folder, "config.yaml"), "w") as f:
                f.write(config_yaml)
        root = os.path.abspath(images_root) if images_root else ""
        write_json_atomic(meta, {"format": FORMAT, "images_root": root, **identity})
        return cls(folder)

    # -- what built it -------------------------------------------------------------------------

    @property
    def identity(self) -> dict:
        return {k: v for k, v in self.meta.items() if k not in ("format", "images_root")}

    @property
    def images_root(self) -> str:
        return self.meta.get("images_root", "")

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

    # -- adding --------------------------------------------------------------------------------

    def indexed_images(self) -> set[str]:
        done: set[str] = set()
        for shard in self._shards():
            with open(os.path.join(shard, "images.json")) as f:
                done.update(json.load(f))
        return done

    def add(self, images: list[str], detections: list[tuple]) -> None:
        """
        One shard: ``images`` (paths relative to the image folder) and, for each, its detections
        ``(boxes (n, 4), categories (n,) 1..13, scores (n,), embeddings (n, E))``. Atomic.
        """
        shards = os.path.join(self.folder, "shards")
        tmp = temporary_folder(shards)
        try:
            cols = _stack(detections, int(self.meta["embed_dim"]))
            for name in _COLUMNS:
                np.save(os.path.join(tmp, name + ".npy"), cols[name], allow_pickle=False)
            with open(os.path.join(tmp, "images.json"), "w") as f:
                json.dump(list(images), f)
            # named in creation order: an image indexed twice keeps its first entries
            os.rename(tmp, os.path.join(shards, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._entries = self._index = None

    def remove_unfinished(self) -> None:
        """Temporary shard folders of runs that were killed while writing."""
        remove_dead_temporaries(os.path.join(self.folder, "shards"))

    # -- reading and searching -------------------------------------------------------------------

    def _shards(self) -> list[str]:
        shards = os.path.join(self.folder, "shards")
        return sorted(os.path.join(shards, n) for n in os.listdir(shards) if not n.startswith("."))

    def entries(self) -> CatalogueEntries:
        if self._entries is None:
            self._entries = _load_entries(self._shards(), int(self.meta["embed_dim"]))
        return self._entries

    def __len__(self) -> int:
        return len(self.entries())

    def index(self, same_category: bool = True) -> GroupedIndex:
        """The search index (built once per set of shards and saved; exact or FAISS by size)."""
        if self._index is not None and self._index.same_category == same_category:
            return self._index
        e = self.entries()
        policy = self.meta.get("policy", {})
        stamp = hashlib.sha1(
            json.dumps([os.path.basename(s) for s in self._shards()] + [same_category]).encode()
        ).hexdigest()[:16]
        root = os.path.join(self.folder, "index")
        folder = os.path.join(root, stamp)
        if os.path.isdir(folder):
            self._index = GroupedIndex.load(folder, e.embeddings, e.categories, same_category)
        else:
            self._index = GroupedIndex(
                e.embeddings,
                e.categories,
                same_category=same_category,
                kind=policy.get("index", "auto"),
                exact_max=policy.get("exact_max", 200_000),
            )
            os.makedirs(root, exist_ok=True)
            tmp = temporary_folder(root)
            self._index.save(tmp)
            for old in os.listdir(root):  # indexes of fewer shards
                if not old.startswith("."):
                    shutil.rmtree(os.path.join(root, old), ignore_errors=True)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process saved the same index meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
        return self._index

    def search_rows(
        self, embeddings: np.ndarray, categories: np.ndarray, k: int = 20, same_category=True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, rows), each (Q, k), best first; rows of :meth:`entries`, -1 = none."""
        return self.index(same_category).search(embeddings, categories, k)

    def search(
        self, embeddings: np.ndarray, categories: np.ndarray, k: int = 20, same_category=True
    ) -> list[list[dict]]:
        """For each query garment, its top-k catalogue items (image, box, category, similarity)."""
        sims, rows = self.search_rows(embeddings, categories, k, same_category)
        e = self.entries()
        out = []
        for q_sims, q_rows in zip(sims.tolist(), rows.tolist()):
            out.append(
                [
                    {
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


def _load_entries(shards: list[str], dim: int) -> CatalogueEntries:
    """All shards' entries, each image once (the first shard holding it), ordered by path."""
    paths: list[str] = []
    first: list[bool] = []  # per (shard, image) slot: the first occurrence of its path
    slot_of_row, columns = [], {n: [] for n in _COLUMNS[:4]}
    seen: set[str] = set()
    for shard in shards:
        with open(os.path.join(shard, "images.json")) as f:
            images = json.load(f)
        cols = {n: np.load(os.path.join(shard, n + ".npy"), allow_pickle=False) for n in _COLUMNS}
        slot_of_row.append(cols["image"] + len(paths))
        for n in columns:
            columns[n].append(cols[n])
        for p in images:
            first.append(p not in seen)
            seen.add(p)
        paths += images
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
