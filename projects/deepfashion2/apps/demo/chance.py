"""
Chance levels of the four benchmarks on a split, to read a model's numbers against: what a
predictor without any knowledge of the images scores.

- detection, segmentation, landmarks: ``per_image`` random boxes per image (uniform position and
  size, uniform category, uniform score), filled-box masks, landmarks uniform in the box; scored
  by the same core (the mean over ``trials`` seeds).
- retrieval: the expected top-k accuracy of a uniformly random ranking of the ground-truth shop
  items (of the whole gallery, or of the query's category only), computed exactly.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

from ... import landmarks as L
from ...evaluation import Detections, GroundTruth
from ...evaluation.scoring import TASKS, evaluate
from ...evaluation.tasks import AP_METRICS, TOPK
from ...utils.arrays import offsets


def random_detections(gt: GroundTruth, per_image: int, rng: np.random.Generator) -> Detections:
    n = len(gt.image_ids) * per_image
    img = np.repeat(np.arange(len(gt.image_ids)), per_image)
    h, w = gt.heights[img].astype(float), gt.widths[img].astype(float)
    bw, bh = rng.uniform(0.05, 1, n) * w, rng.uniform(0.05, 1, n) * h
    x, y = rng.uniform(0, 1, n) * (w - bw), rng.uniform(0, 1, n) * (h - bh)
    cat = rng.integers(1, L.NUM_CATEGORIES + 1, n)
    dets = Detections(gt.image_ids[img], cat, rng.random(n), boxes=np.stack([x, y, bw, bh], 1))
    dets.masks = [
        mask_util.merge(
            mask_util.frPyObjects(
                [[x0, y0, x0 + a, y0, x0 + a, y0 + b, x0, y0 + b]], int(hh), int(ww)
            )
        )
        for x0, y0, a, b, hh, ww in zip(x, y, bw, bh, h, w)
    ]
    counts = L.LANDMARK_COUNT[cat - 1]
    dets.kp_ptr = offsets(counts)
    rows = np.repeat(np.arange(n), counts)
    kp = np.zeros((int(counts.sum()), 3))
    kp[:, 0] = x[rows] + rng.random(len(rows)) * bw[rows]
    kp[:, 1] = y[rows] + rng.random(len(rows)) * bh[rows]
    kp[:, 2] = 1
    dets.keypoints = kp
    return dets


def detection_chance(
    gt: GroundTruth, per_image: int = 10, trials: int = 3, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Overall AP / AP50 / AP75 (0-1) of random predictions, per task."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(trials):
        dets = random_detections(gt, per_image, rng)
        runs.append(evaluate(gt, {t: dets for t in TASKS}))
    return {t: {m: float(np.nanmean([r[t][m] for r in runs])) for m in AP_METRICS} for t in TASKS}


def retrieval_chance(gt: GroundTruth, within_category: bool = False) -> dict[str, float]:
    """Expected top-k (0-1) of a random ranking of the shop items (of the query's category)."""
    from ...evaluation.retrieval import RetrievalGroundTruth

    rgt = RetrievalGroundTruth.from_groundtruth(gt)
    queries = np.flatnonzero(rgt.is_query)
    shop = gt.sources[gt.image] == 1
    pair = gt.pair_ids[gt.image]
    out = {f"top{k}": 0.0 for k in TOPK}
    if not len(queries):
        return {k: float("nan") for k in out}
    for q in queries.tolist():
        in_cat = shop & (gt.category == rgt.q_cls[q]) if within_category else shop
        G = int(in_cat.sum())
        m = int((in_cat & (pair == rgt.q_pair[q]) & (gt.style == rgt.q_style[q])).sum())
        for k in TOPK:
            # P(no correct item among the first k of a random order) = C(G-m, k) / C(G, k)
            miss = np.prod([(G - m - i) / (G - i) for i in range(min(k, G))]) if G else 1.0
            out[f"top{k}"] += (1 - max(miss, 0.0)) / len(queries)
    return out


def chance_levels(gt: GroundTruth) -> dict[str, dict[str, float]]:
    """
    Chance of every benchmark on Detectron2's 0-100 scale: ``bbox``, ``segm``, ``keypoints``,
    ``keypoints_vis`` (random boxes), ``retrieval`` and ``retrieval_gt_boxes`` (a random ranking
    of the whole gallery), ``retrieval_within_category`` (of the query's category only).
    """
    out = {t: {m: 100 * v for m, v in r.items()} for t, r in detection_chance(gt).items()}
    out["retrieval"] = {k: 100 * v for k, v in retrieval_chance(gt).items()}
    out["retrieval_gt_boxes"] = dict(out["retrieval"])
    out["retrieval_within_category"] = {
        k: 100 * v for k, v in retrieval_chance(gt, within_category=True).items()
    }
    return out


def above_chance(results: dict, chance: dict) -> dict[str, dict[str, bool]]:
    """
    For every benchmark and every metric that has a chance level (AP, AP50, AP75; top-1 ... top-20):
    is the result strictly above it. A metric without a result (NaN) is not above chance.
    """
    out = {}
    for task, metrics in results.items():
        ref = chance.get(task)
        if ref:
            out[task] = {m: bool(metrics[m] > ref[m]) for m in ref if m in metrics}
    return out


def not_above_chance(above: dict[str, dict[str, bool]]) -> list[str]:
    """``task metric`` of every comparison that failed, e.g. ``retrieval top20``."""
    return [f"{task} {m}" for task, ms in above.items() for m, ok in ms.items() if not ok]
