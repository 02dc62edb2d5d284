"""
Consumer-to-shop retrieval: the protocol of the official evaluation, the submission format and
the ranking that produces it.

Protocol: queries are the ground-truth items of consumer (``user``) images with ``style > 0``.
Each detected query box is assigned to the ground-truth query of its image with the highest IoU
(a box overlapping none is not assigned); among the boxes assigned to an item and classified as
its category, the highest-scoring one represents it. Its ranked gallery list is correct at rank r
when the r-th gallery box lies in an image holding a shop item of the query's ``pair_id`` and
``style`` with IoU >= 0.5. Top-k accuracy = represented queries correct within the first k /
all ground-truth queries (a query without a representative is a miss).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from .detections import ResultFormatError
from .gallery import GalleryIndex
from .groundtruth import GroundTruth

TOPK = (1, 5, 10, 15, 20)
MAX_K = max(TOPK)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) XYXY -> (N, M) IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class RetrievalGroundTruth:
    # queries: consumer items with style > 0
    q_image: np.ndarray  # (Q,)
    q_box: np.ndarray  # (Q, 4) XYXY
    q_cls: np.ndarray  # (Q,) 1..13
    q_style: np.ndarray  # (Q,)
    q_pair: np.ndarray  # (Q,)
    # shop items that can be correct answers (style > 0)
    g_image: np.ndarray  # (G,)
    g_box: np.ndarray  # (G, 4) XYXY
    g_style: np.ndarray  # (G,)
    g_pair: np.ndarray  # (G,)

    @property
    def num_queries(self) -> int:
        return len(self.q_image)

    @classmethod
    def from_groundtruth(cls, gt: GroundTruth) -> "RetrievalGroundTruth":
        xyxy = gt.boxes.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        shop = gt.sources[gt.image] == 1
        pair = gt.pair_ids[gt.image]
        image = gt.image_ids[gt.image]
        q = ~shop & (gt.style > 0)
        g = shop & (gt.style > 0)
        return cls(
            image[q], xyxy[q], gt.category[q], gt.style[q], pair[q],
            image[g], xyxy[g], gt.style[g], pair[g],
        )  # fmt: skip

    @classmethod
    def from_official(
        cls, queries: list, gallery: list, query_file: str = "query", gallery_file: str = "gallery"
    ) -> "RetrievalGroundTruth":
        """From the official ``{query,gallery}`` ground-truth lists (boxes XYXY)."""
        q = _columns(queries, query_file, ("query_image_id", "bbox", "cls", "style", "pair_id"))
        g = _columns(gallery, gallery_file, ("gallery_image_id", "bbox", "style", "pair_id"))
        return cls(*q, *g)


def _columns(entries: list, file: str, keys: tuple[str, ...]) -> list[np.ndarray]:
    if not isinstance(entries, list):
        raise ResultFormatError(file, None, "<top level>", "expected a list")
    cols = []
    for key in keys:
        try:
            vals = [e[key] for e in entries]
        except (KeyError, TypeError):
            i = next(i for i, e in enumerate(entries) if not isinstance(e, dict) or key not in e)
            raise ResultFormatError(file, i, key, "missing") from None
        try:
            arr = np.array(vals, dtype=np.float64 if key.endswith("bbox") else np.int64)
        except (TypeError, ValueError):
            arr = None
        shape = (len(entries), 4) if key.endswith("bbox") else (len(entries),)
        if arr is None or arr.shape != shape:
            for i, v in enumerate(vals):
                ok = (
                    isinstance(v, list) and len(v) == 4
                    if key.endswith("bbox")
                    else isinstance(v, int) and not isinstance(v, bool)
                )
                if not ok:
                    raise ResultFormatError(file, i, key, f"unexpected value {v!r}")
        cols.append(arr.reshape(shape) if arr is not None else arr)
    return cols


@dataclass
class Submission:
    """One entry per detected query: its box, class, score and its ranked gallery boxes."""

    query_image: np.ndarray  # (S,)
    query_box: np.ndarray  # (S, 4) XYXY
    query_cls: np.ndarray  # (S,)
    query_score: np.ndarray  # (S,)
    gallery_image: np.ndarray  # (S, K), -1 = no item
    gallery_box: np.ndarray  # (S, K, 4)

    def __len__(self) -> int:
        return len(self.query_image)

    def to_json(self) -> list[dict]:
        out = []
        for s in range(len(self)):
            n = int((self.gallery_image[s] >= 0).sum())
            out.append(
                {
                    "query_image_id": int(self.query_image[s]),
                    "query_bbox": [float(v) for v in self.query_box[s]],
                    "query_cls": int(self.query_cls[s]),
                    "query_score": float(self.query_score[s]),
                    "gallery_image_id": self.gallery_image[s, :n].tolist(),
                    "gallery_bbox": self.gallery_box[s, :n].tolist(),
                }
            )
        return out

    @classmethod
    def from_json(cls, entries: list, file: str) -> "Submission":
        if not isinstance(entries, list):
            raise ResultFormatError(file, None, "<top level>", "expected a list")
        S = len(entries)
        g_img = -np.ones((S, MAX_K), np.int64)
        g_box = np.zeros((S, MAX_K, 4))
        qi, qb, qc, qs = [], [], [], []
        for s, e in enumerate(entries):
            try:
                qi.append(int(e["query_image_id"]))
                box = np.asarray(e["query_bbox"], np.float64)
                if box.shape != (4,):
                    raise ResultFormatError(file, s, "query_bbox", "expected [x1, y1, x2, y2]")
                qb.append(box)
                qc.append(int(e["query_cls"]))
                qs.append(float(e.get("query_score", 1.0)))
                ids = np.asarray(e["gallery_image_id"], np.int64)[:MAX_K]
                boxes = np.asarray(e["gallery_bbox"], np.float64)[:MAX_K]
                boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
            except KeyError as k:
                raise ResultFormatError(file, s, k.args[0], "missing") from None
            except (TypeError, ValueError) as ex:
                raise ResultFormatError(file, s, "<entry>", f"malformed: {ex}") from None
            if boxes.shape != (len(ids), 4):
                raise ResultFormatError(
                    file, s, "gallery_bbox", "expected one [x1, y1, x2, y2] per gallery_image_id"
                )
            g_img[s, : len(ids)] = ids
            g_box[s, : len(ids)] = boxes
        return cls(
            np.array(qi, np.int64),
            np.array(qb).reshape(-1, 4),
            np.array(qc, np.int64),
            np.array(qs, np.float64),
            g_img,
            g_box,
        )


def represented_queries(sub: Submission, rgt: RetrievalGroundTruth) -> np.ndarray:
    """(Q,) index of the submission entry representing each ground-truth query; -1 = a miss."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for q, img in enumerate(rgt.q_image.tolist()):
        by_image[img].append(q)
    rep = -np.ones(rgt.num_queries, np.int64)
    best = np.full(rgt.num_queries, -np.inf)
    for img, entries in _group(sub.query_image).items():
        qs = by_image.get(img)
        if not qs:
            continue
        iou = box_iou(sub.query_box[entries], rgt.q_box[qs])
        for e, row in zip(entries, iou):
            j = int(np.argmax(row))
            q = qs[j]
            if row[j] > 0 and sub.query_cls[e] == rgt.q_cls[q] and sub.query_score[e] > best[q]:
                rep[q], best[q] = e, sub.query_score[e]
    return rep


def first_hit_ranks(sub: Submission, rgt: RetrievalGroundTruth, rep: np.ndarray) -> np.ndarray:
    """(Q,) 0-based rank of the first correct gallery item of each query; MAX_K = none/miss."""
    items: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for j, key in enumerate(zip(rgt.g_image.tolist(), rgt.g_pair.tolist(), rgt.g_style.tolist())):
        items[key].append(j)
    out = np.full(rgt.num_queries, MAX_K, np.int64)
    for q in np.flatnonzero(rep >= 0).tolist():
        s = rep[q]
        pair, style = int(rgt.q_pair[q]), int(rgt.q_style[q])
        for r, img in enumerate(sub.gallery_image[s].tolist()):
            cands = items.get((img, pair, style)) if img >= 0 else None
            if cands and (box_iou(sub.gallery_box[s, r], rgt.g_box[cands]) >= 0.5).any():
                out[q] = r
                break
    return out


def score_submission(sub: Submission, rgt: RetrievalGroundTruth) -> dict[str, float]:
    """``top1`` ... ``top20`` on 0-1 (NaN without queries), plus the counts behind them."""
    rep = represented_queries(sub, rgt)
    ranks = first_hit_ranks(sub, rgt, rep)
    n = rgt.num_queries
    out = {f"top{k}": float((ranks < k).sum() / n) if n else float("nan") for k in TOPK}
    out.update(num_queries=n, num_represented=int((rep >= 0).sum()))
    return out


def _group(values: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, v in enumerate(values.tolist()):
        out[v].append(i)
    return out


@dataclass
class ItemSet:
    """Detected (or annotated) items with embeddings: the query side or the gallery side."""

    image: np.ndarray  # (n,)
    box: np.ndarray  # (n, 4) XYXY
    cls: np.ndarray  # (n,) 1..13
    score: np.ndarray  # (n,)
    emb: np.ndarray  # (n, E) float32, unit length


def rank(
    queries: ItemSet,
    gallery: ItemSet,
    k: int = MAX_K,
    *,
    same_category: bool = True,
    index: str = "auto",
    exact_max: int = 200_000,
) -> Submission:
    """Top-k gallery items of every query (by cosine similarity) as a submission."""
    S = len(queries.image)
    g_idx = -np.ones((S, k), np.int64)
    groups = (
        [(queries.cls == c, gallery.cls == c) for c in np.unique(queries.cls)]
        if same_category
        else [(np.ones(S, bool), np.ones(len(gallery.image), bool))]
    )
    for q_sel, g_sel in groups:
        g_rows = np.flatnonzero(g_sel)
        if not len(g_rows) or not q_sel.any():
            continue
        idx = GalleryIndex(gallery.emb[g_rows], index, exact_max=exact_max)
        _, ids = idx.search(queries.emb[q_sel], k)
        g_idx[q_sel] = np.where(ids >= 0, g_rows[np.maximum(ids, 0)], -1)
    valid = g_idx >= 0
    if not len(gallery.image):
        return Submission(
            queries.image, queries.box, queries.cls, queries.score, g_idx, np.zeros((S, k, 4))
        )
    g_image = np.where(valid, gallery.image[np.maximum(g_idx, 0)], -1)
    g_box = np.where(valid[..., None], gallery.box[np.maximum(g_idx, 0)], 0.0)
    return Submission(queries.image, queries.box, queries.cls, queries.score, g_image, g_box)
