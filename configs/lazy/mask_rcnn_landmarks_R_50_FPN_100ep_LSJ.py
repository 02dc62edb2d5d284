"""
Detectron2's strongest Mask R-CNN recipe, its "new baselines" (configs/new_baselines/
mask_rcnn_R_50_FPN_100ep_LSJ.py: 44.6 box / 40.3 mask AP on COCO against 41.0 / 37.2 for the 3x
YAML recipe), for DeepFashion2's four benchmarks: R-50-FPN trained from scratch with SyncBN,
large-scale jitter, a 4conv1fc box head, AMP, 100 epochs of the 191,961 training images at 64
images per batch; the DeepFashion2 heads (landmarks by category, the matching head with the
proxy loss and the RoI-pixel branch), the pair sampler and the DeepFashion2 evaluators.

    python tools/lazyconfig_train_net.py --num-gpus 8 \\
        --config-file configs/lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ.py

Not trained by this project (no GPU, no real data here): docs/TRAINING.md says what it costs.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers.batch_norm import NaiveSyncBatchNorm
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .common.data.deepfashion2 import dataloader, deepfashion2  # noqa: F401
from .common.models.deepfashion2_rcnn_fpn import deepfashion2_heads
from .common.optim import SGD as optimizer
from .common.train import train

TRAIN_IMAGES = 191_961  # DeepFashion2's released training split
BATCH = 64
EPOCHS = 100

baseline = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
model = deepfashion2_heads(baseline.model)  # SyncBN, 2-conv RPN, 4conv1fc, from scratch
# the new heads normalised as the baseline's box and mask heads are (empty inputs allowed)
model.roi_heads.match_head.conv_norm = lambda c: NaiveSyncBatchNorm(c, stats_mode="N")

# Large-scale jitter at DeepFashion2's sizes: its photos are ~468 x 624 (long side at most
# ~830), so 1024 px gives them the YAML recipe's magnification (short side 800 of 468) at scale 1.
image_size = 1024
dataloader.train.mapper.augmentations = [
    L(T.ResizeScale)(
        min_scale=0.1, max_scale=2.0, target_height=image_size, target_width=image_size
    ),
    L(T.FixedSizeCrop)(crop_size=(image_size, image_size)),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.recompute_boxes = True  # boxes again from the cropped masks
dataloader.train.total_batch_size = BATCH
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)
]

train.init_checkpoint = ""  # from scratch, as the baseline
train.amp.enabled = True
train.ddp.fp16_compression = True
train.max_iter = round(EPOCHS * TRAIN_IMAGES / BATCH)  # 299,939 iterations = 100 epochs
train.eval_period = round(10 * TRAIN_IMAGES / BATCH)  # every 10 epochs
train.checkpointer.period = round(5 * TRAIN_IMAGES / BATCH)
train.output_dir = "output/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ"

# the baseline's schedule, by the same fractions of the run: steps at 88.9% and 96.3%
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[
            round(train.max_iter * 163889 / 184375),
            round(train.max_iter * 177546 / 184375),
        ],
        num_updates=train.max_iter,
    ),
    warmup_length=500 / train.max_iter,
    warmup_factor=0.067,
)
optimizer.lr = 0.1
optimizer.weight_decay = 4e-5
