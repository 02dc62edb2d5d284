"""The 100-epoch new-baseline recipe, 400 epochs (Detectron2's 47.4 box / 42.5 mask on COCO):
the longest schedule and the best figures of its family, at four times the cost."""

from .mask_rcnn_landmarks_R_50_FPN_100ep_LSJ import (  # noqa: F401  (the config's parts)
    BATCH,
    TRAIN_IMAGES,
    dataloader,
    deepfashion2,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.max_iter = round(400 * TRAIN_IMAGES / BATCH)  # 1,199,756 iterations
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.scheduler.milestones = [
    round(train.max_iter * 163889 / 184375),
    round(train.max_iter * 177546 / 184375),
]
lr_multiplier.warmup_length = 500 / train.max_iter
train.output_dir = "output/mask_rcnn_landmarks_R_50_FPN_400ep_LSJ"
