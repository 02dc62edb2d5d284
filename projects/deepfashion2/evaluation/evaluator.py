"""Detectron2 ``DatasetEvaluator`` for the detection, landmark and segmentation benchmarks."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections import OrderedDict
from typing import Callable

import numpy as np
import orjson
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode, Instances
from detectron2.utils import comm
from pycocotools import mask as mask_util

from .. import landmarks as L
from ..config import ConfigError
from . import tables
from .detections import Detections
from .groundtruth import GroundTruth, ground_truth_of
from .scoring import TASKS, evaluate

logger = logging.getLogger(__name__)


def instances_to_detections(instances: Instances, image_id: int) -> Detections:
    """
    One image's predictions in the official conventions: XYWH boxes, categories 1..13, RLE
    masks, landmarks minus 0.5 (Detectron2 predicts continuous coordinates, the files hold pixel
    indices). Landmarks our head leaves at exactly zero (outside the item's category) stay zero.
    """
    n = len(instances)
    cat = instances.pred_classes.numpy().astype(np.int64) + 1
    out = Detections(
        image_id=np.full(n, image_id, dtype=np.int64),
        category=cat,
        score=instances.scores.numpy().astype(np.float64),
        boxes=BoxMode.convert(
            instances.pred_boxes.tensor.numpy().astype(np.float64),
            BoxMode.XYXY_ABS,
            BoxMode.XYWH_ABS,
        ),
    )
    if instances.has("pred_masks"):
        masks = instances.pred_masks.numpy().astype(np.uint8)
        out.masks = [mask_util.encode(np.asfortranarray(m)) for m in masks]
    if instances.has("pred_keypoints"):
        kp = instances.pred_keypoints.numpy().astype(np.float64).reshape(n, L.NUM_LANDMARKS, 3)
        kp = L.to_pixel_indices(kp, placed=(kp != 0).any(-1))
        out.set_keypoints(kp.reshape(n, 3 * L.NUM_LANDMARKS))
    return out


def _oks_sigmas(given, metadata) -> np.ndarray:
    """The sigmas given (``TEST.KEYPOINT_OKS_SIGMAS``), else the metadata's: 294 positive."""
    sigmas = np.asarray(list(given) or metadata.get("keypoint_oks_sigmas", L.OKS_SIGMAS), float)
    if sigmas.shape != (L.NUM_LANDMARKS,) or not (sigmas > 0).all():
        raise ConfigError(
            "TEST.KEYPOINT_OKS_SIGMAS",
            f"{len(sigmas)} values; DeepFashion2 needs "
            f"{L.NUM_LANDMARKS} positive sigmas, one per landmark (or none: the official ones)",
        )
    return sigmas


def gather_on_main(items: list, distributed: bool) -> list | None:
    """Every process's items concatenated on the main process; None on the others."""
    if not distributed:
        return items
    comm.synchronize()
    items = list(itertools.chain(*comm.gather(items, dst=0)))
    return items if comm.is_main_process() else None


class DeepFashion2Evaluator(DatasetEvaluator):
    """
    Scores boxes (``bbox``), masks (``segm``) and landmarks (``keypoints``: visible + occluded,
    ``keypoints_vis``: visible only) of a DeepFashion2 split: AP, AP50, AP75 overall and on the 12
    attribute subsets (keys ``AP/occlusion:heavy``, ...), plus per-category AP. Results are on
    Detectron2's 0-100 scale; empty subsets are NaN. With ``output_dir``, writes the predictions
    in the official result formats and the tables (Markdown + JSON).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        tasks: tuple[str, ...] | None = None,
        distributed: bool = True,
        load_dicts: Callable[[], list[dict]] | None = None,
        load_gt: Callable[[], GroundTruth | None] | None = None,
        kpt_oks_sigmas=(),
    ):
        """
        ``load_gt``: the split's ground truth (``split_ground_truth``: built once per process and
        shared), or None for a split without annotations; by default made from ``load_dicts()``
        (default ``DatasetCatalog.get(dataset_name)``). ``kpt_oks_sigmas``: the landmarks' OKS
        sigmas, as ``COCOEvaluator`` takes them (``TEST.KEYPOINT_OKS_SIGMAS``); empty: the
        dataset's metadata, the official 294.
        """
        self._dataset_name = dataset_name
        self._sigmas = _oks_sigmas(kpt_oks_sigmas, MetadataCatalog.get(dataset_name))
        load_dicts = load_dicts or functools.partial(DatasetCatalog.get, dataset_name)
        self._load_gt = load_gt or functools.partial(ground_truth_of, load_dicts)
        self._output_dir = output_dir
        self._tasks = tasks
        self._distributed = distributed
        for t in tasks or ():
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; expected some of {TASKS}")
        self._metadata = MetadataCatalog.get(dataset_name)
        self.reset()

    def reset(self):
        self._parts: list[Detections] = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "instances" in out:
                instances = out["instances"].to(torch.device("cpu"))
                self._parts.append(instances_to_detections(instances, inp["image_id"]))

    def evaluate(self):
        parts = gather_on_main(self._parts, self._distributed)
        if parts is None:
            return {}
        if not parts:
            logger.warning(f"[DeepFashion2Evaluator] no predictions on {self._dataset_name}.")
            return {}
        dets = Detections.concat(parts)
        tasks = [t for t in (self._tasks or TASKS) if t in dets.tasks]
        if self._output_dir:
            self._write_results(dets, tasks)
        gt = self._load_gt()
        if gt is None:
            logger.info(f"{self._dataset_name} has no annotations: result files written only.")
            return {}
        start = time.perf_counter()
        results = evaluate(gt, {t: dets for t in tasks}, sigmas=self._sigmas)
        logger.info(
            f"Evaluated {len(dets)} detections on {self._dataset_name} ({', '.join(tasks)}) "
            f"in {time.perf_counter() - start:.1f} s.\n" + tables.markdown_tables(results, 1.0)
        )
        results = tables.to_detectron2(results)
        if self._output_dir:
            tables.save(results, self._output_dir)
        return OrderedDict(results)

    def _write_results(self, dets: Detections, tasks: list[str]) -> None:
        os.makedirs(self._output_dir, exist_ok=True)
        for task in ("bbox", "segm", "keypoints"):
            if task in tasks:
                path = os.path.join(self._output_dir, f"deepfashion2_results_{task}.json")
                with open(path, "wb") as f:
                    f.write(orjson.dumps(dets.to_results(task)))
