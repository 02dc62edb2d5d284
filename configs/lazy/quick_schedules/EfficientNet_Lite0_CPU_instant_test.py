"""Instant tests of the lazy CPU recipe, with the changes of the YAML one
(configs/quick_schedules/EfficientNet-Lite0-CPU_instant_test.yaml): tiny inputs, a few
iterations, no clipping; tests set the splits and the output folder themselves."""

import detectron2.data.transforms as T
import torch
from detectron2.config import LazyCall as L

from ..EfficientNet_Lite0_CPU import (  # noqa: F401  (the config's parts)
    dataloader,
    deepfashion2,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.proposal_generator.post_nms_topk = (300, 30)
dataloader.train.total_batch_size = 2
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(96,), sample_style="choice", max_size=128),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=96, max_size=128)]
optimizer._target_ = torch.optim.AdamW  # CLIP_GRADIENTS off
del optimizer.clip_value, optimizer.norm_type
train.max_iter = 40
lr_multiplier.scheduler.values = [1.0]
lr_multiplier.scheduler.milestones = []
lr_multiplier.warmup_length = 0.0
train.checkpointer.period = 1000
train.seed = 3
