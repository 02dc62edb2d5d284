"""
A parsed split as a handful of flat numpy arrays: the compact record (each item keeps only its own
category's landmarks; docs/DESIGN.md).

Why columnar: the train split has ~192K images and ~313K items. As nested Python lists (the
common COCO-conversion route, with 294x3 landmarks per item) it costs ~15 GB; as flat arrays it is
a few hundred MB, is cached as a handful of memory-mapped files, and the Detectron2 dicts built
from it hold numpy views instead of lists of Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from detectron2.structures import BoxMode

from ..landmarks import SOURCES, to_continuous
from ..utils.arrays import offsets
from .parse import ParsedImage


@dataclass
class SplitStore:
    # per image
    stems: np.ndarray  # (I,) str, file name without extension
    image_id: np.ndarray  # (I,) int64
    height: np.ndarray  # (I,) int32
    width: np.ndarray  # (I,) int32
    source: np.ndarray  # (I,) int8, index into SOURCES
    pair_id: np.ndarray  # (I,) int64
    item_ptr: np.ndarray  # (I+1,) int64, items of image i are item_ptr[i]:item_ptr[i+1]
    # per item
    item_id: np.ndarray  # (M,) int32, N of "itemN"
    category: np.ndarray  # (M,) int8, 0-based
    style: np.ndarray  # (M,) int32
    attributes: np.ndarray  # (M, 4) int8: scale, occlusion, zoom_in, viewpoint (1-based)
    bbox: np.ndarray  # (M, 4) float64, XYXY_ABS as in the file
    lm_ptr: np.ndarray  # (M+1,) int64 into landmarks
    landmarks: np.ndarray  # (L, 3) float64, each item's own category's landmarks, as in the file
    poly_ptr: np.ndarray  # (M+1,) int64 into coord_ptr
    coord_ptr: np.ndarray  # (P+1,) int64 into coords
    coords: np.ndarray  # (C,) float64, polygon coordinates as in the file
    # items or files a lenient parse skipped, per reason (not an array: see array_fields())
    skips: dict[str, int] = field(default_factory=dict)

    @classmethod
    def array_fields(cls) -> list[str]:
        """The names of the per-image and per-item arrays (what the cache stores as .npy)."""
        return [f.name for f in fields(cls) if f.name != "skips"]

    @property
    def num_images(self) -> int:
        return len(self.image_id)

    @property
    def num_items(self) -> int:
        return len(self.item_id)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.array_fields()}

    @classmethod
    def from_parsed(cls, stems: list[str], images: list[ParsedImage]) -> "SplitStore":
        items = [it for im in images for it in im.items]
        polys = [p for it in items for p in it.polygons]
        counts = np.array([len(im.items) for im in images], dtype=np.int64)
        return cls(
            stems=np.array(stems, dtype=str),
            image_id=np.array([im.image_id for im in images], dtype=np.int64),
            height=np.array([im.height for im in images], dtype=np.int32),
            width=np.array([im.width for im in images], dtype=np.int32),
            source=np.array([im.source for im in images], dtype=np.int8),
            pair_id=np.array([im.pair_id for im in images], dtype=np.int64),
            item_ptr=offsets(counts),
            item_id=np.array([it.item_id for it in items], dtype=np.int32),
            category=np.array([it.category_id for it in items], dtype=np.int8),
            style=np.array([it.style for it in items], dtype=np.int32),
            attributes=np.array([it.attributes for it in items], dtype=np.int8).reshape(-1, 4),
            bbox=np.array([it.bbox for it in items], dtype=np.float64).reshape(-1, 4),
            lm_ptr=offsets(np.array([len(it.landmarks) for it in items], dtype=np.int64)),
            landmarks=_cat([it.landmarks for it in items], (0, 3)),
            poly_ptr=offsets(np.array([len(it.polygons) for it in items], dtype=np.int64)),
            coord_ptr=offsets(np.array([len(p) for p in polys], dtype=np.int64)),
            coords=_cat(polys, (0,)),
        )

    @classmethod
    def concat(cls, parts: list["SplitStore"]) -> "SplitStore":
        """Join stores of consecutive chunks, rebasing the offset arrays."""
        if len(parts) == 1:
            return parts[0]
        out = {}
        for name in cls.array_fields():
            arrs = [getattr(p, name) for p in parts]
            if name.endswith("_ptr"):
                pieces, base = [arrs[0][:1] * 0], 0
                for a in arrs:
                    pieces.append(a[1:] + base)
                    base += a[-1]
                out[name] = np.concatenate(pieces)
            else:
                out[name] = np.concatenate(arrs)
        return cls(**out)

    def to_dicts(self, image_dir: str, image_ext: str = ".jpg") -> list[dict]:
        """
        Detectron2 dataset dicts. Boxes are XYXY_ABS. Landmarks stay compact: ``landmarks`` is the
        (K_c, 3) array of the item's own category; x, y of labelled landmarks (v > 0) get +0.5,
        like Detectron2's COCO loader does for keypoints (the files hold integer pixel indices;
        +0.5 makes them continuous coordinates, so a horizontal flip is ``W - x``). Polygons are
        kept as in the file (they already are continuous coordinates).
        """
        lms = to_continuous(self.landmarks)  # a private copy, shifted
        # plain ndarray views (of the cache's memory map when loaded from it), not np.memmap
        coords = np.asarray(self.coords)
        polys = np.split(coords, self.coord_ptr[1:-1]) if len(coords) else []
        item_ptr, poly_ptr, lm_ptr = (
            self.item_ptr.tolist(),
            self.poly_ptr.tolist(),
            self.lm_ptr.tolist(),
        )
        item_id, cat, style = self.item_id.tolist(), self.category.tolist(), self.style.tolist()
        attrs, bbox = self.attributes.tolist(), self.bbox.tolist()
        sources = [SOURCES[s] for s in self.source.tolist()]
        heights, widths = self.height.tolist(), self.width.tolist()
        image_ids, pair_ids = self.image_id.tolist(), self.pair_id.tolist()
        prefix = image_dir.rstrip("/") + "/"
        dicts = []
        for i, stem in enumerate(self.stems.tolist()):
            annos = []
            for j in range(item_ptr[i], item_ptr[i + 1]):
                a = attrs[j]
                annos.append(
                    {
                        "bbox": bbox[j],
                        "bbox_mode": BoxMode.XYXY_ABS,
                        "category_id": cat[j],
                        "segmentation": polys[poly_ptr[j] : poly_ptr[j + 1]],
                        "landmarks": lms[lm_ptr[j] : lm_ptr[j + 1]],
                        "iscrowd": 0,
                        "item_id": item_id[j],
                        "style": style[j],
                        "scale": a[0],
                        "occlusion": a[1],
                        "zoom_in": a[2],
                        "viewpoint": a[3],
                    }
                )
            record = {
                "file_name": prefix + stem + image_ext,
                "image_id": image_ids[i],
                "height": heights[i],
                "width": widths[i],
                "annotations": annos,
                "source": sources[i],
                "pair_id": pair_ids[i],
            }
            dicts.append(record)
        return dicts


def _cat(arrays: list[np.ndarray], empty_shape: tuple) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape, dtype=np.float64)
