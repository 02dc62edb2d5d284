"""
What Detectron2's LazyConfig files of this project (``configs/lazy/``) call for the parts that
are DeepFashion2's own: the training set (compact landmarks, the split's options), the pair
sampler's loader, the test set and the evaluators. Each takes explicit arguments, so a lazy
config sets them as it sets a model's (``dataloader.train.total_batch_size = 16``); the
DeepFashion2 options (``DEEPFASHION2`` of the YAML configs: ``LENIENT``, ``CACHE``,
``RETRIEVAL``) are one plain dict, ``deepfashion2``, passed where they matter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from detectron2.data import build_detection_train_loader
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm

__all__ = [
    "deepfashion2_options",
    "evaluators",
    "test_dataset",
    "train_dataset",
    "train_loader",
    "yaml_node",
]


def deepfashion2_options() -> dict:
    """The YAML's ``DEEPFASHION2`` defaults as a dict (the lazy configs' ``deepfashion2``):
    ``LENIENT``, ``CACHE`` and ``RETRIEVAL`` (the pair sampler is the train loader's)."""
    options = yaml_node().DEEPFASHION2
    return {k: _plain(v) for k, v in options.items() if k != "PAIR_SAMPLER"}


def _plain(v):
    from detectron2.config import CfgNode

    return {k: _plain(x) for k, x in v.items()} if isinstance(v, CfgNode) else v


def yaml_node(deepfashion2: dict | None = None, **model):
    """
    A YAML-style config holding the DeepFashion2 options (``deepfashion2``: the ``DEEPFASHION2``
    node as a dict, e.g. ``{"RETRIEVAL": {"GALLERY_PER_IMAGE": 10}}``) and the ``model`` flags
    given (``MASK_ON``, ``KEYPOINT_ON``, ``MATCH_ON``, ``MIN_KEYPOINTS_PER_IMAGE``): what the
    dataset and evaluation code, shared with the YAML path, reads.
    """
    from detectron2.config import CfgNode, get_cfg

    from .config import add_deepfashion2_config

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.DEEPFASHION2.merge_from_other_cfg(CfgNode(_upper(deepfashion2 or {})))
    for key, value in model.items():
        if key == "MIN_KEYPOINTS_PER_IMAGE":
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = value
        else:
            cfg.MODEL[key] = value
    return cfg


def _upper(d) -> dict:
    return {str(k).upper(): _upper(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def train_dataset(
    names, deepfashion2: dict | None = None, keypoints: bool = True, min_landmarks: int = 1
) -> list[dict]:
    """The training dicts of the splits ``names``, as the YAML trainer loads them."""
    from .engine.trainer import build_train_dataset_dicts

    cfg = yaml_node(deepfashion2, KEYPOINT_ON=keypoints, MIN_KEYPOINTS_PER_IMAGE=min_landmarks)
    cfg.DATASETS.TRAIN = (names,) if isinstance(names, str) else tuple(names)
    return build_train_dataset_dicts(cfg)


def test_dataset(name: str, deepfashion2: dict | None = None) -> list[dict]:
    """The dicts of one test split (the split's options from ``deepfashion2``)."""
    from .data import dataset_dicts

    return dataset_dicts(name, yaml_node(deepfashion2))


def train_loader(
    dataset: list[dict],
    mapper,
    total_batch_size: int,
    *,
    pair_sampler: bool = True,
    num_workers: int = 0,
):
    """
    Detectron2's training loader; with ``pair_sampler``, every per-process batch starts with a
    consumer photo and a shop photo of one garment (:class:`PairTrainingSampler`), as the YAML
    trainer does when the matching head is on.
    """
    if not pair_sampler:
        return build_detection_train_loader(
            dataset=dataset, mapper=mapper, total_batch_size=total_batch_size,
            num_workers=num_workers,
        )  # fmt: skip
    from .data.samplers import PairTrainingSampler

    sampler = PairTrainingSampler(dataset, total_batch_size // comm.get_world_size())
    logging.getLogger(__name__).info(
        f"Pair sampling: {sampler.num_pairable_images} of {len(dataset)} images have a "
        "consumer/shop partner."
    )
    return build_detection_train_loader(
        dataset=dataset, mapper=mapper, sampler=sampler, total_batch_size=total_batch_size,
        aspect_ratio_grouping=False, num_workers=num_workers,
    )  # fmt: skip


def evaluators(
    dataset_name: str,
    output_dir: str,
    *,
    masks: bool = True,
    landmarks: bool = True,
    retrieval: bool = True,
    kpt_oks_sigmas=None,
    deepfashion2: dict | None = None,
):
    """The DeepFashion2 evaluator of the split (boxes, and masks and landmarks when on) and, with
    ``retrieval``, the consumer-to-shop evaluator: the YAML trainer's ``build_evaluator``."""
    from .engine.trainer import Trainer

    cfg = yaml_node(deepfashion2, MASK_ON=masks, KEYPOINT_ON=landmarks, MATCH_ON=retrieval)
    if kpt_oks_sigmas is not None:  # default: DeepFashion2's 294
        cfg.TEST.KEYPOINT_OKS_SIGMAS = [float(s) for s in kpt_oks_sigmas]
    evaluator = Trainer.build_evaluator(cfg, dataset_name, output_dir)
    return evaluator if isinstance(evaluator, DatasetEvaluators) else DatasetEvaluators([evaluator])
