"""The mapper: compact landmarks -> 294 keypoints, and the per-category horizontal flip."""

import copy

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from deepfashion2 import add_deepfashion2_config
from deepfashion2 import landmarks as L
from deepfashion2.data import DeepFashion2Mapper, load_deepfashion2
from deepfashion2.data.synthetic import template


def _mapper(flip: bool):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.MODEL.KEYPOINT_ON = True
    cfg.MODEL.MASK_ON = True
    cfg.DATASETS.TRAIN = ("deepfashion2_mini_train",)  # hflip indices from its metadata
    mapper = DeepFashion2Mapper(cfg, is_train=True)
    mapper.augmentations = T.AugmentationList([T.RandomFlip(prob=1.0 if flip else 0.0)])
    return mapper


def test_hflip_indices_from_metadata_are_the_scheme_permutation():
    assert (_mapper(True).keypoint_hflip_indices == L.flip_indices_294()).all()


@pytest.fixture(scope="module")
def dicts(synthetic_split):
    import os

    return load_deepfashion2(
        os.path.join(synthetic_split, "annos"),
        os.path.join(synthetic_split, "image"),
        use_cache=False,
    )


def test_keypoints_expanded_without_flip(dicts):
    out = _mapper(False)(copy.deepcopy(dicts[0]))
    kp = out["instances"].gt_keypoints.tensor.numpy()
    for a, k in zip(dicts[0]["annotations"], kp):
        assert np.allclose(L.expand_landmarks(a["category_id"], a["landmarks"]), k, atol=1e-4)
    assert "landmarks" in dicts[0]["annotations"][0]  # the dataset dicts are not modified


def test_flip_maps_within_each_category_and_twice_is_identity():
    w = 100
    for c in L.CATEGORIES:
        lm = np.zeros((c.num_landmarks, 3))
        lm[:, 0] = np.arange(c.num_landmarks) + 10.5
        lm[:, 1] = 20.5
        lm[:, 2] = 2
        full = L.expand_landmarks(c.contiguous_id, lm).reshape(-1)
        tf = T.TransformList([T.HFlipTransform(w)])
        once = utils.transform_keypoint_annotations(full.copy(), tf, (50, w), L.flip_indices_294())
        owner = L.LANDMARK_CATEGORY[once[:, 2] > 0]
        assert (owner == c.contiguous_id).all()
        own = once[c.landmark_slice]
        # landmark i of the flipped item is the mirror of landmark perm[i] of the original
        assert np.allclose(own[:, 0], w - lm[c.flip_indices, 0])
        twice = utils.transform_keypoint_annotations(
            once.reshape(-1).copy(), tf, (50, w), L.flip_indices_294()
        )
        assert np.allclose(twice, full.reshape(-1, 3))


def test_flipped_synthetic_garment_matches_its_mirror():
    """On the generator's symmetric silhouettes, flipping puts each landmark where its flip
    partner was: the per-category flip map and the geometry agree."""
    for c in L.CATEGORIES:
        _, pos = template(c)
        mirrored = np.stack([1 - pos[:, 0], pos[:, 1]], 1)
        assert np.allclose(mirrored[c.flip_indices], pos, atol=1e-9), c.name


def test_mapper_flip_end_to_end(dicts):
    d = dicts[0]
    out = _mapper(True)(copy.deepcopy(d))
    kp = out["instances"].gt_keypoints.tensor.numpy()
    w = out["image"].shape[2]
    assert w == d["width"]
    for a, k in zip(d["annotations"], kp):
        c = L.CATEGORIES[a["category_id"]]
        lm = a["landmarks"]
        exp = lm[c.flip_indices].copy()
        lab = exp[:, 2] > 0
        exp[lab, 0] = w - exp[lab, 0]
        assert np.allclose(k[c.landmark_slice][lab, :2], exp[lab, :2], atol=1e-3)
        others = np.ones(294, bool)
        others[c.landmark_slice] = False
        assert (k[others] == 0).all()
