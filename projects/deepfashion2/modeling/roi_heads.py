"""``StandardROIHeads`` plus the matching (retrieval embedding) branch."""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import select_foreground_proposals
from detectron2.structures import Instances

from .match_head import build_match_head


@ROI_HEADS_REGISTRY.register()
class MatchROIHeads(StandardROIHeads):
    """
    Box, mask and landmark heads as ``StandardROIHeads``, plus a matching head
    (``MODEL.MATCH_ON``) that embeds every detected item, as Match R-CNN does. Training needs
    ``gt_match_ids`` on the targets (the DeepFashion2 mapper sets them).
    """

    @configurable
    def __init__(
        self,
        *,
        match_in_features: list[str] | None = None,
        match_pooler: ROIPooler | None = None,
        match_head: torch.nn.Module | None = None,
        match_image_pooler: ROIPooler | None = None,
        match_detach_features: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.match_on = match_in_features is not None
        if self.match_on:
            self.match_in_features = match_in_features
            self.match_pooler = match_pooler
            self.match_head = match_head
            self.match_image_pooler = match_image_pooler
            self.match_detach_features = match_detach_features

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_match_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_match_head(cls, cfg, input_shape):
        if not cfg.MODEL.MATCH_ON:
            return {}
        mh = cfg.MODEL.ROI_MATCH_HEAD
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        pooler = ROIPooler(
            output_size=mh.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=mh.POOLER_SAMPLING_RATIO,
            pooler_type=mh.POOLER_TYPE,
        )
        channels = input_shape[in_features[0]].channels
        shape = ShapeSpec(
            channels=channels, height=mh.POOLER_RESOLUTION, width=mh.POOLER_RESOLUTION
        )
        ret = {
            "match_in_features": in_features,
            "match_pooler": pooler,
            "match_detach_features": mh.DETACH_FEATURES,
        }
        image_shape = None
        if mh.IMAGE_POOLER_RESOLUTION > 0:
            if "image" not in input_shape:
                raise ValueError(
                    "MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION > 0 needs a backbone with an "
                    "'image' output (build_basic_resnet_fpn_backbone, build_timm_fpn_backbone); "
                    f"{cfg.MODEL.BACKBONE.NAME} gives {sorted(input_shape)}"
                )
            r = mh.IMAGE_POOLER_RESOLUTION
            ret["match_image_pooler"] = ROIPooler(
                output_size=r, scales=(1.0,), sampling_ratio=0, pooler_type=mh.POOLER_TYPE
            )
            image_shape = ShapeSpec(channels=input_shape["image"].channels, height=r, width=r)
        ret["match_head"] = build_match_head(cfg, shape, image_shape)
        return ret

    def forward(self, images, features, proposals, targets=None):
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training:
            losses.update(self._forward_match(features, instances))
        return instances, losses

    def forward_with_given_boxes(self, features, instances: list[Instances]) -> list[Instances]:
        instances = super().forward_with_given_boxes(features, instances)
        return self._forward_match(features, instances)

    def _forward_match(self, features, instances: list[Instances]):
        """Training: the loss on foreground RoIs of paired garments; inference: embeddings."""
        if not self.match_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = self.match_head.select_training_rois(instances)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        feats = [features[f] for f in self.match_in_features]
        if self.match_detach_features:
            feats = [f.detach() for f in feats]
        x = self.match_pooler(feats, boxes)
        pixels = None
        if self.match_image_pooler is not None:
            pixels = self.match_image_pooler([features["image"]], boxes)
        return self.match_head(x, instances, pixels)
