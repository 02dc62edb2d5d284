from .backbone import build_basic_resnet_fpn_backbone  # noqa: F401 (registers)
from .keypoint_head import CategoryKeypointHead, category_keypoint_loss  # noqa: F401 (registers)
from .match_head import (
    ROI_MATCH_HEAD_REGISTRY,
    MatchEmbeddingHead,
    build_match_head,
    cross_image_contrastive_loss,
)
from .roi_heads import MatchROIHeads
from .test_time_augmentation import DeepFashion2RCNNWithTTA, with_tta
from .timm_backbone import TimmBackbone, build_timm_fpn_backbone  # noqa: F401 (registers)

__all__ = [
    "build_basic_resnet_fpn_backbone",
    "build_timm_fpn_backbone",
    "TimmBackbone",
    "CategoryKeypointHead",
    "DeepFashion2RCNNWithTTA",
    "MatchEmbeddingHead",
    "MatchROIHeads",
    "ROI_MATCH_HEAD_REGISTRY",
    "build_match_head",
    "category_keypoint_loss",
    "cross_image_contrastive_loss",
    "with_tta",
]
