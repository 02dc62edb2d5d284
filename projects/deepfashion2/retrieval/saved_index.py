"""
The catalogue's saved search index: ``index/<same|all>-<key>/``, a checked folder
(:mod:`..utils.checked`) of FAISS files keyed by the shards' content. One that does not match is
rebuilt, never used: besides its manifest, it must be an inner-product IVF index over exactly
the catalogue's rows, and each category's index must find each probed item as itself.
"""

from __future__ import annotations

import logging
import os
import re

import numpy as np

from ..evaluation.gallery import GroupedIndex
from ..utils.checked import (
    CheckedFolderError,
    read_file,
    read_manifest,
    remove_folder,
    write_folder,
)
from ..utils.files import remove_dead_temporaries
from .errors import CatalogueError
from .shards import UNIT_TOLERANCE

logger = logging.getLogger(__name__)

KIND = "deepfashion2 catalogue index"
NAME = re.compile(r"(same|all)-[0-9a-f]{16}")


def load_index(root: str, name: str, e, same_category: bool) -> GroupedIndex | None:
    """The saved index ``root/name`` of this content, if it is intact and answers for its items."""
    folder = os.path.join(root, name)
    if not os.path.lexists(folder):
        return None
    try:
        manifest = read_manifest(folder, KIND)
        files = {n: read_file(folder, manifest, n) for n in manifest["files"]}
        index = GroupedIndex.from_files(files, e.embeddings, e.categories, same_category)
        probe(index, e)
        return index
    except (CheckedFolderError, CatalogueError, ValueError, RuntimeError) as err:
        logger.warning(f"{folder}: saved index not used, rebuilt ({err})")
        return None


def probe(index: GroupedIndex, e, per_group: int = 4) -> None:
    """Each group's index must find its first items as themselves (or an identical twin)."""
    for c, rows in index.rows.items():
        probe_rows = rows[:per_group]
        cats = np.full(len(probe_rows), c) if index.same_category else e.categories[probe_rows]
        sims, found = index.search(e.embeddings[probe_rows], cats, 1)
        found = found[:, 0]
        if (found < 0).any() or (np.abs(sims[:, 0] - 1) > UNIT_TOLERANCE).any():
            raise CatalogueError(f"the index of category {c}", "does not hold its own items")
        same = (found == probe_rows) | (
            np.abs((e.embeddings[found] * e.embeddings[probe_rows]).sum(1) - 1) < 1e-6
        )
        if not same.all():
            raise CatalogueError(
                f"the index of category {c}", "names other items than the ones it finds"
            )


def save_index(index: GroupedIndex, root: str, name: str) -> None:
    """Save beside the shards; older indexes of the same kind go (only folders of ours).
    A catalogue that cannot be written (read-only, full): kept in memory."""
    try:
        if os.path.islink(root):  # checked at open too; never write through a link
            raise CatalogueError(root, "a link (refused)")
        os.makedirs(root, exist_ok=True)
        remove_dead_temporaries(root)  # what a process killed while saving or removing left
        write_folder(root, name, index.to_files(), kind=KIND)
    except OSError as e:  # read-only, a full disk, or another process saved it meanwhile
        if not os.path.isdir(os.path.join(root, name)):
            logger.info(f"{root}: cannot save the search index ({e}): kept in memory")
        return
    prefix = name.split("-")[0] + "-"
    for old in os.listdir(root):  # indexes of other content (the other kind is kept)
        if old.startswith(prefix) and old != name:
            remove_folder(root, old, KIND, NAME)
