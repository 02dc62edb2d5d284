"""
`make demo`, shortened: the same path (data, train, the four benchmarks once, chance, report,
figures) in about a minute, run as a user would, from another working directory.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deepfashion2.apps.demo.chance import above_chance, not_above_chance
from deepfashion2.apps.demo.report import summary

SHORT = [
    "SOLVER.MAX_ITER", "4",
    "SOLVER.IMS_PER_BATCH", "4",  # 2 per training process (pairs need 2)
    "SOLVER.WARMUP_ITERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "30",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.mark.slow
def test_short_demo_from_another_directory(tmp_path, synthetic_split):
    # a real-format folder with one malformed item: the config's LENIENT reaches the demo's data
    data = tmp_path / "df2"
    for split in ("train", "validation"):
        shutil.copytree(synthetic_split, data / split)
    bad = data / "train" / "annos" / "000005.json"
    obj = json.loads(bad.read_text())
    obj["item1"]["occlusion"] = 7
    bad.write_text(json.dumps(obj))
    out = tmp_path / "demo"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    code = (
        "import sys; from deepfashion2.apps.demo import run_demo; "
        "run_demo(sys.argv[1], sys.argv[2], opts=sys.argv[3:], num_drawings=2)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(out), str(data), "DEEPFASHION2.LENIENT", "True", *SHORT],
        cwd=elsewhere, capture_output=True, text=True, timeout=900,
        env={**os.environ, "DF2_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "skipped 1" in log  # the bad item, and only it
    # evaluated once: one inference on detected boxes, one on ground-truth boxes
    assert log.count("Start inference on") == 2
    saved = json.loads((out / "metrics.json").read_text())
    # trained as `make demo` trains on CPU: two processes, the log of the first in log.txt
    assert saved["train_processes"] == 2
    assert "iter: 3 " in log and (out / "log.txt.rank1").exists()
    for task in ("bbox", "segm", "keypoints", "keypoints_vis", "retrieval", "retrieval_gt_boxes"):
        assert task in saved and task in saved["chance"] and task in saved["above_chance"]
    assert set(saved["above_chance"]["retrieval"]) == {f"top{k}" for k in (1, 5, 10, 15, 20)}
    assert set(saved["above_chance"]["bbox"]) == {"AP", "AP50", "AP75"}
    assert "AP/occlusion:heavy" in saved["bbox"] and "top20/occlusion:heavy" in saved["retrieval"]
    tables = json.loads((out / "tables.json").read_text())
    assert set(tables) == {
        "Clothes detection",
        "Landmark estimation",
        "Clothes segmentation",
        "Consumer-to-shop clothes retrieval",
    }
    assert len(tables["Clothes detection"]["AP"]) == 13
    assert len(tables["Consumer-to-shop clothes retrieval"]) == 10  # top-k x {detected, gt}
    for f in ("subset_ap.png", "model_final.pth", "config.yaml", "training_metrics.json"):
        assert os.path.getsize(out / f) > 0, f
    assert len(saved["figures"]["predictions"]) == 2
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
    assert "above chance" in run.stdout  # the verdict, said plainly
    assert not (elsewhere / "output").exists()  # nothing written where it was started


def test_above_chance_is_checked_for_every_metric_and_k():
    chance = {
        "bbox": {"AP": 0.0, "AP50": 0.1, "AP75": 0.0},
        "retrieval": {"top1": 2.0, "top5": 9.0, "top10": 17.0, "top15": 26.0, "top20": 36.0},
    }
    results = {
        "bbox": {"AP": 30.0, "AP50": 50.0, "AP75": 0.0, "AP/occlusion:heavy": 1.0},
        # top-1 above chance, top-20 below: must be flagged
        "retrieval": {"top1": 7.5, "top5": 12.0, "top10": 18.0, "top15": 27.0, "top20": 25.0},
        "segm": {"AP": 5.0},  # no chance level given: not compared
    }
    above = above_chance(results, chance)
    assert above == {
        "bbox": {"AP": True, "AP50": True, "AP75": False},
        "retrieval": {"top1": True, "top5": True, "top10": True, "top15": True, "top20": False},
    }
    assert not_above_chance(above) == ["bbox AP75", "retrieval top20"]
    text = summary(results, chance, above)
    assert "NOT above chance: bbox AP75, retrieval top20" in text
    ok = above_chance({"bbox": {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}}, chance)
    assert "Every benchmark is above chance" in summary({}, chance, ok)
    assert above_chance({"bbox": {"AP": float("nan")}}, chance) == {"bbox": {"AP": False}}


def test_real_dataset_folder_is_registered_by_split(tmp_path, synthetic_split):
    from detectron2.data import DatasetCatalog

    from deepfashion2.apps.demo.run import register
    from deepfashion2.errors import FileError

    root = tmp_path / "df2"
    shutil.copytree(synthetic_split, root / "train")
    with pytest.raises(FileError, match="df2: no validation split") as e:
        register(str(root))
    assert "annos/ and image/" in e.value.hint
    # a folder of annotated photos, no splits: evaluated on, the model trained on the synthetic set
    train, photos = register(synthetic_split)
    assert (train, photos) == ("deepfashion2_mini_train", "deepfashion2_demo_photos")
    assert len(DatasetCatalog.get(photos)) == 24
    shutil.copytree(synthetic_split, root / "validation")
    train, val = register(str(root))
    assert (train, val) == ("deepfashion2_demo_train", "deepfashion2_demo_validation")
    assert len(DatasetCatalog.get(val)) == 24


def _item(cat, style, box):
    from deepfashion2 import landmarks as L

    k = L.CATEGORY_BY_ID[cat].num_landmarks
    x1, y1, x2, y2 = box
    return {
        "bbox": box, "category_id": cat - 1, "style": style, "landmarks": np.zeros((k, 3)),
        "segmentation": [[x1, y1, x2, y1, x2, y2]], "scale": 1, "occlusion": 1, "zoom_in": 1,
        "viewpoint": 2,
    }  # fmt: skip


def test_retrieval_chance_known_answer():
    """
    One paired consumer top (pair 1, style 1). Shop items (8): its own garment in two shop photos,
    tops of other garments, trousers and a skirt. A random order of the 8 finds one of the 2
    correct ones within k with probability 1 - C(6, k) / C(8, k); within the query's category
    (4 tops) 1 - C(2, k) / C(4, k).
    """
    from deepfashion2.apps.demo.chance import retrieval_chance
    from deepfashion2.evaluation import GroundTruth

    def image(i, source, pair, items):
        return {"file_name": f"{i}.jpg", "image_id": i, "height": 100, "width": 100,
                "source": source, "pair_id": pair, "annotations": items}  # fmt: skip

    box = [10, 10, 50, 50]
    dicts = [
        image(1, "user", 1, [_item(1, 1, box), _item(8, 0, box)]),
        image(2, "shop", 1, [_item(1, 1, box), _item(8, 0, box)]),
        image(3, "shop", 1, [_item(1, 1, box)]),
        image(4, "shop", 2, [_item(1, 1, box), _item(8, 2, box)]),
        image(5, "shop", 3, [_item(9, 1, box), _item(8, 2, box)]),
        image(6, "shop", 4, [_item(1, 1, box)]),
    ]
    gt = GroundTruth.from_dicts(dicts)
    whole = retrieval_chance(gt)
    assert whole["top1"] == pytest.approx(2 / 8)
    assert whole["top5"] == pytest.approx(1 - 6 / 56)  # C(6, 5) = 6, C(8, 5) = 56
    assert whole["top10"] == whole["top20"] == 1.0  # k >= 8: always found
    within = retrieval_chance(gt, within_category=True)
    assert within["top1"] == pytest.approx(2 / 4) and within["top5"] == 1.0


def test_drawings_with_and_without_detections(tmp_path):
    """A model that finds nothing still gets its (empty) drawing; items get their own colours."""
    import torch
    from detectron2.structures import Boxes, Instances

    from deepfashion2.utils.visualizer import draw_prediction

    image = np.full((100, 120, 3), 128, np.uint8)
    empty = Instances((100, 120), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.long),
                      pred_keypoints=torch.zeros(0, 294, 3))  # fmt: skip
    draw_prediction(image, empty, 2.0).save(str(tmp_path / "empty.png"))
    boxes = Boxes(torch.tensor([[5.0, 5, 50, 90], [60, 5, 110, 90]]))
    two = Instances((100, 120), pred_boxes=boxes, scores=torch.tensor([0.9, 0.8]),
                    pred_classes=torch.tensor([0, 7]))  # fmt: skip
    drawn = draw_prediction(image, two, 1.0).get_image()
    left, right = drawn[5:90, 5].astype(int), drawn[5:90, 60].astype(int)  # the boxes' left edges
    assert (np.abs(left - 128).sum(1) > 30).any() and (np.abs(right - 128).sum(1) > 30).any()
    assert not np.array_equal(np.median(left, 0), np.median(right, 0))  # two colours


def test_labels_of_overlapping_garments_do_not_overlap():
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from deepfashion2.data.builtin import deepfashion2_metadata
    from deepfashion2.utils.visualizer import DeepFashion2Visualizer

    meta = MetadataCatalog.get("deepfashion2_test_labels").set(**deepfashion2_metadata())
    boxes = Boxes(torch.tensor([[10.0, 10, 90, 90], [12.0, 12, 92, 92], [11.0, 10, 95, 91]]))
    inst = Instances((100, 120), pred_boxes=boxes, scores=torch.tensor([0.9, 0.8, 0.7]),
                     pred_classes=torch.tensor([0, 1, 7]))  # fmt: skip
    vis = DeepFashion2Visualizer(np.zeros((100, 120, 3), np.uint8), meta)
    vis.draw_instance_predictions(inst)
    labels = vis.placed_labels
    assert len(labels) == 3
    for i, (x, y, w, h) in enumerate(labels):
        for px, py, pw, ph in labels[:i]:
            assert not (x < px + pw and px < x + w and y < py + ph and py < y + h)
