"""The category-gated landmark head: shapes, masking, loss parity with the stock head."""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import build_keypoint_head
from detectron2.modeling.roi_heads.keypoint_head import keypoint_rcnn_loss
from detectron2.structures import Boxes, Instances, Keypoints

from deepfashion2 import add_deepfashion2_config
from deepfashion2 import landmarks as L
from deepfashion2.modeling import CategoryKeypointHead


def _cfg(visible=True):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NAME = "CategoryKeypointHead"
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 294
    cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = (8, 8)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS = visible
    return cfg


def _instances(classes, size=64, train=True, seed=0):
    """One image's RoIs with per-category ground-truth landmarks (other slots unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    n = len(classes)
    boxes = torch.tensor([[4.0 + i, 6.0, 44.0 + i, 50.0] for i in range(n)])
    gt = torch.zeros(n, 294, 3)
    for i, c in enumerate(classes):
        sl = L.CATEGORIES[c].landmark_slice
        k = L.CATEGORIES[c].num_landmarks
        gt[i, sl, 0] = 4 + torch.rand(k, generator=g) * 40
        gt[i, sl, 1] = 6 + torch.rand(k, generator=g) * 44
        gt[i, sl, 2] = torch.randint(0, 3, (k,), generator=g).float()
    inst = Instances((size, size))
    if train:
        inst.proposal_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor(classes)
        inst.gt_keypoints = Keypoints(gt)
    else:
        inst.pred_boxes = Boxes(boxes)
        inst.pred_classes = torch.tensor(classes)
    return inst


def test_registered_and_built_from_config():
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7))
    assert isinstance(head, CategoryKeypointHead)
    assert head.score_lowres.weight.shape == (8, 294, 4, 4)  # stock parameter layout


def test_inference_only_emits_the_predicted_category():
    torch.manual_seed(0)
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7)).eval()
    classes = [0, 12, 7, 0, 3]
    inst = [_instances(classes[:3], train=False), _instances(classes[3:], train=False)]
    with torch.no_grad():
        head(torch.randn(5, 4, 7, 7), inst)
    pk = torch.cat([i.pred_keypoints for i in inst])
    assert pk.shape == (5, 294, 3)
    for row, c in zip(pk, classes):
        own = torch.zeros(294, dtype=torch.bool)
        own[L.CATEGORIES[c].landmark_slice] = True
        assert (row[~own] == 0).all()  # nothing outside the category, score 0 included
        assert (row[own, 2] > 0).all()  # every own landmark gets a score
        x, y = row[own, 0], row[own, 1]
        assert ((x >= 4) & (x <= 48) & (y >= 6) & (y <= 50)).all()  # inside its box


def test_heatmap_channels_computed_per_category():
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7))
    out = head.predict(head.trunk(torch.randn(3, 4, 7, 7)), torch.tensor([2, 2, 8]))
    assert [(c, idx.tolist(), tuple(lg.shape)) for c, idx, lg in out] == [
        (2, [0, 1], (2, 31, 28, 28)),
        (8, [2], (1, 8, 28, 28)),
    ]
    with pytest.raises(ValueError, match="sorted by category"):
        head.predict(head.trunk(torch.randn(3, 4, 7, 7)), torch.tensor([8, 2, 2]))


def _stock_equivalent(head):
    """The stock 294-channel computation with the same weights."""

    def logits(x):
        y = torch.nn.functional.conv_transpose2d(
            head.trunk(x), head.score_lowres.weight, head.score_lowres.bias, stride=2, padding=1
        )
        return torch.nn.functional.interpolate(
            y, scale_factor=2, mode="bilinear", align_corners=False
        )

    return logits


def test_loss_equals_the_stock_loss():
    for visible in (True, False):
        torch.manual_seed(1)
        cfg = _cfg(visible)
        head = build_keypoint_head(cfg, ShapeSpec(channels=4, height=7, width=7)).train()
        inst = [_instances([0, 5, 5, 12], seed=2), _instances([8, 10], seed=3)]
        x = torch.randn(6, 4, 7, 7)
        ours = head(x, inst)["loss_keypoint"]
        normalizer = None if visible else 2 * head.loss_normalizer
        stock = keypoint_rcnn_loss(_stock_equivalent(head)(x), inst, normalizer)
        assert torch.allclose(ours, stock, rtol=0, atol=1e-5), (visible, ours, stock)


def test_loss_on_a_hand_built_case():
    """One RoI, one labelled landmark: the loss is -log softmax at the landmark's heatmap cell."""
    torch.manual_seed(0)
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7)).train()
    inst = _instances([8])  # skirt: 8 landmarks
    gt = torch.zeros(1, 294, 3)
    s = L.CATEGORIES[8].start
    gt[0, s + 3] = torch.tensor([24.0, 28.0, 1.0])  # occluded but labelled: supervised
    gt[0, s + 4] = torch.tensor([30.0, 30.0, 0.0])  # unlabelled: ignored
    inst.gt_keypoints = Keypoints(gt)
    x = torch.randn(1, 4, 7, 7)
    loss = head(x, [inst])["loss_keypoint"]
    logits = _stock_equivalent(head)(x)[0, s + 3].reshape(-1)
    (target,), _ = Keypoints(gt[:, s + 3 : s + 4]).to_heatmap(inst.proposal_boxes.tensor, 28)
    expected = -torch.log_softmax(logits, 0)[target[0]]
    assert torch.allclose(loss, expected, atol=1e-5)


def test_gradients_only_reach_the_categories_in_the_batch():
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7)).train()
    head(torch.randn(2, 4, 7, 7), [_instances([6, 6])])["loss_keypoint"].backward()
    g = head.score_lowres.weight.grad.abs().sum((0, 2, 3)).numpy()
    own = np.zeros(294, dtype=bool)
    own[L.CATEGORIES[6].landmark_slice] = True
    assert (g[~own] == 0).all() and (g[own] > 0).any()


def test_no_foreground_keeps_a_differentiable_zero():
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7)).train()
    loss = head(torch.randn(0, 4, 7, 7), [_instances([])])["loss_keypoint"]
    loss.backward()
    assert loss.item() == 0 and head.score_lowres.weight.grad is not None


def test_the_traceable_inference_gives_eager_landmarks_for_any_mix_of_categories():
    """A trace of the head's inference made on one mix of categories answers another mix as the
    eager head does (a trace of the eager path froze the per-category split sizes)."""
    torch.manual_seed(0)
    head = build_keypoint_head(_cfg(), ShapeSpec(channels=4, height=7, width=7)).eval()

    class Traceable(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, x, classes, boxes):
            return self.head.traceable_inference(x, classes, boxes)

    def rois(classes, seed):
        g = torch.Generator().manual_seed(seed)
        n = len(classes)
        x = torch.randn(n, 4, 7, 7, generator=g)
        xy = torch.rand(n, 2, generator=g) * 50
        boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 60], 1)
        return x, torch.tensor(classes), boxes

    def eager(x, classes, boxes):
        inst = Instances((200, 200), pred_boxes=Boxes(boxes), pred_classes=classes)
        with torch.no_grad():
            return head(x, [inst])[0].pred_keypoints

    first = rois([0, 0, 3, 12], 0)
    with torch.no_grad():
        traced = torch.jit.trace(Traceable(head), first)
    for classes, seed in (([0, 0, 3, 12], 0), ([5, 1, 1, 1, 9, 4, 12], 1), ([7], 2)):
        x, c, b = rois(classes, seed)
        want = eager(x, c, b)
        with torch.no_grad():
            got = traced(x, c, b)
        assert got.shape == want.shape == (len(classes), L.NUM_LANDMARKS, 3)
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
        outside = ~(torch.as_tensor(L.LANDMARK_CATEGORY)[None, :] == c[:, None])
        assert (got[outside] == 0).all()
