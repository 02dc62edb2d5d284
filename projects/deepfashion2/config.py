import os

import yaml
from detectron2.config import CfgNode as CN

from .errors import FileError

# DEEPFASHION2.RETRIEVAL, in one place: the config's defaults and RetrievalEvaluator's arguments
RETRIEVAL_DEFAULTS = {
    # Detections per consumer image used as queries and per shop image kept in the gallery (best
    # scores first), and the score floor.
    "MAX_PER_IMAGE": 10,
    "GALLERY_PER_IMAGE": 3,
    "MIN_SCORE": 0.05,
    # Rank only gallery items predicted as the query's category.
    "SAME_CATEGORY": True,
    # "exact", "faiss" or "auto" (FAISS above EXACT_MAX_GALLERY gallery items).
    "INDEX": "auto",
    "EXACT_MAX_GALLERY": 200_000,
    # The same for a catalogue (tools/index_catalogue.py), per category. It is searched one photo
    # at a time, where exact search grows linearly with the category's size and FAISS IVF hardly
    # (bench/catalogue.py measures where they cross: docs/PERFORMANCE.md). The evaluator ranks all
    # queries in one matrix product, where exact search stays cheap far longer.
    "CATALOGUE_EXACT_MAX": 10_000,
    # Also score the ground-truth-box variant (embedding only, no detector) at evaluation.
    "GT_BOXES": True,
}


def add_deepfashion2_config(cfg: CN) -> None:
    """
    Add the DeepFashion2 options to a Detectron2 config. The landmark head itself is configured
    with the stock keys (``MODEL.ROI_KEYPOINT_HEAD.NAME: CategoryKeypointHead``,
    ``NUM_KEYPOINTS: 294``); the OKS sigmas come from the dataset metadata unless
    ``TEST.KEYPOINT_OKS_SIGMAS`` is set.
    """
    # "SGD" (Detectron2's) or "AdamW": converges in far fewer iterations when a small model trains
    # from scratch (the CPU demo); the SOLVER's LR, weight decay, clipping and schedule apply.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Periodic checkpoints kept on disk, newest first (model_final always stays): 0 keeps them all,
    # as Detectron2 does; --resume needs only the newest.
    cfg.SOLVER.CHECKPOINTS_TO_KEEP = 0

    cfg.DEEPFASHION2 = CN()
    # Lenient loading: skip malformed items (counted and logged) instead of stopping at the first.
    # Applies wherever data is built from the config (trainer, evaluators, demo).
    cfg.DEEPFASHION2.LENIENT = False
    # Cache parsed splits (rebuilt when any file changes; $DF2_CACHE=0 also turns it off).
    cfg.DEEPFASHION2.CACHE = True
    # Batches of consumer + shop photos of the same garment when the matching head trains.
    cfg.DEEPFASHION2.PAIR_SAMPLER = True

    # Consumer-to-shop retrieval (MatchROIHeads + RetrievalEvaluator): RETRIEVAL_DEFAULTS.
    cfg.DEEPFASHION2.RETRIEVAL = CN(dict(RETRIEVAL_DEFAULTS))

    # A timm backbone under the FPN (MODEL.BACKBONE.NAME: build_timm_fpn_backbone;
    # deepfashion2.modeling.timm_backbone): the timm model, its feature levels fed to the FPN
    # (named res2..res5 by stride), "FrozenBN" or "BN", the weights frozen up to a level, and the
    # ImageNet weights to start from (a packaged name, sha256-checked, or a .pth timm state dict).
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.NAME = "efficientnet_lite0"
    cfg.MODEL.TIMM.OUT_INDICES = [1, 2, 3, 4]
    cfg.MODEL.TIMM.NORM = "FrozenBN"
    cfg.MODEL.TIMM.FREEZE_AT = 0
    cfg.MODEL.TIMM.WEIGHTS = ""

    # The matching head (MODEL.ROI_HEADS.NAME: MatchROIHeads, MODEL.MATCH_ON: True).
    cfg.MODEL.MATCH_ON = False
    cfg.MODEL.ROI_MATCH_HEAD = CN()
    cfg.MODEL.ROI_MATCH_HEAD.NAME = "MatchEmbeddingHead"
    cfg.MODEL.ROI_MATCH_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MATCH_HEAD.POOLER_SAMPLING_RATIO = 0
    cfg.MODEL.ROI_MATCH_HEAD.POOLER_TYPE = "ROIAlignV2"
    cfg.MODEL.ROI_MATCH_HEAD.CONV_DIMS = [256, 256]
    cfg.MODEL.ROI_MATCH_HEAD.NORM = ""
    cfg.MODEL.ROI_MATCH_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MATCH_HEAD.EMBED_DIM = 256
    cfg.MODEL.ROI_MATCH_HEAD.TEMPERATURE = 0.1
    cfg.MODEL.ROI_MATCH_HEAD.LOSS_WEIGHT = 1.0
    # > 0: the head also sees each RoI's own pixels, pooled at this resolution from the input
    # image (the backbone's "image" output) through one conv: colour and pattern, which the
    # detector's features are trained to ignore (garments are told apart by shape). 0 = off.
    cfg.MODEL.ROI_MATCH_HEAD.IMAGE_POOLER_RESOLUTION = 0
    cfg.MODEL.ROI_MATCH_HEAD.IMAGE_CONV_DIM = 16
    # True: the matching loss trains the matching head only, not the shared backbone and FPN.
    cfg.MODEL.ROI_MATCH_HEAD.DETACH_FEATURES = False
    # > 0: also a proxy loss over every training identity, hashed into this many learned proxies
    # (MatchEmbeddingHead's proxy_identity_loss: the same-category negatives a batch lacks).
    cfg.MODEL.ROI_MATCH_HEAD.NUM_PROXIES = 0
    # Foreground RoIs of paired garments per image that the loss sees (random subset).
    cfg.MODEL.ROI_MATCH_HEAD.MAX_ROIS_PER_IMAGE = 32


def retrieval_policy(cfg: CN) -> dict:
    """How a model's garments become a gallery or queries (``DEEPFASHION2.RETRIEVAL``, TTA): what
    a catalogue records about its model, and an exported model carries."""
    r = cfg.DEEPFASHION2.RETRIEVAL
    return {
        "min_score": r.MIN_SCORE,
        "gallery_per_image": r.GALLERY_PER_IMAGE,
        "max_per_image": r.MAX_PER_IMAGE,
        "same_category": r.SAME_CATEGORY,
        "index": r.INDEX,
        "exact_max": r.CATALOGUE_EXACT_MAX,
        "tta": bool(cfg.TEST.AUG.ENABLED),
    }


class ConfigError(FileError, ValueError):
    """A config file or override that is not one of this project's (missing, unknown key)."""


def load_config(config_file: str, opts=(), *, freeze: bool = False) -> CN:
    """
    Detectron2's config with the DeepFashion2 options, ``config_file`` and ``opts`` (``KEY VALUE``
    ...) merged: what every tool starts from. A missing file, an unknown key or a value of the
    wrong type is a :class:`ConfigError` naming the file (or the override) and the key.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    if not os.path.isfile(config_file):
        raise ConfigError(config_file, "no such config file", "the project's are in configs/")
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, TypeError, AssertionError, yaml.YAMLError) as e:
        raise ConfigError(config_file, _first_line(e)) from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(
            "the overrides", f"{_first_line(e)}", "give them as KEY VALUE pairs of known keys"
        ) from None
    if freeze:
        cfg.freeze()
    return cfg


def _first_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"")
    return text.splitlines()[0][:300] if text else type(e).__name__
