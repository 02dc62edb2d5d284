"""
Retrieval scored as the official script scores it, on the real 2019 validation ground truth
(``../shared/df2_samples/retrieval_gt_2019``): the expected top-k counts below are what the
official ``deepfashion2_retrieval_test.py`` (run on Python 3, nothing else changed) prints for the
random submissions built here.
"""

import glob
import json
import os
import shutil
from collections import defaultdict

import numpy as np
import pytest
from conftest import SAMPLES, require_samples, script_module

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
    require_samples()
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


# --- The item order of the 2019 files: the annotation file's key order -----------------------


def _sample_split(tmp_path) -> str:
    """
    The 57 real consumer annotation files as a split folder: each with its real image where the
    samples have it, else a blank JPEG large enough for its annotations (only the size is read).
    """
    from PIL import Image

    require_samples()
    root = tmp_path / "samples"
    (root / "annos").mkdir(parents=True), (root / "image").mkdir()
    for src in sorted(glob.glob(os.path.join(SAMPLES, "annos", "[0-9]*.json"))):
        stem = os.path.basename(src)[:-5]
        shutil.copy(src, root / "annos")
        img = os.path.join(SAMPLES, "image", stem + ".jpg")
        if os.path.exists(img):
            os.symlink(img, root / "image" / (stem + ".jpg"))
        else:
            Image.new("RGB", (1000, 1000)).save(root / "image" / (stem + ".jpg"))
    return str(root)


def _items_key(rows: list) -> tuple:
    """An image's query rows without their order and ids: pair id, then (box, class) of each."""
    return rows[0]["pair_id"], frozenset((tuple(r["bbox"]), r["cls"]) for r in rows)


def _official_rows_by_items(queries: list) -> dict:
    """2019 query rows of each image, keyed by :func:`_items_key` (the image ids differ)."""
    rows = defaultdict(list)
    for r in queries:
        rows[r["query_image_id"]].append(r)
    return {_items_key(rs): rs for rs in rows.values()}


def test_written_query_file_lists_items_in_the_official_order(tmp_path, capsys):
    q, _ = official_files()
    root = _sample_split(tmp_path)
    prepare = script_module("datasets/prepare_deepfashion2.py").main
    out = tmp_path / "gt"
    assert (
        prepare(
            [
                "--anno-dir",
                f"{root}/annos",
                "--image-dir",
                f"{root}/image",
                "--retrieval-gt",
                str(out),
            ]
        )
        == 0
    )
    ours = defaultdict(list)
    for r in json.load(open(out / "query_gt.json")):
        ours[r["query_image_id"]].append(r)
    official = _official_rows_by_items(q)
    compared = swapped = 0
    for img, rows in ours.items():
        ref = official.get(_items_key(rows))
        if ref is None:
            continue
        compared += 1
        assert [(r["bbox"], r["style"], r["cls"]) for r in rows] == [
            (r["bbox"], r["style"], r["cls"]) for r in ref
        ], img
        raw = json.load(open(os.path.join(root, "annos", f"{img:06d}.json")))
        swapped += [k for k in raw if k.startswith("item")] == ["item2", "item1"]
    assert compared == 57 and swapped == 36  # every sample; 36 list item2 first


@pytest.mark.parametrize("stem", ["000001", "000010", "000024"])
def test_zero_overlap_box_goes_to_the_first_listed_item_on_both_routes(stem, tmp_path):
    """
    A box overlapping nothing in a sample image whose file lists item2 first: the official
    script's argmax over a row of zeros takes the image's first query-file row, i.e. item2. The
    box carries the class of item2 when item2 is paired (it then represents item2, a hit at rank
    1), else item1's class (item2 is style 0: the box is lost and item1 is a miss).
    """
    from deepfashion2.data import load_deepfashion2
    from deepfashion2.evaluation import GroundTruth

    q, g = official_files()
    root = _sample_split(tmp_path)
    dicts = load_deepfashion2(f"{root}/annos", f"{root}/image", use_cache=False)
    d = next(d for d in dicts if d["image_id"] == int(stem))
    first, second = d["annotations"]
    assert (first["item_id"], second["item_id"]) == (2, 1)  # the file's key order
    paired = first if first["style"] > 0 else second
    # one shop image holding the paired garment, so that a correct result exists on both routes
    shop_box = [10.0, 10.0, 200.0, 300.0]
    shop = {
        "file_name": "shop.jpg", "image_id": 999999, "height": 400, "width": 400,
        "source": "shop", "pair_id": d["pair_id"],
        "annotations": [dict(paired, bbox=shop_box, item_id=1)],
    }  # fmt: skip
    entry = {
        "query_image_id": int(stem),
        "query_bbox": [5000.0, 5000.0, 5100.0, 5100.0],  # overlaps no item
        "query_cls": paired["category_id"] + 1,
        "query_score": 0.9,
        "gallery_image_id": [999999] * 20,
        "gallery_bbox": [shop_box] * 20,
    }
    sub = Submission.from_json([entry], "sub")
    split_route = RetrievalGroundTruth.from_groundtruth(GroundTruth.from_dicts([d, shop]))
    ref = _official_rows_by_items(q)[
        (d["pair_id"], frozenset((tuple(a["bbox"]), a["category_id"] + 1) for a in (first, second)))
    ]
    gallery = [{"gallery_image_id": 999999, "style": paired["style"], "pair_id": d["pair_id"],
                "bbox": shop_box}]  # fmt: skip
    file_route = RetrievalGroundTruth.from_official(
        [dict(r, query_image_id=int(stem)) for r in ref], gallery
    )
    expected = 1.0 if paired is first else 0.0  # the official script's count / 1 query
    for rgt in (split_route, file_route):
        assert rgt.num_queries == (first["style"] > 0) + (second["style"] > 0)
        res = score_submission(sub, rgt)
        assert res["top1"] * res["num_queries"] == expected
        assert res["num_represented"] == expected
