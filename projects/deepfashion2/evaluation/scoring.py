"""
The scoring core: COCO average precision, computed the way pycocotools does it, with the
similarities (IoU / OKS) computed once per task and only the cheap matching and accumulation redone
per subset.

Protocol (the official DeepFashion2 evaluation is pycocotools with these parameters): IoU
thresholds 0.50:0.05:0.95, 101 recall points; boxes and masks keep the 100 best detections per
image and category, landmarks the 20 best; OKS with the 294 DeepFashion2 sigmas and the ground
truth's box area as scale, counting labelled landmarks (v > 0; v = 2 only for ``keypoints_vis``);
detections match ground truth of their own category only. Ground truth without labelled landmarks
is ignored by the landmark tasks (as COCO does).

Subsets (scale, occlusion, zoom-in, viewpoint) ignore the ground truth outside them exactly as COCO
ignores ground truth outside an area range: similarities as usual, a detection matched to an
ignored item counts neither as true nor as false positive, an unmatched detection is a false
positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util

from .. import landmarks as L
from .boxes import coco_box_iou
from .detections import Detections
from .groundtruth import GroundTruth
from .tasks import AP_METRICS, AP_TASKS
from .tasks import TASKS as T

TASKS = AP_TASKS
# exactly pycocotools' Params
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = {k: T[k].max_dets for k in AP_TASKS}


def subsets() -> list[tuple[str, str]]:
    """The 12 (attribute, value) subsets of the dataset's tables, in table order."""
    return [(a, v) for a, values in L.ATTRIBUTES.items() for v in values]


@dataclass
class TaskMatches:
    """
    The expensive part of one task, shared by every subset: detections ordered like pycocotools
    (by image and category, best score first, cut at ``max_dets``) and their similarity to each
    ground-truth item of the same image and category.
    """

    gt_category: np.ndarray  # (N,) 1..13
    base_ignore: np.ndarray  # (N,) bool: ignored whatever the subset
    det_score: np.ndarray  # (D,) kept detections, grouped by (image, category), by rank
    det_group: np.ndarray  # (D,) row of gt_table
    by_rank: list  # by_rank[r]: indices of the detections of rank r in their group
    gt_table: np.ndarray  # (G, M) ground truth of each group in index order; -1 = none
    sims: np.ndarray  # (D, M) IoU / OKS with gt_table's items
    acc_order: np.ndarray  # (D,) pycocotools' accumulation order (category, then -score)
    cat_bounds: np.ndarray  # (14,) acc_order[cat_bounds[k]:cat_bounds[k+1]] = category k+1

    def precision(self, keep: np.ndarray | None = None) -> np.ndarray:
        """
        (T, R, K) interpolated precision (pycocotools ``eval["precision"]`` at area "all" and the
        largest maxDets) with the ground truth outside ``keep`` (N,) ignored; -1 for categories
        without ground truth in the subset.
        """
        ignore = self.base_ignore if keep is None else self.base_ignore | ~keep
        matched, det_ignored = self._match(ignore)
        T, R, K = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), L.NUM_CATEGORIES
        out = -np.ones((T, R, K))
        npig = np.bincount(self.gt_category[~ignore] - 1, minlength=K)
        tps = (matched & ~det_ignored)[:, self.acc_order]
        fps = (~matched & ~det_ignored)[:, self.acc_order]
        for k in range(K):
            if npig[k] == 0:
                continue
            lo, hi = self.cat_bounds[k], self.cat_bounds[k + 1]
            out[:, :, k] = _interpolated_precision(tps[:, lo:hi], fps[:, lo:hi], npig[k])
        return out

    def _match(self, ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        pycocotools' greedy matching (``evaluateImg``), vectorised over groups and thresholds:
        detections in score order take the best-matching free ground truth; a non-ignored one
        wins over an ignored one; among equal similarities the last in order wins.
        Returns (T, D) matched and matched-to-ignored.
        """
        T, D = len(IOU_THRESHOLDS), len(self.det_score)
        valid = self.gt_table >= 0
        ig_table = np.where(valid, ignore[np.maximum(self.gt_table, 0)], False)
        taken = np.zeros((T,) + self.gt_table.shape, dtype=bool)
        matched = np.zeros((T, D), dtype=bool)
        det_ignored = np.zeros((T, D), dtype=bool)
        thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None, None]
        for idx in self.by_rank:
            g = self.det_group[idx]
            s = self.sims[idx][None]  # (1, A, M)
            cand = (s >= thr) & ~taken[:, g] & valid[g][None]
            ig = ig_table[g][None]
            m_reg, has_reg = _last_argmax(s, cand & ~ig)
            m_ig, has_ig = _last_argmax(s, cand & ig)
            has = has_reg | has_ig
            m = np.where(has_reg, m_reg, m_ig)
            matched[:, idx] = has
            det_ignored[:, idx] = has & ~has_reg
            t_i, a_i = np.nonzero(has)
            taken[t_i, g[a_i], m[t_i, a_i]] = True
        return matched, det_ignored


def _last_argmax(s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the largest ``s`` under ``mask`` along the last axis (ties: the last), and any."""
    v = np.where(mask, s, -np.inf)
    best = v.max(-1, keepdims=True)
    hit = mask & (v == best)
    M = s.shape[-1]
    return M - 1 - np.argmax(hit[..., ::-1], axis=-1), mask.any(-1)


def _interpolated_precision(tps: np.ndarray, fps: np.ndarray, npig: int) -> np.ndarray:
    """(T, R) precision at the recall thresholds, as pycocotools' ``accumulate``."""
    T, nd = tps.shape
    q = np.zeros((T, len(RECALL_THRESHOLDS)))
    if nd == 0:
        return q
    tp_sum = np.cumsum(tps, axis=1).astype(float)
    fp_sum = np.cumsum(fps, axis=1).astype(float)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(T):
        inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        ok = inds < nd
        q[t, ok] = pr[t, inds[ok]]
    return q


def match_task(
    task: str, gt: GroundTruth, dets: Detections, sigmas: np.ndarray | None = None
) -> TaskMatches:
    """
    Order the detections and compute their similarities to the ground truth, once per task.
    ``sigmas``: the 294 OKS sigmas (default: the official ones, ``landmarks.OKS_SIGMAS``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    K = L.NUM_CATEGORIES
    det_img = gt.image_index(dets.image_id)
    if (det_img < 0).any():
        raise ValueError(
            f"detections on images outside the split: {dets.image_id[det_img < 0][:5]}"
        )
    # detections grouped by (image, category), best score first, ties in input order
    dkey = det_img * K + dets.category - 1
    order = np.lexsort((np.arange(len(dkey)), -dets.score, dkey))
    dkey_s = dkey[order]
    first = np.r_[0, np.flatnonzero(np.diff(dkey_s)) + 1] if len(order) else np.zeros(0, int)
    starts = np.repeat(first, np.diff(np.r_[first, len(order)]))
    rank = np.arange(len(order)) - starts
    keep = rank < MAX_DETS[task]
    order, dkey_s, rank = order[keep], dkey_s[keep], rank[keep]
    groups, det_group = np.unique(dkey_s, return_inverse=True)
    # ground truth of those groups, in index order (pycocotools keeps annotation order)
    gkey = gt.image * K + gt.category - 1
    gorder = np.argsort(gkey, kind="stable")
    gkey_s = gkey[gorder]
    lo = np.searchsorted(gkey_s, groups, side="left")
    cnt = np.searchsorted(gkey_s, groups, side="right") - lo
    M = max(int(cnt.max()) if len(cnt) else 0, 1)  # at least one (padding) column
    gt_table = -np.ones((len(groups), M), dtype=np.int64)
    rows = np.repeat(np.arange(len(groups)), cnt)
    cols = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    gt_table[rows, cols] = gorder[np.repeat(lo, cnt) + cols]
    # similarity of every detection to every ground truth of its group
    n_pairs = cnt[det_group]
    pair_det = np.repeat(np.arange(len(order)), n_pairs)
    pair_col = np.arange(n_pairs.sum()) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    pair_gt = gt_table[det_group[pair_det], pair_col]
    sims = np.full((len(order), M), -1.0)
    if len(pair_det):
        sims[pair_det, pair_col] = _similarity(task, gt, dets, order, pair_det, pair_gt, sigmas)
    # accumulation order: per category, images by id, rank, then a stable sort by score
    det_cat = dets.category[order]
    acc_order = np.lexsort((rank, dkey_s // K, -dets.score[order], det_cat))
    cat_bounds = np.searchsorted(det_cat[acc_order], np.arange(1, K + 2))
    base_ignore = np.zeros(gt.num_items, dtype=bool)
    if task.startswith("keypoints"):
        base_ignore = _labelled_counts(gt, task) == 0
    return TaskMatches(
        gt_category=gt.category,
        base_ignore=base_ignore,
        det_score=dets.score[order],
        det_group=det_group,
        by_rank=[np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1 if len(rank) else 0)],
        gt_table=gt_table,
        sims=sims,
        acc_order=acc_order,
        cat_bounds=cat_bounds,
    )


def _labelled_counts(gt: GroundTruth, task: str) -> np.ndarray:
    """(N,) landmarks that count in ``task``: v > 0, or v == 2 for ``keypoints_vis``."""
    v = gt.landmarks[:, 2]
    counted = (v == 2) if task == "keypoints_vis" else (v > 0)
    return np.add.reduceat(counted, gt.lm_ptr[:-1]) if len(v) else np.zeros(gt.num_items, int)


def _similarity(task, gt, dets, order, pair_det, pair_gt, sigmas=None) -> np.ndarray:
    d = order[pair_det]
    if task == "bbox":
        return coco_box_iou(dets.boxes[d], gt.boxes[pair_gt])
    if task == "segm":
        return _mask_iou(gt, dets, d, pair_gt)
    sigmas = L.OKS_SIGMAS if sigmas is None else sigmas
    return _oks(gt, dets, d, pair_gt, task == "keypoints_vis", sigmas)


def gt_rles(gt: GroundTruth, items: np.ndarray) -> dict[int, dict]:
    """Polygons of ``items`` rasterised as pycocotools' ``annToRLE`` does."""
    out = {}
    for j in np.unique(items).tolist():
        k = gt.image[j]
        h, w = int(gt.heights[k]), int(gt.widths[k])
        out[j] = mask_util.merge(mask_util.frPyObjects(gt.polygons[j], h, w))
    return out


def _mask_iou(gt, dets, d, pair_gt) -> np.ndarray:
    rles = gt_rles(gt, pair_gt)
    out = np.empty(len(d))
    # pairs come grouped by detection; one pycocotools call per detection row
    bounds = np.r_[0, np.flatnonzero(np.diff(d)) + 1, len(d)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        g = [rles[j] for j in pair_gt[lo:hi].tolist()]
        out[lo:hi] = mask_util.iou([dets.masks[d[lo]]], g, [0] * len(g))[0]
    return out


def _oks(gt, dets, d, pair_gt, visible_only: bool, sigmas: np.ndarray) -> np.ndarray:
    """pycocotools' ``computeOks`` per pair, vectorised per category on the compact slices."""
    out = np.empty(len(d))
    area = gt.area[pair_gt]
    cat = gt.category[pair_gt]
    for c in np.unique(cat).tolist():
        sel = np.flatnonzero(cat == c)
        k = int(L.LANDMARK_COUNT[c - 1])
        g_idx = gt.lm_ptr[pair_gt[sel]][:, None] + np.arange(k)
        d_idx = dets.kp_ptr[d[sel]][:, None] + np.arange(k)
        g, p = gt.landmarks[g_idx], dets.keypoints[d_idx]  # (S, k, 3)
        counted = (g[..., 2] == 2) if visible_only else (g[..., 2] > 0)
        var = (sigmas[L.LANDMARK_START[c - 1] : L.LANDMARK_START[c - 1] + k] * 2) ** 2
        dx, dy = p[..., 0] - g[..., 0], p[..., 1] - g[..., 1]
        e = (dx**2 + dy**2) / var / (area[sel, None] + np.spacing(1)) / 2
        k1 = counted.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sel] = np.where(counted, np.exp(-e), 0.0).sum(1) / k1
        for s in sel[k1 == 0].tolist():  # no counted landmark: distance to the enlarged box
            full = dets.full_keypoints(d[s])
            out[s] = _oks_unlabelled(gt.boxes[pair_gt[s]], area[s], full, sigmas)
    return out


def _oks_unlabelled(box: np.ndarray, area: float, full: np.ndarray, sigmas: np.ndarray) -> float:
    x0, x1 = box[0] - box[2], box[0] + box[2] * 2
    y0, y1 = box[1] - box[3], box[1] + box[3] * 2
    xd, yd = full[:, 0], full[:, 1]
    z = np.zeros(len(xd))
    dx = np.max((z, x0 - xd), axis=0) + np.max((z, xd - x1), axis=0)
    dy = np.max((z, y0 - yd), axis=0) + np.max((z, yd - y1), axis=0)
    e = (dx**2 + dy**2) / (sigmas * 2) ** 2 / (area + np.spacing(1)) / 2
    return float(np.sum(np.exp(-e)) / e.shape[0])


# ---- summaries ----


def summarize(precision: np.ndarray) -> dict[str, float]:
    """AP, AP50, AP75 (0-1; NaN when no category has ground truth) and per-category AP."""
    out = {
        "AP": _mean_valid(precision),
        "AP50": _mean_valid(precision[0]),
        "AP75": _mean_valid(precision[5]),
    }
    for k, name in enumerate(L.CATEGORY_NAMES):
        out[f"AP-{name}"] = _mean_valid(precision[:, :, k])
    return out


def _mean_valid(p: np.ndarray) -> float:
    v = p[p > -1]
    return float(np.mean(v)) if v.size else float("nan")


def evaluate_task(matches: TaskMatches, gt: GroundTruth, bar=None) -> dict[str, float]:
    """Overall and per-subset AP / AP50 / AP75 of one task, 0-1, NaN for empty subsets."""
    out = summarize(matches.precision())
    for attribute, value in subsets():
        s = summarize(matches.precision(gt.subset_mask(attribute, value)))
        for metric in AP_METRICS:
            out[f"{metric}/{attribute}:{value}"] = s[metric]
        if bar is not None:
            bar.update(1)
    return out


def evaluate(
    gt: GroundTruth,
    dets: dict[str, Detections],
    progress: bool | None = None,
    sigmas: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """
    Every task of ``dets`` (task -> detections), overall and per subset; AP on 0-1. A progress
    bar shows on a terminal (``progress=None``), always (True) or never (False). ``sigmas``: the
    landmarks' OKS sigmas (default: the official 294).
    """
    from tqdm import tqdm

    disable = None if progress is None else not progress
    out = {}
    with tqdm(
        total=len(dets) * (len(subsets()) + 1),
        desc="Scoring",
        unit="table",
        disable=disable,
        leave=False,
    ) as bar:
        for task, d in dets.items():
            bar.set_postfix(task=task, refresh=False)
            matches = match_task(task, gt, d, sigmas)
            bar.update(1)
            out[task] = evaluate_task(matches, gt, bar)
    return out
