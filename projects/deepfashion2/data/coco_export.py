"""
COCO-style export in the conventions of DeepFashion2's official converter
(``deepfashion2_to_coco.py``): boxes ``[x, y, w, h]``, ``area`` = box area ``w * h``, 294x3
``keypoints`` (zeros outside the item's category), ``num_keypoints`` = labelled landmarks (v > 0),
``pair_id`` and ``style`` kept per annotation, annotation ids counted from 1, categories 1..13 with
keypoint names "1".."294". Coordinates are written as in the annotation files (no +0.5 shift).
"""

from __future__ import annotations

import numpy as np

from .. import landmarks as L
from ..landmarks import SOURCES
from .store import SplitStore


def coco_categories() -> list[dict]:
    names = [str(i + 1) for i in range(L.NUM_LANDMARKS)]
    return [
        {
            "id": c.id,
            "name": c.coco_name,
            "supercategory": "clothes",
            "keypoints": names,
            "skeleton": [],
        }
        for c in L.CATEGORIES
    ]


def store_to_coco(store: SplitStore, image_ext: str = ".jpg") -> dict:
    images, annotations = [], []
    stems = store.stems.tolist()
    for i in range(store.num_images):
        image_id = int(store.image_id[i])
        images.append(
            {
                "coco_url": "",
                "date_captured": "",
                "file_name": stems[i] + image_ext,
                "flickr_url": "",
                "id": image_id,
                "license": 0,
                "width": int(store.width[i]),
                "height": int(store.height[i]),
                "source": SOURCES[store.source[i]],
                "pair_id": int(store.pair_id[i]),
            }
        )
        for j in range(store.item_ptr[i], store.item_ptr[i + 1]):
            cat = int(store.category[j])
            compact = store.landmarks[store.lm_ptr[j] : store.lm_ptr[j + 1]]
            x1, y1, x2, y2 = store.bbox[j].tolist()
            w, h = x2 - x1, y2 - y1
            polys = [
                store.coords[store.coord_ptr[p] : store.coord_ptr[p + 1]].tolist()
                for p in range(store.poly_ptr[j], store.poly_ptr[j + 1])
            ]
            annotations.append(
                {
                    "area": _num(w * h),
                    "bbox": [_num(x1), _num(y1), _num(w), _num(h)],
                    "category_id": cat + 1,
                    "id": len(annotations) + 1,
                    "pair_id": int(store.pair_id[i]),
                    "image_id": image_id,
                    "iscrowd": 0,
                    "style": int(store.style[j]),
                    "num_keypoints": int(np.count_nonzero(compact[:, 2])),
                    "keypoints": L.expand_landmarks(cat, compact).reshape(-1).tolist(),
                    "segmentation": [[_num(v) for v in p] for p in polys],
                }
            )
    return {
        "info": "",
        "licenses": "",
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def _num(v: float) -> int | float:
    """Integral values as ints, like the official converter's output of integer annotations."""
    return int(v) if float(v).is_integer() else float(v)
