"""
The straightforward route, for cross-checking the scoring core: one pycocotools ``COCOeval`` per
task and subset on the COCO-style export, with the ground truth outside the subset ignored the way
COCO ignores ground truth outside an area range. Slow (it recomputes every IoU / OKS per subset) but
independent of our matching code.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from deepfashion2 import landmarks as L


class _SubsetCOCOeval(COCOeval):
    def __init__(self, coco_gt, coco_dt, iou_type, ignored_ann_ids: set[int]):
        super().__init__(coco_gt, coco_dt, iou_type)
        self._ignored_ann_ids = ignored_ann_ids

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                if g["id"] in self._ignored_ann_ids:
                    g["ignore"] = 1


def coco_gt_for_task(coco_dict: dict, task: str) -> COCO:
    """A pycocotools COCO of the export; for ``keypoints_vis`` occluded landmarks are unlabelled."""
    d = coco_dict
    if task == "keypoints_vis":
        d = copy.deepcopy(coco_dict)
        for a in d["annotations"]:
            kp = np.array(a["keypoints"], dtype=np.float64).reshape(-1, 3)
            kp[kp[:, 2] != 2] = 0
            a["keypoints"] = kp.reshape(-1).tolist()
            a["num_keypoints"] = int((kp[:, 2] == 2).sum())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = d
        coco.createIndex()
    return coco


def reference_ap(coco_gt: COCO, results: list[dict], task: str, ignored_ann_ids=()) -> tuple:
    """(AP, AP50, AP75) on 0-1 as pycocotools computes them; -1 where no ground truth counts."""
    iou_type = "keypoints" if task.startswith("keypoints") else task
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds fields
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
            coco_dt.createIndex()
        ev = _SubsetCOCOeval(coco_gt, coco_dt, iou_type, set(ignored_ann_ids))
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = L.OKS_SIGMAS.copy()
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, -1]  # area "all", largest maxDets

    def mean(x):
        v = x[x > -1]
        return float(np.mean(v)) if v.size else -1.0

    return mean(p), mean(p[0]), mean(p[5])
