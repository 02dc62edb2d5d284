"""
A split's ground truth as flat arrays, in the conventions of the official evaluation.

The official evaluation scores the output of DeepFashion2's COCO converter: boxes ``[x, y, w, h]``,
``area`` = box area ``w * h`` (the OKS scale), landmarks as the files' integer pixel indices. The
Detectron2 dicts of our loader hold continuous coordinates (+0.5 on labelled landmarks), so the
shift is taken off here, as in the COCO export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import landmarks as L
from ..utils.arrays import offsets
from .boxes import xyxy_to_xywh


def attribute_mask(attributes: np.ndarray, attribute: str, value: str) -> np.ndarray:
    """(N,) bool of (N, 4) 1-based attribute codes (landmarks.ATTRIBUTES' order): ``value``'s."""
    col = list(L.ATTRIBUTES).index(attribute)
    return attributes[:, col] == L.ATTRIBUTES[attribute].index(value) + 1


@dataclass
class GroundTruth:
    # per image, sorted by image id (the order pycocotools accumulates in)
    image_ids: np.ndarray  # (I,) int64
    heights: np.ndarray  # (I,) int64
    widths: np.ndarray  # (I,) int64
    sources: np.ndarray  # (I,) int8, index into landmarks.SOURCES
    pair_ids: np.ndarray  # (I,) int64
    # per item
    image: np.ndarray  # (N,) int64 index into the image arrays
    category: np.ndarray  # (N,) int64, 1..13
    boxes: np.ndarray  # (N, 4) float64, XYWH (w = x2 - x1, as the official converter computes)
    boxes_xyxy: np.ndarray  # (N, 4) float64, as in the files
    style: np.ndarray  # (N,) int64
    attributes: np.ndarray  # (N, 4) int64, 1-based values of landmarks.ATTRIBUTES in order
    lm_ptr: np.ndarray  # (N+1,) int64 into landmarks
    landmarks: np.ndarray  # (L, 3) float64, each item's own category's landmarks, file convention
    polygons: list  # (N,) lists of flat polygons [x1, y1, x2, y2, ...]

    @property
    def num_items(self) -> int:
        return len(self.category)

    @property
    def area(self) -> np.ndarray:
        """(N,) box area w * h: the official converter's ``area``, the OKS scale."""
        return self.boxes[:, 2] * self.boxes[:, 3]

    def subset_mask(self, attribute: str, value: str) -> np.ndarray:
        """(N,) bool: items whose ``attribute`` (e.g. "occlusion") has ``value`` (e.g. "heavy")."""
        return attribute_mask(self.attributes, attribute, value)

    def image_index(self, image_ids: np.ndarray) -> np.ndarray:
        """Positions of ``image_ids`` in this split; -1 where an id is not in it."""
        image_ids = np.asarray(image_ids, dtype=np.int64)
        pos = np.searchsorted(self.image_ids, image_ids)
        pos = np.minimum(pos, max(len(self.image_ids) - 1, 0))
        ok = len(self.image_ids) > 0 and self.image_ids[pos] == image_ids
        return np.where(ok, pos, -1)

    @classmethod
    def from_store(cls, store) -> "GroundTruth":
        """
        From a loaded split's columnar store (``deepfashion2.data.SplitStore``) directly: no
        dataset dicts, and no +0.5 put on the landmarks to be taken off again (the store holds
        the files' values). The same as :meth:`from_dicts` of its dicts.
        """
        order = np.argsort(np.asarray(store.image_id), kind="stable")
        ids = np.asarray(store.image_id, dtype=np.int64)[order]
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ground truth: duplicate image ids")
        item_ptr = np.asarray(store.item_ptr, dtype=np.int64)
        counts = np.diff(item_ptr)[order]
        rows = _ranges(item_ptr[:-1][order], counts)  # items, images in id order
        lm_ptr = np.asarray(store.lm_ptr, dtype=np.int64)
        lm_counts = np.diff(lm_ptr)[rows]
        poly_ptr, coord_ptr = np.asarray(store.poly_ptr), np.asarray(store.coord_ptr)
        coords = np.asarray(store.coords, dtype=np.float64)
        polygons = [
            [coords[coord_ptr[p] : coord_ptr[p + 1]].tolist() for p in range(a, b)]
            for a, b in zip(poly_ptr[rows].tolist(), poly_ptr[rows + 1].tolist())
        ]
        xyxy = np.asarray(store.bbox, dtype=np.float64)[rows].reshape(-1, 4)
        return cls(
            image_ids=ids,
            heights=np.asarray(store.height, dtype=np.int64)[order],
            widths=np.asarray(store.width, dtype=np.int64)[order],
            sources=np.asarray(store.source, dtype=np.int8)[order],
            pair_ids=np.asarray(store.pair_id, dtype=np.int64)[order],
            image=np.repeat(np.arange(len(ids), dtype=np.int64), counts),
            category=np.asarray(store.category, dtype=np.int64)[rows] + 1,
            boxes=xyxy_to_xywh(xyxy),
            boxes_xyxy=xyxy,
            style=np.asarray(store.style, dtype=np.int64)[rows],
            attributes=np.asarray(store.attributes, dtype=np.int64)[rows].reshape(-1, 4),
            lm_ptr=offsets(lm_counts),
            landmarks=np.asarray(store.landmarks, dtype=np.float64)[
                _ranges(lm_ptr[:-1][rows], lm_counts)
            ].reshape(-1, 3),
            polygons=polygons,
        )

    @classmethod
    def from_dicts(cls, dicts: list[dict]) -> "GroundTruth":
        """From Detectron2 dataset dicts, as :func:`deepfashion2.data.load_deepfashion2` gives."""
        dicts = sorted(dicts, key=lambda d: d["image_id"])
        image, cat, boxes, style, attrs, lms, polys = [], [], [], [], [], [], []
        # items keep their order within an image (the annotation file's key order, as the
        # loader gives it): the retrieval protocol assigns a box overlapping several items
        # equally, or none, to the first listed
        for i, d in enumerate(dicts):
            for a in d.get("annotations", ()):
                image.append(i)
                cat.append(a["category_id"] + 1)
                boxes.append(a["bbox"])
                style.append(a.get("style", 0))
                attrs.append([a[k] for k in L.ATTRIBUTES])
                lms.append(L.to_pixel_indices(a["landmarks"]))  # the files' convention
                polys.append([np.asarray(p, dtype=np.float64).tolist() for p in a["segmentation"]])
        xyxy = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        lm_ptr = offsets([len(x) for x in lms])
        ids = np.array([d["image_id"] for d in dicts], dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ground truth: duplicate image ids")
        return cls(
            image_ids=ids,
            heights=np.array([d["height"] for d in dicts], dtype=np.int64),
            widths=np.array([d["width"] for d in dicts], dtype=np.int64),
            sources=np.array([L.SOURCES.index(d.get("source", "user")) for d in dicts], np.int8),
            pair_ids=np.array([d.get("pair_id", 0) for d in dicts], dtype=np.int64),
            image=np.array(image, dtype=np.int64),
            category=np.array(cat, dtype=np.int64),
            boxes=xyxy_to_xywh(xyxy),
            boxes_xyxy=xyxy,
            style=np.array(style, dtype=np.int64),
            attributes=np.array(attrs, dtype=np.int64).reshape(-1, len(L.ATTRIBUTES)),
            lm_ptr=lm_ptr,
            landmarks=np.concatenate(lms) if lms else np.zeros((0, 3)),
            polygons=polys,
        )


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of ``range(s, s + c)`` for each start and count, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    if not counts.sum():
        return np.zeros(0, np.int64)
    shift = np.asarray(starts, dtype=np.int64) - offsets(counts)[:-1]
    return np.repeat(shift, counts) + np.arange(counts.sum())


def ground_truth_of(load_dicts) -> GroundTruth | None:
    """The ground truth of the dicts ``load_dicts()`` gives, or None if they hold no annotations
    (the test split): what the evaluators do without :func:`split_ground_truth`."""
    dicts = load_dicts()
    if not any("annotations" in d for d in dicts):
        return None
    return GroundTruth.from_dicts(dicts)


def split_ground_truth(dataset_name: str, cfg=None) -> GroundTruth:
    """
    The ground truth of a registered DeepFashion2 split, built once per process from the store
    its registration loaded (``deepfashion2.data.split_store``) and shared by every evaluator, the
    ground-truth-box pass and the demo.
    """
    from ..data.builtin import split_loaded  # the data layer, only where a registration is named

    loaded = split_loaded(dataset_name, cfg)
    if "ground_truth" not in loaded.derived:
        loaded.derived["ground_truth"] = GroundTruth.from_store(loaded.store)
    return loaded.derived["ground_truth"]
