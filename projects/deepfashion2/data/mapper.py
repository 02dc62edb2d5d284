"""
The training/test mapper: Detectron2's ``DatasetMapper`` plus the expansion of each item's compact
landmarks into the 294-slot ``keypoints`` the R-CNN expects.

Horizontal flip is the stock one: ``DatasetMapper`` permutes keypoints with
``keypoint_hflip_indices``, built from the ``keypoint_flip_map`` metadata, and that permutation only
maps within each category (see ``landmarks.flip_indices_294``), so a flipped left sleeve becomes
the right sleeve of the same category.
"""

from __future__ import annotations

from detectron2.data import DatasetMapper

from ..landmarks import expand_landmarks


def expand_annotation_landmarks(annotations: list[dict]) -> list[dict]:
    """Copies of the annotations with ``landmarks`` (K_c, 3) replaced by ``keypoints`` (294*3)."""
    out = []
    for a in annotations:
        a = dict(a)
        lm = a.pop("landmarks", None)
        if lm is not None:
            a["keypoints"] = expand_landmarks(a["category_id"], lm).reshape(-1)
        out.append(a)
    return out


class DeepFashion2Mapper(DatasetMapper):
    """``DatasetMapper`` for DeepFashion2 dicts (compact landmarks)."""

    def __call__(self, dataset_dict: dict) -> dict:
        if self.is_train and "annotations" in dataset_dict:  # test mode drops annotations
            dataset_dict = dict(dataset_dict)
            dataset_dict["annotations"] = expand_annotation_landmarks(dataset_dict["annotations"])
        return super().__call__(dataset_dict)
