"""
Consumer-to-shop retrieval: the protocol of the official evaluation script
(``deepfashion2_api/PythonAPI/deepfashion2_retrieval_test.py``), its ground-truth and submission
formats, and the ranking that produces a submission.

Ground truth, as in the official ``query_gt.json`` / ``gallery_gt.json``: the query file lists
*every* item (style 0 included) of each consumer image holding at least one paired item
(``style > 0``), in the annotation file's key order (``item2`` before ``item1`` where the file
has it so: the 2019 files follow the key order, ``tests/test_retrieval_official.py``); the gallery
file lists the shop items with ``style > 0``, in the same order. Boxes are ``[x1, y1, x2, y2]``.

Protocol, as the official script runs it (its code, where its prose says less):

1. Each submitted box of a consumer image is assigned to the item of that image with the highest
   IoU among all the image's items in the query file, style 0 included, with no minimum: a box
   that overlaps nothing goes to the image's first listed item (the argmax of zeros); ties go to
   the first listed item.
2. A paired item (``style > 0``) is represented by the highest-scoring box assigned to it whose
   predicted class is the item's class (the first in submission order among equal scores). An
   item without one is a miss.
3. Its ranked gallery list is correct at rank r when the r-th retrieved box lies in a shop image
   holding a gallery item of the query's ``pair_id`` and ``style`` with IoU >= 0.5.
4. top-k = paired items correct within their first k results / all paired items of the query file
   (misses, and items without any gallery item, stay in the denominator).

IoU is pycocotools' on ``[x, y, w, h]`` boxes converted by subtraction, as the script does
(:mod:`.boxes`). The official script needs exactly 20 results per entry (fewer crash it); fewer
are accepted here, counted and reported (``num_short_lists``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..utils.arrays import plain_number
from .boxes import coco_box_iou, coco_box_iou_matrix, xyxy_to_xywh
from .detections import ResultFormatError, entry_int, entry_number
from .gallery import EXACT_MAX, GroupedIndex
from .groundtruth import GroundTruth, attribute_mask
from .scoring import subsets
from .tasks import TOPK

logger = logging.getLogger(__name__)

MAX_K = max(TOPK)
IOU_THRESHOLD = 0.5
QUERY_FIELDS = ("style", "pair_id", "query_image_id", "bbox", "cls")  # order of the 2019 files
GALLERY_FIELDS = ("gallery_image_id", "style", "pair_id", "bbox")


@dataclass
class RetrievalGroundTruth:
    # the query file, row by row: every item of each consumer image with a paired item
    q_image: np.ndarray  # (Q,)
    q_box: np.ndarray  # (Q, 4) XYXY
    q_cls: np.ndarray  # (Q,) 1..13
    q_style: np.ndarray  # (Q,) 0 = not a query, only a target for box assignment
    q_pair: np.ndarray  # (Q,)
    # the gallery file: shop items with style > 0
    g_image: np.ndarray  # (G,)
    g_box: np.ndarray  # (G, 4) XYXY
    g_style: np.ndarray  # (G,)
    g_pair: np.ndarray  # (G,)
    # (Q, 4) 1-based scale, occlusion, zoom_in, viewpoint of each row, when known (a split's
    # annotations; the official files do not carry them)
    q_attributes: np.ndarray | None = None

    @property
    def is_query(self) -> np.ndarray:
        """(Q,) bool: the rows that count (``style > 0``)."""
        return self.q_style > 0

    @property
    def num_queries(self) -> int:
        return int(self.is_query.sum())

    @classmethod
    def from_groundtruth(cls, gt: GroundTruth) -> "RetrievalGroundTruth":
        """The query and gallery files the official layout gives for a split's annotations."""
        user = gt.sources[gt.image] == 0
        shop = ~user
        paired_user_images = np.unique(gt.image[user & (gt.style > 0)])
        q = user & np.isin(gt.image, paired_user_images)  # image order, then the file's key order
        g = shop & (gt.style > 0)
        pair = gt.pair_ids[gt.image]
        image = gt.image_ids[gt.image]
        return cls(
            image[q],
            gt.boxes_xyxy[q],
            gt.category[q],
            gt.style[q],
            pair[q],
            image[g],
            gt.boxes_xyxy[g],
            gt.style[g],
            pair[g],
            q_attributes=gt.attributes[q],
        )

    @classmethod
    def from_official(
        cls, queries: list, gallery: list, query_file: str = "query", gallery_file: str = "gallery"
    ) -> "RetrievalGroundTruth":
        """From the official ``query_gt.json`` / ``gallery_gt.json`` lists."""
        q = _columns(queries, query_file, ("query_image_id", "bbox", "cls", "style", "pair_id"))
        g = _columns(gallery, gallery_file, ("gallery_image_id", "bbox", "style", "pair_id"))
        out = cls(*q, *g)
        # the official script asserts one pair_id per query image (it matches the gallery by the
        # image's pair_id)
        first = {}
        for i, (img, pair) in enumerate(zip(out.q_image.tolist(), out.q_pair.tolist())):
            if first.setdefault(img, pair) != pair:
                raise ResultFormatError(
                    query_file, i, "pair_id", f"{pair} differs from the {first[img]} of image {img}"
                )
        return out

    def to_official(self) -> tuple[list[dict], list[dict]]:
        """The ``query_gt.json`` and ``gallery_gt.json`` lists (fields in the 2019 files' order)."""
        queries = [
            {
                "style": s,
                "pair_id": p,
                "query_image_id": i,
                "bbox": [plain_number(v) for v in b],
                "cls": c,
            }
            for s, p, i, b, c in zip(
                self.q_style.tolist(),
                self.q_pair.tolist(),
                self.q_image.tolist(),
                self.q_box.tolist(),
                self.q_cls.tolist(),
            )
        ]
        gallery = [
            {"gallery_image_id": i, "style": s, "pair_id": p, "bbox": [plain_number(v) for v in b]}
            for i, s, p, b in zip(
                self.g_image.tolist(),
                self.g_style.tolist(),
                self.g_pair.tolist(),
                self.g_box.tolist(),
            )
        ]
        return queries, gallery


def _columns(entries: list, file: str, keys: tuple[str, ...]) -> list[np.ndarray]:
    if not isinstance(entries, list):
        raise ResultFormatError(file, None, "<top level>", "expected a list")
    cols = []
    for key in keys:
        if key == "bbox":
            cols.append(_boxes(entries, key, file))
        else:
            cols.append(
                np.array([entry_int(e, i, key, file) for i, e in enumerate(entries)], np.int64)
            )
    return cols


def _boxes(entries: list, key: str, file: str) -> np.ndarray:
    """(n, 4) float64 from a list field of ``entries``; the first malformed entry is named."""
    out = np.zeros((len(entries), 4))
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ResultFormatError(file, i, "<entry>", f"expected an object, got {e!r}")
        if key not in e:
            raise ResultFormatError(file, i, key, "missing")
        out[i] = _box(e[key], i, key, file)
    return out


def _box(v, i: int, key: str, file: str) -> list[float]:
    ok = isinstance(v, list) and len(v) == 4
    if ok:
        try:
            return [entry_number({key: x}, i, key, file) for x in v]
        except ResultFormatError:
            pass
    raise ResultFormatError(file, i, key, f"expected [x1, y1, x2, y2], got {v!r}")


@dataclass
class Submission:
    """One entry per detected query: its box, class, score and its ranked gallery boxes."""

    query_image: np.ndarray  # (S,)
    query_box: np.ndarray  # (S, 4) XYXY
    query_cls: np.ndarray  # (S,)
    query_score: np.ndarray  # (S,)
    gallery_image: np.ndarray  # (S, K), -1 = no item
    gallery_box: np.ndarray  # (S, K, 4) XYXY

    def __len__(self) -> int:
        return len(self.query_image)

    @property
    def list_lengths(self) -> np.ndarray:
        """(S,) number of gallery results of each entry (up to ``MAX_K`` are kept)."""
        return (self.gallery_image >= 0).sum(1)

    def to_json(self) -> list[dict]:
        out = []
        for s, n in enumerate(self.list_lengths.tolist()):
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
        """The official submission list; entries beyond ``MAX_K`` results are ignored."""
        if not isinstance(entries, list):
            raise ResultFormatError(file, None, "<top level>", "expected a list")
        S = len(entries)
        g_img = -np.ones((S, MAX_K), np.int64)
        g_box = np.zeros((S, MAX_K, 4))
        qi = np.zeros(S, np.int64)
        qb = np.zeros((S, 4))
        qc = np.zeros(S, np.int64)
        qs = np.zeros(S)
        for s, e in enumerate(entries):
            qi[s] = entry_int(e, s, "query_image_id", file)
            qb[s] = _box(e.get("query_bbox"), s, "query_bbox", file)
            qc[s] = entry_int(e, s, "query_cls", file)
            qs[s] = entry_number(e, s, "query_score", file) if "query_score" in e else 1.0
            ids, boxes = e.get("gallery_image_id"), e.get("gallery_bbox")
            for fld, v in (("gallery_image_id", ids), ("gallery_bbox", boxes)):
                if not isinstance(v, list):
                    raise ResultFormatError(file, s, fld, f"expected a list, got {v!r}")
            if len(boxes) != len(ids):
                raise ResultFormatError(
                    file, s, "gallery_bbox", "expected one [x1, y1, x2, y2] per gallery_image_id"
                )
            n = min(len(ids), MAX_K)
            for r in range(n):
                g_img[s, r] = entry_int({"gallery_image_id": ids[r]}, s, "gallery_image_id", file)
                g_box[s, r] = _box(boxes[r], s, "gallery_bbox", file)
        return cls(qi, qb, qc, qs, g_img, g_box)


@dataclass
class RetrievalOutcome:
    """Per query-file row: who represents it and where its first correct result is."""

    representative: np.ndarray  # (Q,) submission entry representing the row; -1 = none
    first_hit: np.ndarray  # (Q,) 0-based rank of the first correct result; MAX_K = none
    reachable: np.ndarray  # (Q,) bool: the gallery holds an item of the row's pair and style


def assign_representatives(sub: Submission, rgt: RetrievalGroundTruth) -> np.ndarray:
    """(Q,) the submission entry representing each paired query-file row; -1 = a miss."""
    rep = -np.ones(len(rgt.q_image), np.int64)
    best = np.full(len(rgt.q_image), -np.inf)
    entries_by_image = _group(sub.query_image)
    for img, rows in _group(rgt.q_image).items():
        entries = entries_by_image.get(img)
        if not entries:
            continue
        iou = coco_box_iou_matrix(sub.query_box[entries], rgt.q_box[rows])
        assigned = np.asarray(rows)[np.argmax(iou, axis=1)]  # zeros everywhere -> first row
        for e, q in zip(entries, assigned.tolist()):
            if (
                rgt.q_style[q] > 0
                and sub.query_cls[e] == rgt.q_cls[q]
                and sub.query_score[e] > best[q]
            ):
                rep[q], best[q] = e, sub.query_score[e]
    return rep


def gallery_hits(
    sub: Submission, rgt: RetrievalGroundTruth, entry: int, row: int, k: int = MAX_K
) -> np.ndarray:
    """(k,) bool: is the r-th result of submission ``entry`` correct for query-file ``row``."""
    same = np.flatnonzero((rgt.g_pair == rgt.q_pair[row]) & (rgt.g_style == rgt.q_style[row]))
    return _hits(sub, rgt, entry, same, k)


def _hits(sub: Submission, rgt: RetrievalGroundTruth, s: int, same: np.ndarray, k: int):
    out = np.zeros(k, bool)
    imgs = sub.gallery_image[s, :k]
    for r in np.flatnonzero(np.isin(imgs, rgt.g_image[same])).tolist():
        targets = same[rgt.g_image[same] == imgs[r]]
        iou = coco_box_iou(
            xyxy_to_xywh(sub.gallery_box[s, r])[None], xyxy_to_xywh(rgt.g_box[targets])
        )
        out[r] = bool((iou >= IOU_THRESHOLD).any())
    return out


def evaluate_submission(sub: Submission, rgt: RetrievalGroundTruth) -> RetrievalOutcome:
    rep = assign_representatives(sub, rgt)
    targets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j, key in enumerate(zip(rgt.g_pair.tolist(), rgt.g_style.tolist())):
        targets[key].append(j)
    first = np.full(len(rgt.q_image), MAX_K, np.int64)
    reachable = np.zeros(len(rgt.q_image), bool)
    for q in np.flatnonzero(rgt.is_query).tolist():
        same = targets.get((int(rgt.q_pair[q]), int(rgt.q_style[q])))
        reachable[q] = same is not None
        if same is None or rep[q] < 0:
            continue
        hits = np.flatnonzero(_hits(sub, rgt, int(rep[q]), np.asarray(same), MAX_K))
        if len(hits):
            first[q] = hits[0]
    return RetrievalOutcome(rep, first, reachable)


def score_submission(
    sub: Submission, rgt: RetrievalGroundTruth, outcome: RetrievalOutcome | None = None
) -> dict[str, float]:
    """
    ``top1`` ... ``top20`` on 0-1 (NaN without queries), per attribute subset when the ground truth
    knows the attributes (``top20/occlusion:heavy``; a subset's denominator is its own queries,
    NaN when it has none), and the counts behind them.
    """
    outcome = outcome or evaluate_submission(sub, rgt)
    is_query = rgt.is_query
    out = _topk(outcome.first_hit, is_query, "")
    if rgt.q_attributes is not None:
        for attr, value in subsets():
            mask = is_query & attribute_mask(rgt.q_attributes, attr, value)
            out.update(_topk(outcome.first_hit, mask, f"/{attr}:{value}"))
    short = int((sub.list_lengths < MAX_K).sum())
    unreachable = int((is_query & ~outcome.reachable).sum())
    if short:
        logger.warning(
            f"{short} of {len(sub)} submission entries have fewer than {MAX_K} gallery results "
            "(the official script needs exactly 20; they are scored as given)."
        )
    if unreachable:
        logger.warning(
            f"{unreachable} of {rgt.num_queries} queries have no gallery item of their pair_id and "
            "style: they count as misses (the official script asserts there)."
        )
    out.update(
        num_queries=rgt.num_queries,
        num_represented=int((outcome.representative[is_query] >= 0).sum()),
        num_unreachable=unreachable,
        num_short_lists=short,
    )
    return out


def topk_percent(scores: dict) -> dict[str, float]:
    """The top-k entries of :func:`score_submission` on Detectron2's 0-100 scale."""
    return {k: 100 * v for k, v in scores.items() if k.startswith("top")}


def _topk(first_hit: np.ndarray, mask: np.ndarray, suffix: str) -> dict[str, float]:
    n = int(mask.sum())
    ranks = first_hit[mask]
    return {f"top{k}{suffix}": float((ranks < k).sum() / n) if n else float("nan") for k in TOPK}


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
    exact_max: int = EXACT_MAX,
) -> Submission:
    """Top-k gallery items of every query (by cosine similarity) as a submission."""
    index = GroupedIndex(
        gallery.emb, gallery.cls, same_category=same_category, kind=index, exact_max=exact_max
    )
    return submission_from_rows(queries, gallery, index.search(queries.emb, queries.cls, k)[1])


def submission_from_rows(queries: ItemSet, gallery: ItemSet, rows: np.ndarray) -> Submission:
    """A submission from (S, k) gallery row numbers (-1 = none) of each query."""
    valid = rows >= 0
    safe = np.maximum(rows, 0)
    if len(gallery.image):
        g_image = np.where(valid, gallery.image[safe], -1)
        g_box = np.where(valid[..., None], gallery.box[safe], 0.0)
    else:
        g_image, g_box = rows, np.zeros((*rows.shape, 4))
    return Submission(queries.image, queries.box, queries.cls, queries.score, g_image, g_box)
