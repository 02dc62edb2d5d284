"""`make demo`, shortened: the same path (generate, train, four benchmarks, figures) in seconds."""

import json
import os

from deepfashion2.engine.demo import run_demo

SHORT = [
    "SOLVER.MAX_ITER", "4",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "30",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


def test_short_demo_leaves_every_output(tmp_path):
    out = str(tmp_path / "demo")
    metrics = run_demo(out, opts=SHORT, num_drawings=2)
    saved = json.load(open(os.path.join(out, "metrics.json")))
    for task in ("bbox", "segm", "keypoints", "keypoints_vis", "retrieval"):
        assert task in saved and task in saved["chance"] and task in saved["above_chance"]
    assert "AP/occlusion:heavy" in saved["bbox"] and "top20" in saved["retrieval"]
    assert 0 <= saved["chance"]["retrieval"]["top1"] <= saved["chance"]["retrieval"]["top20"] <= 100
    assert saved["chance"]["bbox"]["AP"] < 1.0  # random boxes score (close to) nothing
    tables = json.load(open(os.path.join(out, "tables.json")))
    assert set(tables) == {
        "Clothes detection",
        "Landmark estimation",
        "Clothes segmentation",
        "Consumer-to-shop clothes retrieval",
    }
    assert len(tables["Clothes detection"]["AP"]) == 13
    md = open(os.path.join(out, "tables.md")).read()
    assert md.count("###") == 4
    for f in ("subset_ap.png", "model_final.pth", "log.txt", "config.yaml"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    assert len(metrics["figures"]["predictions"]) == 2
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


def test_real_dataset_folder_is_registered_by_split(tmp_path, synthetic_split):
    import shutil

    import pytest
    from detectron2.data import DatasetCatalog

    from deepfashion2.engine.demo import _register

    root = tmp_path / "df2"
    shutil.copytree(synthetic_split, root / "train")
    with pytest.raises(SystemExit, match="validation/annos not found"):
        _register(str(root))
    shutil.copytree(synthetic_split, root / "validation")
    train, val = _register(str(root))
    assert (train, val) == ("deepfashion2_demo_train", "deepfashion2_demo_validation")
    assert len(DatasetCatalog.get(val)) == 24
