"""
Test-time augmentation for the four tasks: the per-category channel permutation is checked
against the spec's flip pairs (not against the code), a flip-only TTA of a mirror-symmetric
garment gives the plain landmarks back (and a wrong permutation does not), TTA with only the
test size equals the plain model, and tools/train_net.py evaluates everything twice.
"""

import json

import numpy as np
import pytest
import torch
from conftest import SPEC
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from deepfashion2 import add_deepfashion2_config
from deepfashion2 import landmarks as L
from deepfashion2.model_zoo import get_config_file
from deepfashion2.modeling import DeepFashion2RCNNWithTTA
from deepfashion2.modeling import test_time_augmentation as T


def _spec_pairs(category: int) -> dict[int, int]:
    """0-based partner of each landmark of a 0-based category, from the spec's 1-based pairs."""
    spec = json.load(open(SPEC))["categories"][category]
    partner = {k: k for k in range(spec["num_landmarks"])}
    for a, b in spec["flip_pairs_1based_within_category"]:
        partner[a - 1], partner[b - 1] = b - 1, a - 1
    return partner


@pytest.mark.parametrize("category", range(13), ids=[c.name for c in L.CATEGORIES])
def test_unflipping_brings_every_landmark_back_to_its_own_channel(category):
    """
    Heatmaps H of an image: landmark k peaks at its own (row, column). The mirrored image's
    heatmap channel j holds the landmark that a flip names j, i.e. j's partner, at the mirrored
    column. Unflipping must give H back, channel by channel.
    """
    partner = _spec_pairs(category)
    k, s = len(partner), 16
    rng = np.random.default_rng(category)
    peaks = [(int(rng.integers(s)), int(rng.integers(s))) for _ in range(k)]
    h = torch.zeros(1, k, s, s)
    for i, (r, c) in enumerate(peaks):
        h[0, i, r, c] = 1.0
    flipped = torch.zeros_like(h)
    for j in range(k):
        r, c = peaks[partner[j]]
        flipped[0, j, r, s - 1 - c] = 1.0
    assert torch.equal(T.unflip_heatmaps(flipped, category), h)
    assert sum(partner[i] != i for i in range(k)) > 0  # every category has left/right pairs


def _cfg(**aug):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(get_config_file("Mini-CPU"))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.AUG.MIN_SIZES = aug.get("min_sizes", (cfg.INPUT.MIN_SIZE_TEST,))
    cfg.TEST.AUG.MAX_SIZE = cfg.INPUT.MAX_SIZE_TEST
    cfg.TEST.AUG.FLIP = aug.get("flip", False)
    return cfg


def _image(h=144, w=192, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.integers(0, 256, (3, h, w)), dtype=torch.uint8)


def test_tta_at_the_test_size_alone_is_the_plain_model():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = {"image": _image(), "height": 288, "width": 384, "image_id": 1}
    with torch.no_grad():
        plain = model([x])[0]["instances"]
        tta = DeepFashion2RCNNWithTTA(cfg, model)([x])[0]["instances"]
    assert len(plain) == len(tta) > 5
    assert torch.equal(plain.pred_classes, tta.pred_classes)
    torch.testing.assert_close(plain.scores, tta.scores)
    torch.testing.assert_close(plain.pred_boxes.tensor, tta.pred_boxes.tensor, atol=1e-3, rtol=0)
    torch.testing.assert_close(plain.pred_keypoints, tta.pred_keypoints, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(plain.pred_embeddings, tta.pred_embeddings, atol=1e-5, rtol=0)
    # masks pasted at the image size from boxes equal to 1e-3 px: a pixel may flip on an edge
    assert (plain.pred_masks != tta.pred_masks).float().mean() < 1e-3


def _symmetric_garment(category: int, h: int = 160, w: int = 192):
    """A garment of ``category`` drawn from its template, centred: the image is its own mirror."""
    from PIL import Image, ImageDraw

    from deepfashion2.data.synthetic import template

    outline, pos = template(L.CATEGORIES[category])
    box = np.array([w / 2 - 56.0, 20.0, w / 2 + 56.0, 140.0])
    scale, origin = box[2:] - box[:2], box[:2]
    img = Image.new("RGB", (w, h), (90, 120, 90))
    ImageDraw.Draw(img).polygon([tuple(p) for p in outline * scale + origin], fill=(200, 60, 60))
    half = np.asarray(img)[:, : w // 2]
    pixels = np.concatenate([half, half[:, ::-1]], axis=1)  # exactly symmetric
    image = torch.tensor(pixels[:, :, ::-1].copy()).permute(2, 0, 1)  # BGR, as the model reads
    return image, box.tolist(), pos * scale + origin


def _fit_landmark_head(model, image, box, category, landmarks, steps=400):
    """Train only the landmark head on this garment (a model that has learnt its landmarks,
    which are mirror-consistent as the synthetic set's are)."""
    from detectron2.structures import Keypoints

    roi = model.roi_heads
    with torch.no_grad():
        feats = model.backbone(model.preprocess_image([{"image": image}]).tensor)
        pooled = roi.keypoint_pooler([feats[f] for f in roi.keypoint_in_features], [Boxes([box])])
    kp = torch.zeros(1, L.NUM_LANDMARKS, 3)
    kp[0, L.CATEGORIES[category].landmark_slice] = torch.tensor(
        np.c_[landmarks, np.full(len(landmarks), 2.0)], dtype=torch.float32
    )
    inst = Instances(image.shape[1:], proposal_boxes=Boxes(torch.tensor([box])),
                     gt_classes=torch.tensor([category]), gt_keypoints=Keypoints(kp))  # fmt: skip
    head = roi.keypoint_head
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    head.train()
    for _ in range(steps):
        opt.zero_grad()
        head(pooled, [inst])["loss_keypoint"].backward()
        opt.step()
    head.eval()


def _landmarks(model, cfg, image, box, category, flip_tta: bool):
    h, w = image.shape[1:]
    inst = Instances((h, w), pred_boxes=Boxes(torch.tensor([box])),
                     pred_classes=torch.tensor([category]))  # fmt: skip
    x = {"image": image, "height": h, "width": w, "image_id": 1}
    with torch.no_grad():
        if flip_tta:
            out = DeepFashion2RCNNWithTTA(cfg, model).inference([x], detected_instances=[inst])
        else:
            out = model.inference([x], detected_instances=[inst])
    kp = out[0]["instances"].pred_keypoints[0, L.CATEGORIES[category].landmark_slice]
    return kp[:, :2]


@pytest.mark.parametrize("category", [0, 3, 6, 12])  # tops, outwear, shorts, sling dress
def test_flip_tta_of_a_mirror_symmetric_garment_gives_the_plain_landmarks(category, monkeypatch):
    """
    The flipped input is the image itself: its heatmaps, flipped back and permuted by the
    category's pairs, must agree with the plain ones, so the average decodes to the plain
    landmarks. Without the permutation each paired landmark is averaged with its partner's
    mirror image and lands on either side.
    """
    image, box, landmarks = _symmetric_garment(category)
    cfg = _cfg(flip=True, min_sizes=(min(image.shape[1:]),))  # the image's own size, and flipped
    torch.manual_seed(category)
    model = build_model(cfg).eval()
    _fit_landmark_head(model, image, box, category, landmarks)
    truth = torch.tensor(landmarks, dtype=torch.float32)
    plain = _landmarks(model, cfg, image, box, category, False)
    size = box[2] - box[0]
    tta = _landmarks(model, cfg, image, box, category, True)
    assert (plain - truth).norm(dim=1).max() < 0.1 * size  # it has learnt them
    assert (tta - plain).norm(dim=1).max() < 0.05 * size
    k = len(plain)
    monkeypatch.setattr(T, "category_flip_permutation", lambda c: torch.arange(k))
    wrong = _landmarks(model, cfg, image, box, category, True)
    assert (wrong - plain).norm(dim=1).max() > 0.2 * size


@pytest.mark.slow
@pytest.mark.usefixtures("tiny_split")
def test_train_net_evaluates_all_four_benchmarks_twice_with_tta(tmp_path):
    from detectron2.engine import default_argument_parser
    from test_training import CONFIG, tiny_opts, train_net

    def run(*argv):
        return train_net.main(
            default_argument_parser().parse_args(["--config-file", CONFIG, *argv])
        )

    run(*tiny_opts(tmp_path, 2))
    aug = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(80, 96)", "TEST.AUG.MAX_SIZE", "160"]
    weights = str(tmp_path / "model_final.pth")
    opts = tiny_opts(tmp_path / "eval", 2, "MODEL.WEIGHTS", weights, *aug, test=True)
    res = run("--eval-only", *opts)
    tasks = {"bbox", "segm", "keypoints", "keypoints_vis", "retrieval", "retrieval_gt_boxes"}
    assert set(res) == tasks | {t + "_TTA" for t in tasks}
    assert set(res["retrieval_TTA"]) == set(res["retrieval"])
    tta = tmp_path / "eval" / "inference_TTA"
    assert "Landmark estimation" in (tta / "deepfashion2_tables.md").read_text()
    assert (tta / "retrieval_submission.json").exists()
    assert (tmp_path / "eval" / "inference" / "deepfashion2_tables.md").exists()
