import json
import os

import numpy as np
import pytest
from conftest import SPEC

from deepfashion2 import landmarks as L


@pytest.mark.skipif(not os.path.exists(SPEC), reason="shared spec not available")
def test_scheme_matches_the_spec():
    spec = json.load(open(SPEC))
    assert L.OKS_SIGMAS.tolist() == spec["oks_sigmas_294"]
    for c, s in zip(L.CATEGORIES, spec["categories"]):
        assert (c.id, c.name, c.coco_name, c.num_landmarks) == (
            s["id"],
            s["name"],
            s["coco_name"],
            s["num_landmarks"],
        )
        assert [c.start, c.start + c.num_landmarks] == s["landmark_slice"]
        assert [[a + 1, b + 1] for a, b in c.flip_pairs] == s["flip_pairs_1based_within_category"]


def test_slices_tile_the_294_layout():
    assert L.LANDMARK_COUNT.sum() == L.NUM_LANDMARKS == 294
    assert (L.LANDMARK_START == np.concatenate([[0], np.cumsum(L.LANDMARK_COUNT)[:-1]])).all()
    assert L.LANDMARK_CATEGORY.tolist() == [
        c.contiguous_id for c in L.CATEGORIES for _ in range(c.num_landmarks)
    ]


def test_flip_map_is_symmetric_and_stays_within_each_category():
    perm = L.flip_indices_294()
    assert sorted(perm.tolist()) == list(range(294))
    assert (perm[perm] == np.arange(294)).all()  # an involution: pairs are symmetric
    assert (L.LANDMARK_CATEGORY[perm] == L.LANDMARK_CATEGORY).all()
    names = L.keypoint_names()
    assert len(set(names)) == 294
    for a, b in L.keypoint_flip_map():
        assert a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]
        assert perm[names.index(a)] == names.index(b)


def test_compact_round_trip():
    rng = np.random.default_rng(0)
    for c in L.CATEGORIES:
        compact = rng.random((c.num_landmarks, 3))
        full = L.expand_landmarks(c.contiguous_id, compact)
        assert full.shape == (294, 3)
        assert np.count_nonzero(full.any(1)) == c.num_landmarks
        assert (L.compact_landmarks(c.contiguous_id, full) == compact).all()
    with pytest.raises(ValueError, match="short sleeve top has 25 landmarks"):
        L.expand_landmarks(0, np.zeros((24, 3)))


def test_skeletons_are_within_category_and_flip_symmetric():
    for c in L.CATEGORIES:
        edges = set(c.skeleton)
        assert all(0 <= a < b < c.num_landmarks for a, b in edges)
        assert {i for e in edges for i in e} == set(range(c.num_landmarks))  # all connected
        perm = c.flip_indices
        assert {tuple(sorted((int(perm[a]), int(perm[b])))) for a, b in edges} == edges
    rules = L.keypoint_connection_rules()
    assert all(a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0] for a, b, _ in rules)
