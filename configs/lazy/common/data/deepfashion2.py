"""
DeepFashion2's data as a LazyConfig: the registered splits (``deepfashion2_train`` /
``deepfashion2_validation``: ``$DETECTRON2_DATASETS/deepfashion2``), the mapper that expands the
compact landmarks, the pair sampler (each batch starts with a consumer and a shop photo of one
garment) and the DeepFashion2 evaluators (boxes, masks, landmarks with the 294 OKS sigmas, and
consumer-to-shop retrieval). ``deepfashion2``: the YAML's ``DEEPFASHION2`` options, one dict.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from detectron2.data.detection_utils import create_keypoint_hflip_indices
from omegaconf import OmegaConf

from deepfashion2.data.mapper import DeepFashion2Mapper
from deepfashion2.landmarks import OKS_SIGMAS
from deepfashion2.lazy import (
    deepfashion2_options,
    evaluators,
    test_dataset,
    train_dataset,
    train_loader,
)

# the YAML's DEEPFASHION2 node (deepfashion2/config.py: LENIENT, CACHE, RETRIEVAL.*), by reference
deepfashion2 = deepfashion2_options()

dataloader = OmegaConf.create()

dataloader.train = L(train_loader)(
    dataset=L(train_dataset)(names=["deepfashion2_train"], deepfashion2="${deepfashion2}"),
    mapper=L(DeepFashion2Mapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=(640, 672, 704, 736, 768, 800),
                sample_style="choice",
                max_size=1333,
            ),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
        use_keypoint=True,
        keypoint_hflip_indices=L(create_keypoint_hflip_indices)(
            dataset_names="${...dataset.names}"
        ),
    ),
    total_batch_size=16,
    pair_sampler=True,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(test_dataset)(name="deepfashion2_validation", deepfashion2="${deepfashion2}"),
    mapper=L(DeepFashion2Mapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(evaluators)(
    dataset_name="${..test.dataset.name}",
    output_dir="./output/inference",
    kpt_oks_sigmas=OKS_SIGMAS.tolist(),  # the official evaluation's, per landmark
    deepfashion2="${deepfashion2}",
)
