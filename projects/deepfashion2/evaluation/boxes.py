"""
Box conventions of the official evaluation, defined once.

The official code converts ``[x1, y1, x2, y2]`` boxes to ``[x, y, w, h]`` by subtraction and scores
them with pycocotools' ``bbIou``, which adds ``x + w`` back. Both steps round in float64, so an IoU
computed on the corners directly can differ in the last bit, and a value at a threshold (0.5 in
retrieval) can fall on the other side. Everything here repeats pycocotools' arithmetic in its order.
"""

from __future__ import annotations

import numpy as np


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) ``[x1, y1, x2, y2]`` -> ``[x1, y1, x2 - x1, y2 - y1]`` (float64)."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def coco_box_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """
    pycocotools' ``bbIou`` for non-crowd ground truth on ``[x, y, w, h]`` boxes, broadcast over the
    leading dimensions: ``(P, 4), (P, 4) -> (P,)`` element-wise, ``(N, 1, 4), (1, M, 4) -> (N, M)``
    for all pairs. Boxes that do not overlap (``w <= 0`` or ``h <= 0``) score exactly 0.
    """
    dt, gt = np.asarray(dt, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    w = np.minimum(dt[..., 2] + dt[..., 0], gt[..., 2] + gt[..., 0]) - np.maximum(
        dt[..., 0], gt[..., 0]
    )
    h = np.minimum(dt[..., 3] + dt[..., 1], gt[..., 3] + gt[..., 1]) - np.maximum(
        dt[..., 1], gt[..., 1]
    )
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    union = dt[..., 2] * dt[..., 3] + gt[..., 2] * gt[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(overlap, inter / union, 0.0)


def coco_box_iou_matrix(dt_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) ``[x1, y1, x2, y2]`` -> (N, M) IoU, as the official scripts compute it."""
    dt = xyxy_to_xywh(np.reshape(dt_xyxy, (-1, 4)))
    gt = xyxy_to_xywh(np.reshape(gt_xyxy, (-1, 4)))
    return coco_box_iou(dt[:, None, :], gt[None, :, :])
