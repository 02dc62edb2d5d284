"""Detect and embed the garments of any images, exactly as the retrieval evaluator sees them."""

from __future__ import annotations

import functools
import os

import torch
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from ...data import DeepFashion2Mapper
from ...engine import DeepFashion2Checkpointer
from ...evaluation.retrieval_evaluator import best_detections
from ...model_zoo import sha256_of


def model_identity(cfg, config_name: str = "") -> dict:
    """What a catalogue records about its model: config, weights sha256, embedding size, policy."""
    weights = PathManager.get_local_path(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else ""
    r = cfg.DEEPFASHION2.RETRIEVAL
    return {
        "config": config_name,
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": sha256_of(weights) if weights else "untrained",
        "embed_dim": int(cfg.MODEL.ROI_MATCH_HEAD.EMBED_DIM),
        "policy": {
            "min_score": r.MIN_SCORE,
            "gallery_per_image": r.GALLERY_PER_IMAGE,
            "max_per_image": r.MAX_PER_IMAGE,
            "same_category": r.SAME_CATEGORY,
            "index": r.INDEX,
            "exact_max": r.CATALOGUE_EXACT_MAX,
        },
    }


class GarmentEmbedder:
    """
    The trained model of ``cfg`` (``MODEL.WEIGHTS``) in inference mode. Images go through the
    test-time mapper the evaluator uses, in batches of images of the same padded size (so an
    image's result does not depend on which others share its batch).
    """

    def __init__(self, cfg, batch_size: int = 4):
        if not cfg.MODEL.MATCH_ON:
            raise ValueError("the model has no matching head (MODEL.MATCH_ON False)")
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        DeepFashion2Checkpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.mapper = DeepFashion2Mapper(cfg, is_train=False)
        self.batch_size = batch_size
        self.divisor = max(self.model.backbone.size_divisibility, 1)
        r = cfg.DEEPFASHION2.RETRIEVAL
        self.min_score = r.MIN_SCORE
        self.gallery_per_image = min(r.GALLERY_PER_IMAGE, r.MAX_PER_IMAGE)
        self.max_per_image = r.MAX_PER_IMAGE

    def __call__(self, paths: list[str], limit: int) -> list[tuple]:
        """For each image, its ``limit`` best garments: (boxes, categories 1..13, scores, emb)."""
        inputs = [self.mapper({"file_name": p, "image_id": i}) for i, p in enumerate(paths)]
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(inputs):
            h, w = x["image"].shape[-2:]
            key = (-(-h // self.divisor), -(-w // self.divisor))
            buckets.setdefault(key, []).append(i)
        out: list[tuple | None] = [None] * len(paths)
        with torch.no_grad():
            for members in buckets.values():
                for s in range(0, len(members), self.batch_size):
                    batch = members[s : s + self.batch_size]
                    for i, o in zip(batch, self.model([inputs[i] for i in batch])):
                        inst = o["instances"].to(torch.device("cpu"))
                        out[i] = best_detections(inst, self.min_score, limit)
        return out  # type: ignore[return-value]

    @functools.cached_property
    def identity(self) -> dict:
        """:func:`model_identity` of this model (hashes the weights once, not per search)."""
        return model_identity(self.cfg)

    def gallery(self, paths: list[str]) -> list[tuple]:
        """What a shop image contributes to a catalogue (the evaluator's gallery policy)."""
        return self(paths, self.gallery_per_image)

    def queries(self, paths: list[str]) -> list[tuple]:
        """What a consumer photo contributes as queries."""
        return self(paths, self.max_per_image)


def list_images(folder: str, extensions=(".jpg", ".jpeg", ".png")) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted paths relative to it."""
    out = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith(extensions):
                out.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(out)
