"""The Detectron2 adapters: Instances -> official results, conventions end to end."""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_util

from deepfashion2 import landmarks as L
from deepfashion2.data import load_deepfashion2, register_deepfashion2
from deepfashion2.evaluation import DeepFashion2Evaluator, RetrievalEvaluator


def as_predictions(d: dict) -> Instances:
    """The ground truth of one dataset dict as a model would output it (continuous coords)."""
    annos = d["annotations"]
    h, w = d["height"], d["width"]
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([a["bbox"] for a in annos], dtype=torch.float32))
    inst.scores = torch.linspace(0.9, 0.5, len(annos))
    inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
    masks = []
    for a in annos:
        rle = mask_util.merge(mask_util.frPyObjects([p.tolist() for p in a["segmentation"]], h, w))
        masks.append(torch.from_numpy(mask_util.decode(rle).astype(bool)))
    inst.pred_masks = torch.stack(masks)
    # the loader's landmarks are already continuous (+0.5): exactly what the head predicts
    kp = np.stack([L.expand_landmarks(a["category_id"], a["landmarks"]) for a in annos])
    inst.pred_keypoints = torch.from_numpy(kp.astype(np.float32))
    inst.pred_embeddings = torch.nn.functional.normalize(torch.randn(len(annos), 8), dim=1)
    return inst


@pytest.fixture
def registered(synthetic_split):
    names = {
        "df2_adapter_val": os.path.join(synthetic_split, "annos"),
        "df2_adapter_test": None,  # images only, like the real test split
    }
    for name, annos in names.items():
        register_deepfashion2(name, annos, os.path.join(synthetic_split, "image"))
    yield synthetic_split
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_perfect_model_outputs_score_100_through_the_evaluator(registered, tmp_path):
    dicts = load_deepfashion2(registered + "/annos", registered + "/image")
    ev = DeepFashion2Evaluator("df2_adapter_val", str(tmp_path), distributed=False)
    ev.reset()
    for d in dicts:
        if d["annotations"]:
            ev.process([{"image_id": d["image_id"]}], [{"instances": as_predictions(d)}])
    res = ev.evaluate()
    # the -0.5 on export meets the files' pixel indices: landmarks match exactly (OKS 1)
    for task in ("bbox", "segm", "keypoints", "keypoints_vis"):
        assert res[task]["AP"] == pytest.approx(100.0), task
    entries = json.loads((tmp_path / "deepfashion2_results_keypoints.json").read_text())
    first = dicts[0]["annotations"][0]
    kp = np.array(entries[0]["keypoints"]).reshape(-1, 3)
    own = L.CATEGORIES[first["category_id"]].landmark_slice
    labelled = first["landmarks"][:, 2] > 0
    assert np.allclose(kp[own][labelled, :2], first["landmarks"][labelled, :2] - 0.5)
    outside = np.ones(L.NUM_LANDMARKS, bool)
    outside[own] = False
    assert (kp[outside] == 0).all()  # zeros outside the category stay zeros
    assert (tmp_path / "deepfashion2_tables.md").exists()


def test_images_only_split_writes_results_and_skips_scoring(registered, tmp_path):
    dicts = load_deepfashion2(registered + "/annos", registered + "/image")
    ev = DeepFashion2Evaluator("df2_adapter_test", str(tmp_path), distributed=False)
    rev = RetrievalEvaluator("df2_adapter_test", str(tmp_path), distributed=False)
    for e in (ev, rev):
        e.reset()
        for d in dicts[:3]:
            e.process([{"image_id": d["image_id"]}], [{"instances": as_predictions(d)}])
        assert e.evaluate() == {}
    assert json.loads((tmp_path / "deepfashion2_results_bbox.json").read_text())
