from .backbone import build_basic_resnet_fpn_backbone  # noqa: F401 (registers)
from .keypoint_head import CategoryKeypointHead, category_keypoint_loss  # noqa: F401 (registers)
from .match_head import (
    ROI_MATCH_HEAD_REGISTRY,
    MatchEmbeddingHead,
    build_match_head,
    cross_image_contrastive_loss,
)
from .roi_heads import MatchROIHeads

__all__ = [
    "build_basic_resnet_fpn_backbone",
    "CategoryKeypointHead",
    "MatchEmbeddingHead",
    "MatchROIHeads",
    "ROI_MATCH_HEAD_REGISTRY",
    "build_match_head",
    "category_keypoint_loss",
    "cross_image_contrastive_loss",
]
