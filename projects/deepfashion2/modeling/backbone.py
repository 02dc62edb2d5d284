"""
A basic-block ResNet (the R-18/34 layout) of any width, with FPN: the backbone of the small CPU
models trained from scratch (the demo). Detectron2's builder fixes R-18/34 at 64 channels in res2
(``RES2_OUT_CHANNELS`` must be 64); on CPU most of a training step is spent in the backbone's
convolutions, whose cost grows with the square of the width.
"""

from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone import FPN, ResNet, build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem

_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def build_basic_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """``MODEL.RESNETS.DEPTH`` 18 or 34, res2 width ``RES2_OUT_CHANNELS``, doubling per stage."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS:
        raise ValueError(f"basic-block ResNet: MODEL.RESNETS.DEPTH must be 18 or 34, not {r.DEPTH}")
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_ch, out_ch = [], r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, n in enumerate(_BLOCKS[r.DEPTH]):
        stride = 1 if i == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                n,
                stride_per_block=[stride] + [1] * (n - 1),
                in_channels=in_ch,
                out_channels=out_ch,
                norm=r.NORM,
            )
        )
        in_ch, out_ch = out_ch, out_ch * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


class FPNWithImage(FPN):
    """
    FPN whose outputs also hold ``"image"``: the (normalised) input itself, stride 1, for heads
    that pool pixels (``MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION``). Other heads ignore it:
    they read only their ``IN_FEATURES``. Parameters are FPN's, under the same names.
    """

    def __init__(self, *args, image_channels: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._image_shape = ShapeSpec(channels=image_channels, stride=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**super().forward(x), "image": x}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {**super().output_shape(), "image": self._image_shape}


def build_fpn(cfg, bottom_up: Backbone, input_shape: ShapeSpec) -> FPN:
    """
    Detectron2's FPN on ``bottom_up`` as the stock builder makes it (``MODEL.FPN``, a max-pooled
    p6), plus the ``"image"`` output when the matching head pools pixels.
    """
    image = cfg.MODEL.MATCH_ON and cfg.MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION > 0
    extra = {"image_channels": input_shape.channels} if image else {}
    return (FPNWithImage if image else FPN)(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        **extra,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_image_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """
    Detectron2's ResNet-FPN (``build_resnet_fpn_backbone``: the same parameters under the same
    names, so its ImageNet and COCO checkpoints load as they are), plus the ``"image"`` output
    when the matching head pools the RoIs' pixels: the GPU configs' backbone.
    """
    return build_fpn(cfg, build_resnet_backbone(cfg, input_shape), input_shape)


@BACKBONE_REGISTRY.register()
def build_basic_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_basic_resnet_fpn_backbone``: :func:`build_fpn` on it."""
    return build_fpn(cfg, build_basic_resnet(cfg, input_shape), input_shape)
