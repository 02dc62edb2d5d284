"""Detectron2 ``DatasetEvaluator`` for consumer-to-shop retrieval."""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from typing import Callable

import numpy as np
import orjson
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, Instances
from torch import nn

from ..config import RETRIEVAL_DEFAULTS
from . import tables
from .evaluator import gather_on_main
from .groundtruth import GroundTruth, ground_truth_of
from .retrieval import ItemSet, RetrievalGroundTruth, rank, score_submission, topk_percent

logger = logging.getLogger(__name__)


class RetrievalEvaluator(DatasetEvaluator):
    """
    Consumer-to-shop retrieval on a DeepFashion2 split: detections (with ``pred_embeddings``) in
    consumer images are the queries, detections in shop images the gallery; ranked by cosine
    similarity and scored with the official protocol (:mod:`.retrieval`). Returns
    ``{"retrieval": {"top1": ..., "top20": ...}}`` on 0-100 (``retrieval_gt_boxes`` with
    ``gt_boxes=True``, for outputs of :class:`GroundTruthBoxInference`). With ``output_dir``,
    writes the submission in the official JSON layout.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        max_per_image: int = RETRIEVAL_DEFAULTS["MAX_PER_IMAGE"],
        gallery_per_image: int = RETRIEVAL_DEFAULTS["GALLERY_PER_IMAGE"],
        min_score: float = RETRIEVAL_DEFAULTS["MIN_SCORE"],
        same_category: bool = RETRIEVAL_DEFAULTS["SAME_CATEGORY"],
        index: str = RETRIEVAL_DEFAULTS["INDEX"],
        exact_max: int = RETRIEVAL_DEFAULTS["EXACT_MAX_GALLERY"],
        gt_boxes: bool = False,
        distributed: bool = True,
        load_dicts: Callable[[], list[dict]] | None = None,
        load_gt: Callable[[], GroundTruth | None] | None = None,
    ):
        """``load_gt`` / ``load_dicts``: the split's ground truth, as :class:`DeepFashion2Evaluator`
        takes them."""
        self._name = dataset_name
        load_dicts = load_dicts or functools.partial(DatasetCatalog.get, dataset_name)
        self._load_gt = load_gt or functools.partial(ground_truth_of, load_dicts)
        self._output_dir = output_dir
        self._max_per_image, self._min_score = max_per_image, min_score
        self._gallery_per_image = gallery_per_image
        self._rank_args = {"same_category": same_category, "index": index, "exact_max": exact_max}
        self._gt_boxes = gt_boxes
        self._distributed = distributed
        self._key = "retrieval_gt_boxes" if gt_boxes else "retrieval"
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None, **kwargs):
        r = cfg.DEEPFASHION2.RETRIEVAL
        return cls(
            dataset_name,
            output_dir,
            max_per_image=r.MAX_PER_IMAGE,
            gallery_per_image=r.GALLERY_PER_IMAGE,
            min_score=r.MIN_SCORE,
            same_category=r.SAME_CATEGORY,
            index=r.INDEX,
            exact_max=r.EXACT_MAX_GALLERY,
            **kwargs,
        )

    def reset(self):
        self._items: list[tuple] = []
        self.submission = None  # the ranking of the last evaluate(), for callers that draw it

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to(torch.device("cpu"))
            if not inst.has("pred_embeddings"):
                raise ValueError(
                    "RetrievalEvaluator needs 'pred_embeddings': use MatchROIHeads with "
                    "MODEL.MATCH_ON=True"
                )
            if self._gt_boxes:
                inst.scores = torch.ones(len(inst))
                found, style = best_detections(inst, 0.0, len(inst)), inst.gt_style.numpy()
            else:
                found, style = best_detections(inst, self._min_score, self._max_per_image), None
            self._items.append((int(inp["image_id"]), *found, style))

    def evaluate(self):
        items = gather_on_main(self._items, self._distributed)
        if items is None:
            return {}
        gt = self._load_gt()
        if gt is None:  # e.g. the test split: no sources
            logger.info(f"{self._name} has no annotations: retrieval not evaluated.")
            return {}
        shop = dict(zip(gt.image_ids.tolist(), (gt.sources == 1).tolist()))
        q_parts, g_parts = [], []
        for img, boxes, cls, scores, emb, style in items:
            n = len(boxes)
            part = (np.full(n, img), boxes, cls, scores, emb)
            if shop.get(img, False):
                # a shop photo shows few garments: more boxes only add near-duplicates and
                # background to the gallery (detections are sorted by score)
                n_g = n if style is not None else min(n, self._gallery_per_image)
                g_parts.append(tuple(x[:n_g] for x in part))
            elif style is None:
                q_parts.append(part)
            else:  # ground-truth boxes: only the paired consumer items are queries
                q_parts.append(tuple(x[style > 0] for x in part))
        queries, gallery = _item_set(q_parts), _item_set(g_parts)
        sub = self.submission = rank(queries, gallery, **self._rank_args)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, f"{self._key}_submission.json")
            with open(path, "wb") as f:
                f.write(orjson.dumps(sub.to_json()))
        scores = score_submission(sub, RetrievalGroundTruth.from_groundtruth(gt))
        res = {self._key: topk_percent(scores)}
        logger.info(
            f"Retrieval on {self._name} ({'ground-truth' if self._gt_boxes else 'detected'} "
            f"boxes): {len(queries.image)} query boxes, {len(gallery.image)} gallery items, "
            f"{scores['num_represented']}/{scores['num_queries']} paired items represented.\n"
            + tables.markdown_tables(res)
        )
        if self._output_dir:
            tables.save(res, self._output_dir, prefix=self._key)
        return OrderedDict(res)


def best_detections(inst: Instances, min_score: float, limit: int) -> tuple[np.ndarray, ...]:
    """
    The ``limit`` best-scoring detections with score >= ``min_score`` (ties in detection order):
    boxes (n, 4) XYXY, categories (n,) 1..13, scores (n,), embeddings (n, E). What a query photo
    contributes; a shop photo contributes the first ``GALLERY_PER_IMAGE`` of them.
    """
    keep = torch.nonzero(inst.scores >= min_score).squeeze(1)
    keep = keep[torch.argsort(inst.scores[keep], descending=True, stable=True)][:limit]
    return (
        inst.pred_boxes.tensor[keep].numpy().astype(np.float64),
        inst.pred_classes[keep].numpy().astype(np.int64) + 1,
        inst.scores[keep].numpy().astype(np.float64),
        inst.pred_embeddings[keep].numpy().astype(np.float32),
    )


def _item_set(parts: list[tuple]) -> ItemSet:
    if not parts:
        return ItemSet(
            np.zeros(0, np.int64),
            np.zeros((0, 4)),
            np.zeros(0, np.int64),
            np.zeros(0),
            np.zeros((0, 1), np.float32),
        )
    return ItemSet(*(np.concatenate([p[i] for p in parts]) for i in range(5)))


class GroundTruthBoxInference(nn.Module):
    """
    Wraps a trained R-CNN so that ``inference_on_dataset`` runs its heads on the annotated boxes
    of each image (Detectron2's ``detected_instances`` path) instead of detected ones: the
    retrieval variant that isolates the embedding from the detector. Adds ``gt_style``.
    """

    def __init__(self, model: nn.Module, dataset_name: str, gt: GroundTruth | None = None):
        """``gt``: the split's ground truth (default: from ``DatasetCatalog.get(dataset_name)``)."""
        super().__init__()
        self.model = model.module if hasattr(model, "module") else model
        if gt is None:
            gt = GroundTruth.from_dicts(DatasetCatalog.get(dataset_name))
        bounds = np.searchsorted(gt.image, np.arange(len(gt.image_ids) + 1))  # items by image
        boxes = torch.as_tensor(gt.boxes_xyxy, dtype=torch.float32)
        classes = torch.as_tensor(gt.category - 1, dtype=torch.int64)
        style = torch.as_tensor(gt.style, dtype=torch.int64)
        self._gt = {
            image_id: (boxes[a:b], classes[a:b], style[a:b])
            for image_id, a, b in zip(gt.image_ids.tolist(), bounds[:-1], bounds[1:])
        }

    def forward(self, inputs: list[dict]) -> list[dict]:
        given = []
        for x in inputs:
            boxes, classes, style = self._gt[x["image_id"]]
            h, w = x["image"].shape[-2:]
            scale = torch.tensor([w / x["width"], h / x["height"]] * 2)
            inst = Instances((h, w), pred_boxes=Boxes(boxes * scale), pred_classes=classes)
            inst.gt_style = style
            given.append(inst.to(self.model.device))
        return self.model.inference(inputs, detected_instances=given)


__all__ = ["RetrievalEvaluator", "GroundTruthBoxInference", "best_detections"]
