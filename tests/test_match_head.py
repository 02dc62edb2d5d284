"""The matching head: its pixel branch (IMAGE_POOLER_RESOLUTION), its proxy loss (NUM_PROXIES)."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from deepfashion2 import add_deepfashion2_config
from deepfashion2.model_zoo import get_config_file
from deepfashion2.modeling import build_match_head
from deepfashion2.modeling.match_head import proxy_identity_loss, proxy_slots


def _cfg(image_resolution=14, backbone=None):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(get_config_file("Mini-CPU"))
    cfg.MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION = image_resolution
    if backbone:  # Detectron2's own R-18 FPN
        cfg.MODEL.BACKBONE.NAME = backbone
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    return cfg


def test_backbone_passes_the_input_and_keeps_fpn_parameter_names():
    torch.manual_seed(0)
    with_image, without = build_model(_cfg(14)), build_model(_cfg(0))
    assert "image" in with_image.backbone.output_shape()
    assert "image" not in without.backbone.output_shape()
    # the same parameters under the same names: checkpoints load either way
    assert [n for n, _ in with_image.named_parameters() if "match_head" not in n] == [
        n for n, _ in without.named_parameters() if "match_head" not in n
    ]
    x = torch.randn(1, 3, 64, 64)
    out = with_image.backbone(x)
    assert out["image"] is x and {"p2", "p6"} <= set(out)


def test_embedding_sees_each_box_own_pixels():
    """Two boxes over the same shape in different colours: the embedding of each is computed
    from its own pooled pixels (swapping them changes it)."""
    torch.manual_seed(0)
    model = build_model(_cfg(14)).eval()
    img = torch.full((3, 64, 128), 128.0)
    img[0, 16:48, 8:56] = 255.0  # a red square on the left, a blue one on the right
    img[2, 16:48, 72:120] = 255.0
    inst = Instances((64, 128))
    inst.pred_boxes = Boxes(torch.tensor([[8.0, 16.0, 56.0, 48.0], [72.0, 16.0, 120.0, 48.0]]))
    inst.pred_classes = torch.tensor([0, 0])
    with torch.no_grad():
        (out,) = model.inference([{"image": img}], detected_instances=[inst], do_postprocess=False)
        emb = out.pred_embeddings
        head = model.roi_heads.match_head
        pixels = model.roi_heads.match_image_pooler(
            [model.preprocess_image([{"image": img}]).tensor], [inst.pred_boxes]
        )
    assert pixels.shape == (2, 3, 14, 14)
    assert pixels[0, 0].mean() > pixels[1, 0].mean() and pixels[1, 2].mean() > pixels[0, 2].mean()
    with torch.no_grad():
        feats = model.roi_heads.match_pooler(
            [
                model.backbone(model.preprocess_image([{"image": img}]).tensor)[f]
                for f in model.roi_heads.match_in_features
            ],
            [inst.pred_boxes],
        )
        own = head.embeddings(feats, pixels)
        swapped = head.embeddings(feats, pixels[[1, 0]])
    torch.testing.assert_close(own, emb)
    assert float((swapped - emb).abs().max()) > 1e-3


def test_head_built_for_pixels_refuses_to_run_without_them():
    head = build_match_head(
        _cfg(14),
        ShapeSpec(channels=8, height=7, width=7),
        ShapeSpec(channels=3, height=14, width=14),
    )
    with pytest.raises(ValueError, match="pixels"):
        head.embeddings(torch.randn(2, 8, 7, 7))
    assert head.embeddings(torch.randn(2, 8, 7, 7), torch.randn(2, 3, 14, 14)).shape == (2, 128)


def test_pixels_need_a_backbone_that_gives_them():
    with pytest.raises(ValueError, match="'image' output.*build_resnet_fpn_backbone"):
        build_model(_cfg(14, backbone="build_resnet_fpn_backbone"))


@pytest.mark.parametrize("detach", [False, True])
def test_detached_features_keep_the_match_loss_out_of_the_backbone(detach):
    torch.manual_seed(0)
    cfg = _cfg(14)
    cfg.MODEL.ROI_MATCH_HEAD.DETACH_FEATURES = detach
    heads = build_model(cfg).roi_heads.train()
    shapes = {f: s for f, s in build_model(cfg).backbone.output_shape().items() if f != "image"}
    feats = {
        f: torch.randn(2, s.channels, 64 // s.stride, 64 // s.stride, requires_grad=True)
        for f, s in shapes.items()
    }
    feats["image"] = torch.randn(2, 3, 64, 64)
    instances = []
    for _ in range(2):  # garments 0 and 1 in both images: cross-image positives
        inst = Instances((64, 64))
        inst.proposal_boxes = Boxes(torch.tensor([[4.0, 4.0, 30.0, 40.0], [30.0, 8.0, 60.0, 60.0]]))
        inst.gt_classes = torch.tensor([0, 7])
        inst.gt_match_ids = torch.tensor([0, 1])
        instances.append(inst)
    loss = heads._forward_match(feats, instances)["loss_match"]
    loss.backward()
    reached = [f for f in heads.match_in_features if feats[f].grad is not None]
    assert bool(reached) != detach
    assert heads.match_head.fc.weight.grad.abs().sum() > 0  # the head itself always learns


def test_proxy_slots_spread_identities_numbered_as_the_dataset_numbers_them():
    ids = torch.tensor([p * 1000 + s for p in range(1, 101) for s in (1, 2)])  # the demo's
    slots = proxy_slots(ids, 4096)
    assert len(set(slots.tolist())) == 200 and 0 <= int(slots.min()) and int(slots.max()) < 4096
    assert proxy_slots(torch.tensor([1001, 1002, 2001]), 4096).tolist() == [2670, 1106, 2809]
    # numbered like the real set (15,000 pairs, 3 styles): fewer shared slots than at random
    # (45,000 uniform draws of 65,536 fill ~32,500); the low bits alone would fill 24,576
    real = torch.tensor([p * 1000 + s for p in range(1, 15001) for s in (1, 2, 3)])
    assert len(set(proxy_slots(real, 65536).tolist())) > 40000


def test_proxy_loss_prefers_each_identity_at_its_own_proxy():
    torch.manual_seed(0)
    proxies = torch.nn.functional.normalize(torch.randn(64, 8), dim=1).requires_grad_()
    ids = torch.tensor([1001, 1002, 2001, 2002])
    own = torch.nn.functional.normalize(proxies[proxy_slots(ids, 64)].detach(), dim=1)
    good = proxy_identity_loss(own, ids, proxies, 0.1)
    bad = proxy_identity_loss(own[[1, 0, 3, 2]], ids, proxies, 0.1)
    assert good < 0.5 < bad
    bad.backward()
    assert proxies.grad.abs().sum() > 0


def test_head_with_proxies_adds_their_loss_and_keeps_every_parameter_in_the_graph():
    torch.manual_seed(0)
    cfg = _cfg(0)
    cfg.MODEL.ROI_MATCH_HEAD.NUM_PROXIES = 32
    shape = ShapeSpec(channels=8, height=7, width=7)
    head = build_match_head(cfg, shape).train()
    assert head.proxies.shape == (32, cfg.MODEL.ROI_MATCH_HEAD.EMBED_DIM)
    x = torch.randn(4, 8, 7, 7)
    insts = []
    for _ in range(2):
        inst = Instances((64, 64))
        inst.gt_match_ids = torch.tensor([1001, 2001])
        insts.append(inst)
    losses = head(x, insts)
    assert set(losses) == {"loss_match", "loss_match_proxy"} and losses["loss_match_proxy"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    head.zero_grad(set_to_none=True)
    empty = [inst[:0] for inst in insts]  # no paired garment in the batch: zero, still in the graph
    losses = head(x[:0], empty)
    assert float(losses["loss_match_proxy"]) == 0.0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("name,proxies", [("EfficientNet-Lite0-CPU", 4096), ("Mini-CPU", 0)])
def test_demo_config_trains_with_proxies(name, proxies):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(get_config_file(name))  # Mini-CPU: as its figures were measured
    assert cfg.MODEL.ROI_MATCH_HEAD.NUM_PROXIES == proxies
