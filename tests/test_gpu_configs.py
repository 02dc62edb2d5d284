"""
The GPU configs (the real data's recipes) on CPU at a tiny input: each builds, carries the
retrieval recipe the demo measured (proxy loss sized for the real set, the RoI-pixel branch on
its backbone), and one training step gives finite losses and a gradient to every trainable
parameter. The ResNet-FPN that passes its input on is Detectron2's, parameter for parameter.
"""

import os

import pytest
import torch
from detectron2.modeling import build_backbone, build_model
from detectron2.structures import BitMasks, Boxes, Instances, Keypoints
from detectron2.utils.events import EventStorage

from deepfashion2 import landmarks as L
from deepfashion2.config import load_config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GPU_CONFIGS = [
    "mask_rcnn_landmarks_R_50_FPN_1x",
    "mask_rcnn_landmarks_R_50_FPN_3x",
    "mask_rcnn_landmarks_effnet_lite0_FPN_1x",
]
SMALL = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.TIMM.WEIGHTS", "",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
]  # fmt: skip


def _image(seed: int, category: int, match_id: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 90.0, 84.0]]))
    inst.gt_classes = torch.tensor([category - 1])
    mask = torch.zeros(1, 96, 128, dtype=torch.bool)
    mask[:, 12:84, 10:90] = True
    inst.gt_masks = BitMasks(mask)
    kp = torch.zeros(1, L.NUM_LANDMARKS, 3)
    own = L.CATEGORY_BY_ID[category].landmark_slice
    for k in range(own.start, own.stop):
        kp[0, k] = torch.tensor([12.0 + (k % 9) * 8, 14.0 + (k % 7) * 9, 2.0])
    inst.gt_keypoints = Keypoints(kp)
    inst.gt_match_ids = torch.tensor([match_id])
    return {"image": torch.rand(3, 96, 128, generator=g) * 255, "instances": inst,
            "height": 96, "width": 128}  # fmt: skip


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_a_gpu_config_trains_one_step_on_cpu_with_every_parameter_given_a_gradient(name):
    cfg = load_config(os.path.join(ROOT, "configs", f"{name}.yaml"), SMALL)
    assert cfg.MODEL.ROI_MATCH_HEAD.NUM_PROXIES == 65536
    assert cfg.MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION == 14
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert "image" in model.backbone.output_shape()
    batch = [_image(0, 1, 7001), _image(1, 1, 7001)]  # a consumer/shop pair of one garment
    with EventStorage():
        losses = model(batch)
    assert {"loss_cls", "loss_mask", "loss_keypoint", "loss_match_proxy"} <= set(losses)
    for k, v in losses.items():
        assert torch.isfinite(v), k
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:10]


def test_the_resnet_fpn_that_passes_its_input_on_is_detectrons():
    cfg = load_config(os.path.join(ROOT, "configs", f"{GPU_CONFIGS[0]}.yaml"), SMALL)
    torch.manual_seed(0)
    ours = build_backbone(cfg)
    stock_cfg = cfg.clone()
    stock_cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    stock = build_backbone(stock_cfg)
    assert {n: p.shape for n, p in ours.state_dict().items()} == {
        n: p.shape for n, p in stock.state_dict().items()
    }
    stock.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 96)
    a, b = ours(x), stock(x)
    assert a["image"] is x and set(a) - {"image"} == set(b)
    for k in b:
        torch.testing.assert_close(a[k], b[k])
