"""
Retrieval scored as the official script scores it, on the real 2019 validation ground truth
(``../shared/df2_samples/retrieval_gt_2019``): the expected top-k counts below are what the
official ``deepfashion2_retrieval_test.py`` (run on Python 3, nothing else changed) prints for the
random submissions built here.
"""

import json
import os
from collections import defaultdict

import numpy as np
import pytest
from conftest import SAMPLES

from deepfashion2.evaluation import RetrievalGroundTruth, Submission, score_submission

GT_DIR = os.path.join(SAMPLES, "retrieval_gt_2019")


def _jitter(rng, box, amount):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = rng.uniform(-amount, amount, 4) * np.array([w, h, w, h])
    return [round(float(v), 2) for v in np.array(box, float) + d]


def random_submission(queries: list, gallery: list, seed: int) -> list:
    """
    Detections around the query items (some with the wrong class, some overlapping nothing, scores
    with ties), each with 20 results mixing the right garment's shop boxes (jittered around the
    0.5 IoU threshold) with random shop boxes.
    """
    rng = np.random.default_rng(seed)
    same = defaultdict(list)
    for g in gallery:
        same[(g["pair_id"], g["style"])].append(g)
    rows = defaultdict(list)
    for q in queries:
        rows[q["query_image_id"]].append(q)
    out = []
    for img, items in rows.items():
        if rng.random() < 0.1:
            continue  # nothing detected in this image
        for _ in range(int(rng.integers(1, len(items) + 2))):
            base = items[int(rng.integers(len(items)))]
            box = _jitter(rng, base["bbox"], 0.3)
            if rng.random() < 0.08:
                box = [5000.0, 5000.0, 5100.5, 5100.0]  # overlaps nothing
            cls = base["cls"] if rng.random() < 0.8 else int(rng.integers(1, 14))
            right = same.get((base["pair_id"], base["style"]), [])
            ids, boxes = [], []
            for _ in range(20):
                pool = right if right and rng.random() < 0.15 else gallery
                g = pool[int(rng.integers(len(pool)))]
                ids.append(g["gallery_image_id"])
                boxes.append(_jitter(rng, g["bbox"], 0.2))
            out.append(
                {
                    "query_image_id": img,
                    "query_bbox": box,
                    "query_cls": cls,
                    "query_score": round(float(rng.random()), 2),
                    "gallery_image_id": ids,
                    "gallery_bbox": boxes,
                }
            )
    return out


# seed -> correct answers within top-1, 5, 10, 15, 20 of the 12,550 paired queries, as printed by
# the official script (top-k = count / 12,550)
OFFICIAL_COUNTS = {
    0: (1321, 4654, 6720, 7675, 8052),
    1: (1261, 4738, 6725, 7622, 8029),
}


def official_files():
    if not os.path.isdir(GT_DIR):
        pytest.skip("../shared/df2_samples not available")
    with open(os.path.join(GT_DIR, "query_gt.json")) as f:
        q = json.load(f)
    with open(os.path.join(GT_DIR, "gallery_gt.json")) as f:
        g = json.load(f)
    return q, g


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(OFFICIAL_COUNTS))
def test_random_submissions_score_as_the_official_script(seed, tmp_path):
    q, g = official_files()
    sub = random_submission(q, g, seed)
    res = score_submission(
        Submission.from_json(sub, "sub"), RetrievalGroundTruth.from_official(q, g)
    )
    assert res["num_queries"] == 12550
    got = tuple(round(res[f"top{k}"] * 12550) for k in (1, 5, 10, 15, 20))
    assert got == OFFICIAL_COUNTS[seed]
    for k, count in zip((1, 5, 10, 15, 20), OFFICIAL_COUNTS[seed]):
        assert res[f"top{k}"] == count / 12550  # the official division, to the last bit
