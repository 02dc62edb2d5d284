import json
import os

import numpy as np
import pytest
from detectron2.data.datasets import load_coco_json

from deepfashion2 import landmarks as L
from deepfashion2.data import load_deepfashion2
from deepfashion2.data.coco_export import store_to_coco
from deepfashion2.data.loader import load_split_store


@pytest.fixture(scope="module")
def exported(synthetic_split):
    store = load_split_store(
        os.path.join(synthetic_split, "annos"),
        os.path.join(synthetic_split, "image"),
        use_cache=False,
    )
    return store, store_to_coco(store)


def test_official_converter_conventions(exported, synthetic_split):
    store, coco = exported
    assert [c["id"] for c in coco["categories"]] == list(range(1, 14))
    assert coco["categories"][10]["name"] == "long_sleeved_dress"
    assert coco["categories"][0]["keypoints"] == [str(i) for i in range(1, 295)]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, store.num_items + 1))
    for a in coco["annotations"]:
        raw = json.load(open(os.path.join(synthetic_split, "annos", f"{a['image_id']:06d}.json")))
        item = next(
            v
            for k, v in raw.items()
            if k.startswith("item")
            and v["bounding_box"][:2] == a["bbox"][:2]
            and v["category_id"] == a["category_id"]
        )
        x1, y1, x2, y2 = item["bounding_box"]
        assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1] and a["area"] == (x2 - x1) * (y2 - y1)
        kp = np.array(a["keypoints"]).reshape(294, 3)
        cat = L.CATEGORY_BY_ID[a["category_id"]]
        assert kp[cat.landmark_slice].reshape(-1).tolist() == item["landmarks"]  # no shift
        assert not np.delete(kp, np.arange(cat.start, cat.start + cat.num_landmarks), 0).any()
        assert a["num_keypoints"] == sum(v > 0 for v in item["landmarks"][2::3])
        assert a["style"] == item["style"] and a["pair_id"] == raw["pair_id"]
        assert a["segmentation"] == item["segmentation"] and a["iscrowd"] == 0


def test_same_layout_as_the_official_converter_file(exported, samples):
    _, ours = exported
    ref = json.load(open(os.path.join(samples, "coco", "mmpose_test_deepfashion2.json")))
    assert set(ref) == set(ours)
    assert set(ref["images"][0]) <= set(ours["images"][0])  # we add source and pair_id
    assert set(ref["annotations"][0]) == set(ours["annotations"][0])
    assert set(ref["categories"][0]) == set(ours["categories"][0])
    for a in ref["annotations"]:  # the reference's own conventions, which ours follow
        assert a["area"] == a["bbox"][2] * a["bbox"][3] and len(a["keypoints"]) == 882
        assert a["num_keypoints"] == sum(v > 0 for v in a["keypoints"][2::3])


def test_detectron2_reads_the_export_like_our_loader(exported, synthetic_split, tmp_path):
    """The exported file through Detectron2's own COCO loader gives the same boxes and (+0.5
    shifted) keypoints as our loader's compact landmarks expanded to 294."""
    _, coco = exported
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    theirs = load_coco_json(
        str(path),
        os.path.join(synthetic_split, "image"),
        "df2_export_check",
        extra_annotation_keys=["style", "pair_id"],
    )
    ours = load_deepfashion2(
        os.path.join(synthetic_split, "annos"),
        os.path.join(synthetic_split, "image"),
        use_cache=False,
    )
    assert len(theirs) == len(ours)
    for t, o in zip(theirs, ours):
        assert t["image_id"] == o["image_id"]
        for ta, oa in zip(t["annotations"], o["annotations"]):
            assert ta["category_id"] == oa["category_id"] and ta["style"] == oa["style"]
            x, y, w, h = ta["bbox"]
            assert [x, y, x + w, y + h] == oa["bbox"]
            full = L.expand_landmarks(oa["category_id"], oa["landmarks"])
            kp = np.array(ta["keypoints"]).reshape(294, 3)
            lab = full[:, 2] > 0
            assert np.allclose(kp[lab], full[lab]) and (kp[:, 2] == full[:, 2]).all()
