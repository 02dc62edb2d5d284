"""
A training sampler that puts consumer and shop photos of the same garment into the same batch, so
the matching head sees positive pairs in every batch.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from .mapper import match_id


class PairTrainingSampler(Sampler):
    """
    Infinite stream of dataset indices, in blocks of ``images_per_batch`` (one block = one batch
    of this process, so use it with ``aspect_ratio_grouping=False``).

    Each block starts with a consumer image and a shop image sharing a garment identity
    (``pair_id`` and ``style > 0``); the remaining slots are filled pair-wise from anchors drawn
    uniformly from the whole split, each followed by a partner of the other source when it has one
    (else by another uniform draw), so every image keeps being seen by the detector. Blocks are
    generated from one seed on every process and dealt out round-robin, so processes never repeat
    each other's batches.
    """

    def __init__(self, dataset_dicts: list[dict], images_per_batch: int, seed: int | None = None):
        if images_per_batch < 2:
            raise ValueError(
                f"PairTrainingSampler needs at least 2 images per batch and process, got "
                f"{images_per_batch} (raise SOLVER.IMS_PER_BATCH)"
            )
        self._n = len(dataset_dicts)
        self._batch = images_per_batch
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world = comm.get_rank(), comm.get_world_size()
        # identity -> images of each source holding it
        by_id: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for i, d in enumerate(dataset_dicts):
            side = 1 if d.get("source") == "shop" else 0
            for a in d.get("annotations", ()):
                mid = match_id(d.get("pair_id", 0), a.get("style", 0))
                if mid >= 0 and (not by_id[mid][side] or by_id[mid][side][-1] != i):
                    by_id[mid][side].append(i)
        self._partners: dict[int, list[tuple[int, int]]] = defaultdict(list)  # image -> (id, side)
        self._sides = {}
        for mid, sides in by_id.items():
            if sides[0] and sides[1]:
                self._sides[mid] = sides
                for side in (0, 1):
                    for i in sides[side]:
                        self._partners[i].append((mid, 1 - side))
        self._pairable = np.array(sorted(self._partners), dtype=np.int64)

    @property
    def num_pairable_images(self) -> int:
        return len(self._pairable)

    def __iter__(self):
        rng = np.random.default_rng(self._seed)
        for b in itertools.count():
            block = self._block(rng)
            if b % self._world == self._rank:
                yield from block

    def _partner(self, rng, i: int) -> int | None:
        options = self._partners.get(i)
        if not options:
            return None
        mid, side = options[rng.integers(len(options))]
        images = self._sides[mid][side]
        return int(images[rng.integers(len(images))])

    def _block(self, rng) -> list[int]:
        out: list[int] = []
        if len(self._pairable):
            a = int(self._pairable[rng.integers(len(self._pairable))])
            out += [a, self._partner(rng, a)]
        while len(out) < self._batch:
            a = int(rng.integers(self._n))
            out.append(a)
            if len(out) < self._batch:
                p = self._partner(rng, a)
                out.append(p if p is not None else int(rng.integers(self._n)))
        return out[: self._batch]
