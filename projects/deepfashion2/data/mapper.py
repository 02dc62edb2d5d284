"""
The training/test mapper: Detectron2's ``DatasetMapper`` plus the expansion of each item's compact
landmarks into the 294-slot ``keypoints`` the R-CNN expects.

Horizontal flip is the stock one: ``DatasetMapper`` permutes keypoints with
``keypoint_hflip_indices``, built from the ``keypoint_flip_map`` metadata, and that permutation only
maps within each category (see ``landmarks.flip_indices_294``), so a flipped left sleeve becomes
the right sleeve of the same category.
"""

from __future__ import annotations

import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from PIL import Image

from ..landmarks import expand_landmarks
from .parse import DeepFashion2FormatError


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


def match_id(pair_id: int, style: int) -> int:
    """Garment identity for retrieval: (pair_id, style) when style > 0, else -1 (unpaired)."""
    return pair_id * 1000 + style if style > 0 else -1


class DeepFashion2Mapper(DatasetMapper):
    """
    ``DatasetMapper`` for DeepFashion2 dicts (compact landmarks). Training instances also get
    ``gt_match_ids`` (the garment identity, see :func:`match_id`) for the matching head.
    """

    def __call__(self, dataset_dict: dict) -> dict:
        if self.is_train and "annotations" in dataset_dict:  # test mode drops annotations
            dataset_dict = dict(dataset_dict)
            dataset_dict["annotations"] = expand_annotation_landmarks(dataset_dict["annotations"])
        try:
            return super().__call__(dataset_dict)
        except (OSError, Image.DecompressionBombError) as e:
            # registration reads only image headers: a damaged file (e.g. truncated after an
            # intact header) shows up here, where PIL's error would not name it
            raise DeepFashion2FormatError(
                dataset_dict["file_name"], None, "image", f"cannot decode: {e}", "image: unreadable"
            ) from e

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        # The stock method with one addition: gt_match_ids, set before empty boxes are filtered.
        for anno in dataset_dict["annotations"]:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for obj in dataset_dict.pop("annotations")
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(
            annos, image_shape, mask_format=self.instance_mask_format
        )
        pair_id = dataset_dict.get("pair_id", 0)
        instances.gt_match_ids = torch.tensor(
            [match_id(pair_id, a.get("style", 0)) for a in annos], dtype=torch.int64
        )
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
