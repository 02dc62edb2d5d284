"""
The DeepFashion2 model as a LazyConfig: Mask R-CNN R-50-FPN plus landmarks by category and the
matching head, one model for the four benchmarks. The same model as the YAML GPU configs
(configs/Base-DeepFashion2-GPU.yaml): R-50-FPN passing its input on to the matching head's pixel
branch, the proxy loss sized for the real training set (65,536 slots), 13 classes, 294 landmarks.
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.poolers import ROIPooler

from deepfashion2.modeling.backbone import FPNWithImage
from deepfashion2.modeling.keypoint_head import CategoryKeypointHead
from deepfashion2.modeling.match_head import MatchEmbeddingHead
from deepfashion2.modeling.roi_heads import MatchROIHeads


def deepfashion2_heads(model):
    """
    A Detectron2 Mask R-CNN FPN tree made the DeepFashion2 model: 13 classes, the FPN passing
    its input on, landmarks by category (CategoryKeypointHead, 294 channels, each RoI's own
    category's), the matching head with the proxy loss and the RoI-pixel branch. In place.
    """
    model.backbone._target_ = FPNWithImage  # FPN's parameters, plus the "image" output
    model.backbone.image_channels = 3
    # Base-Keypoint-RCNN-FPN.yaml: 1000 proposals per image hurt keypoint models' box AP
    model.proposal_generator.post_nms_topk = (1500, 1000)
    heads = model.roi_heads
    heads._target_ = MatchROIHeads
    heads.num_classes = 13
    heads.box_predictor.smooth_l1_beta = 0.5  # keypoint AP degrades with plain L1
    heads.update(
        keypoint_in_features=["p2", "p3", "p4", "p5"],
        keypoint_pooler=L(ROIPooler)(
            output_size=14,
            scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        keypoint_head=L(CategoryKeypointHead)(
            input_shape=ShapeSpec(channels=256, width=14, height=14),
            conv_dims=[512] * 8,
            loss_weight=1.0,
            loss_normalizer="visible",
        ),
        match_in_features=["p2", "p3", "p4", "p5"],
        match_pooler=L(ROIPooler)(
            output_size=7,
            scales=(1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32),
            sampling_ratio=0,
            pooler_type="ROIAlignV2",
        ),
        # the RoI's own pixels: colour and pattern, which the detection features learn to ignore
        match_image_pooler=L(ROIPooler)(
            output_size=14, scales=(1.0,), sampling_ratio=0, pooler_type="ROIAlignV2"
        ),
        match_head=L(MatchEmbeddingHead)(
            input_shape=ShapeSpec(channels=256, height=7, width=7),
            image_shape=ShapeSpec(channels=3, height=14, width=14),
            conv_dims=[256, 256],
            fc_dim=1024,
            embed_dim=256,
            # a proxy per training identity (docs/TRAINING.md): every RoI meets every garment
            num_proxies=65536,
        ),
        match_detach_features=False,
    )
    return model


# Detectron2's own Mask R-CNN R-50-FPN (the YAML GPU configs' model), made DeepFashion2's
model = deepfashion2_heads(get_config("common/models/mask_rcnn_fpn.py").model)
model.backbone.bottom_up.freeze_at = 2  # Detectron2's YAML default (MODEL.BACKBONE.FREEZE_AT)
