import json
import os

import numpy as np
import pytest
from conftest import SPEC

from deepfashion2 import landmarks as L


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
        assert [[a + 1, b + 1] for a, b in c.skeleton] == s["skeleton_1based"]


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
        edges = {frozenset(e) for e in c.skeleton}
        assert len(edges) == len(c.skeleton) and all(len(e) == 2 for e in edges)
        assert all(0 <= i < c.num_landmarks for e in edges for i in e)
        assert {i for e in edges for i in e} == set(range(c.num_landmarks))  # all connected
        perm = c.flip_indices
        assert {frozenset(int(perm[i]) for i in e) for e in edges} == edges
    rules = L.keypoint_connection_rules()
    assert len(rules) == sum(len(c.skeleton) for c in L.CATEGORIES)
    assert all(a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0] for a, b, _ in rules)
    names = L.keypoint_names()
    skirt = L.CATEGORY_BY_ID[9]
    skirt_rules = [(names.index(a) - skirt.start + 1, names.index(b) - skirt.start + 1)
                   for a, b, _ in rules if a.startswith("skirt_")]  # fmt: skip
    # waist 1-2-3, then 1 down the left side, across the hem and up the right side to 3
    assert skirt_rules == [(1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 3)]


def crossings(points: np.ndarray, edges) -> list:
    """Pairs of edges (not sharing a landmark) whose segments properly intersect."""

    def side(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    out = []
    edges = list(edges)
    for i, (a, b) in enumerate(edges):
        for c, d in edges[i + 1 :]:
            if len({a, b, c, d}) < 4:
                continue
            p, q, r, s = points[a], points[b], points[c], points[d]
            d1, d2, d3, d4 = side(r, s, p), side(r, s, q), side(p, q, r), side(p, q, s)
            if (
                (d1 > 0) != (d2 > 0)
                and (d3 > 0) != (d4 > 0)
                and min(map(abs, (d1, d2, d3, d4))) > 0
            ):
                out.append(((a + 1, b + 1), (c + 1, d + 1)))
    return out


def test_the_synthetic_generator_places_landmarks_where_the_figure_does():
    from deepfashion2.data.synthetic import template

    for c in L.CATEGORIES:
        _, pos = template(c)
        # the figure's lines drawn on the template do not cross: the same order around the
        # garment (e.g. outwear: down the left side to the hem, up the front opening to 4)
        assert crossings(pos, c.skeleton) == [], c.name
        # a mirrored garment has landmark i where the original has its flip partner
        mirrored = np.stack([1 - pos[:, 0], pos[:, 1]], axis=1)
        np.testing.assert_allclose(mirrored[c.flip_indices], pos, atol=1e-12)


def test_real_bottoms_draw_without_crossing_lines():
    """Real skirts and shorts (../shared/df2_samples): the figure's lines draw no X."""
    import glob

    from conftest import require_samples

    files = sorted(glob.glob(os.path.join(require_samples(), "annos", "[0-9]*.json")))
    seen = 0
    for f in files:
        for key, item in json.load(open(f)).items():
            if not key.startswith("item") or item["category_id"] not in (7, 9):
                continue
            c = L.CATEGORY_BY_ID[item["category_id"]]
            lm = np.array(item["landmarks"], float).reshape(-1, 3)
            edges = [(a, b) for a, b in c.skeleton if lm[a, 2] > 0 and lm[b, 2] > 0]
            assert crossings(lm[:, :2], edges) == [], (f, key)
            # the former drawing (a loop in index order) crossed on these
            seen += 1
    assert seen >= 3
