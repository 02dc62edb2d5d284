"""
Noisy predictions made from a ground truth, in the official result formats: for tests and
benchmarks of the evaluators (the scores are known to be neither perfect nor zero).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

from deepfashion2 import landmarks as L
from deepfashion2.evaluation import GroundTruth


def simulate_results(
    gt: GroundTruth,
    seed: int = 0,
    *,
    miss: float = 0.1,
    duplicate: float = 0.3,
    wrong_category: float = 0.05,
    false_positives_per_image: float = 0.3,
    jitter: float = 0.05,
) -> dict[str, list[dict]]:
    """
    ``{"bbox": [...], "segm": [...], "keypoints": [...]}``: the same detections in the three
    formats. Each item is missed with probability ``miss``, else detected once (plus a duplicate
    with probability ``duplicate``), with box, polygon and landmark noise of ``jitter`` x its size;
    ``false_positives_per_image`` random boxes per image on average.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {"bbox": [], "segm": [], "keypoints": []}

    def add(k, cat, box, polys, lms, score):
        img = int(gt.image_ids[k])
        h, w = int(gt.heights[k]), int(gt.widths[k])
        rle = mask_util.merge(mask_util.frPyObjects(polys, h, w))
        full = np.zeros((L.NUM_LANDMARKS, 3))
        full[L.CATEGORIES[cat - 1].landmark_slice] = lms
        base = {"image_id": img, "category_id": cat, "score": score}
        out["bbox"].append({**base, "bbox": [float(v) for v in box]})
        rle_json = {"size": rle["size"], "counts": rle["counts"].decode()}
        out["segm"].append({**base, "segmentation": rle_json})
        out["keypoints"].append({**base, "keypoints": full.reshape(-1).tolist()})

    for j in range(gt.num_items):
        if rng.random() < miss:
            continue
        k, box = int(gt.image[j]), gt.boxes[j]
        for _ in range(1 + int(rng.random() < duplicate)):
            size = np.array([box[2], box[3]])
            shift = rng.normal(0, jitter, 2) * size
            stretch = np.exp(rng.normal(0, jitter, 2))
            centre = box[:2] + size / 2
            new_size = size * stretch
            new_box = np.r_[centre + shift - new_size / 2, new_size]
            polys = []
            for p in gt.polygons[j]:
                xy = np.asarray(p).reshape(-1, 2)
                xy = (xy - centre) * stretch + centre + shift
                polys.append(xy.reshape(-1).tolist())
            cat = int(gt.category[j])
            if rng.random() < wrong_category:
                cat = int(rng.integers(1, L.NUM_CATEGORIES + 1))
            lms = np.zeros((L.CATEGORIES[cat - 1].num_landmarks, 3))
            if cat == gt.category[j]:
                g = gt.landmarks[gt.lm_ptr[j] : gt.lm_ptr[j + 1]]
                lms[:, :2] = (g[:, :2] - centre) * stretch + centre + shift
                lms[:, :2] += rng.normal(0, jitter, (len(g), 2)) * np.sqrt(size.prod()) / 2
            else:
                lms[:, :2] = new_box[:2] + rng.random((len(lms), 2)) * new_size
            lms[:, 2] = rng.random(len(lms))
            add(k, cat, new_box, polys, lms, float(rng.uniform(0.05, 1.0)))
    n_fp = rng.poisson(false_positives_per_image * len(gt.image_ids))
    for k in rng.integers(0, max(len(gt.image_ids), 1), n_fp if len(gt.image_ids) else 0):
        h, w = float(gt.heights[k]), float(gt.widths[k])
        bw, bh = rng.uniform(0.1, 0.6) * w, rng.uniform(0.1, 0.6) * h
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        cat = int(rng.integers(1, L.NUM_CATEGORIES + 1))
        lms = np.zeros((L.CATEGORIES[cat - 1].num_landmarks, 3))
        lms[:, :2] = [x, y] + rng.random((len(lms), 2)) * [bw, bh]
        poly = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        add(int(k), cat, (x, y, bw, bh), poly, lms, float(rng.uniform(0.0, 0.6)))
    return out
