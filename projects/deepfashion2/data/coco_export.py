"""
COCO-style export in the conventions of DeepFashion2's official converter
(``deepfashion2_to_coco.py``): boxes ``[x, y, w, h]``, ``area`` = box area ``w * h``, 294x3
``keypoints`` (zeros outside the item's category), ``num_keypoints`` = labelled landmarks (v > 0),
``pair_id`` and ``style`` kept per annotation, annotation ids counted from 1, categories 1..13 with
keypoint names "1".."294". Coordinates are written as in the annotation files: the +0.5 that the
loader adds to labelled landmarks is taken off again.
"""

from __future__ import annotations

import os

import numpy as np

from .. import landmarks as L
from ..utils.arrays import plain_number
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


def dicts_to_coco(dicts: list[dict]) -> dict:
    """DeepFashion2 dataset dicts (as our loader returns them) -> COCO-style dict."""
    images, annotations = [], []
    for d in dicts:
        image = {
            "coco_url": "",
            "date_captured": "",
            "file_name": os.path.basename(d["file_name"]),
            "flickr_url": "",
            "id": d["image_id"],
            "license": 0,
            "width": d["width"],
            "height": d["height"],
        }
        if "source" in d:
            image.update(source=d["source"], pair_id=d["pair_id"])
        images.append(image)
        for a in d.get("annotations", ()):
            lm = L.to_pixel_indices(a["landmarks"])  # back to the files' convention
            x1, y1, x2, y2 = a["bbox"]
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "area": plain_number(w * h),
                    "bbox": [plain_number(x1), plain_number(y1), plain_number(w), plain_number(h)],
                    "category_id": a["category_id"] + 1,
                    "id": len(annotations) + 1,
                    "pair_id": d["pair_id"],
                    "image_id": d["image_id"],
                    "iscrowd": 0,
                    "style": a["style"],
                    "num_keypoints": int(np.count_nonzero(lm[:, 2] > 0)),
                    "keypoints": L.expand_landmarks(a["category_id"], lm).reshape(-1).tolist(),
                    "segmentation": [
                        [plain_number(v) for v in p.tolist()] for p in a["segmentation"]
                    ],
                }
            )
    return {
        "info": "",
        "licenses": "",
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def store_to_coco(store: SplitStore, image_dir: str = "", image_ext: str = ".jpg") -> dict:
    return dicts_to_coco(store.to_dicts(image_dir, image_ext))
