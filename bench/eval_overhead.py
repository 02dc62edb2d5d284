#!/usr/bin/env python
"""
What ``tools/train_net.py --eval-only`` spends outside the model: ``Trainer.test`` on a
validation-size synthetic split (32,153 images at --scale 1, the validation split's shop and
consumer photos, every attribute; bench/registration.py's folder), with a stand-in model that
answers each image with its own ground truth (boxes, classes, landmarks, box masks, an embedding
per garment identity) at almost no cost. Everything else is what a real evaluation does: the test
loader (reading and resizing every image, twice: detections and the ground-truth-box retrieval
variant), the four benchmarks' evaluators, the retrieval evaluator, their ground truth, the tables.

Reported: the whole ``Trainer.test``, the time inside the model, and the rest (outside
inference), with the split's cache warm (a second registration of the same folder), as a reader
running ``--eval-only`` again would have it.

    python bench/eval_overhead.py [--scale F] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from _common import cpu_model, write_json
from registration import make_folder
from torch import nn

VALIDATION_IMAGES = 32_153


class GroundTruthModel(nn.Module):
    """Answers every image with its own annotations (the model's time is ~nothing, and timed)."""

    def __init__(self, dicts: list[dict], embed_dim: int = 16):
        super().__init__()
        from deepfashion2 import landmarks as L

        self.seconds = 0.0
        self._answers = {}
        rng = np.random.default_rng(0)
        for d in dicts:
            annos = d.get("annotations", ())
            kp = np.zeros((len(annos), L.NUM_LANDMARKS, 3), np.float32)
            for i, a in enumerate(annos):
                kp[i] = L.expand_landmarks(a["category_id"], a["landmarks"])
                kp[i, :, 2] = (kp[i, :, 2] > 0).astype(np.float32)
            ident = [d.get("pair_id", 0) * 1000 + a.get("style", 0) for a in annos]
            emb = np.stack([_unit(rng, embed_dim, s) for s in ident]) if annos else None
            self._answers[d["image_id"]] = (
                torch.tensor([a["bbox"] for a in annos], dtype=torch.float32).reshape(-1, 4),
                torch.tensor([a["category_id"] for a in annos], dtype=torch.int64),
                torch.from_numpy(kp),
                torch.from_numpy(emb) if emb is not None else torch.zeros(0, embed_dim),
            )
        self.register_buffer("_anchor", torch.zeros(1))

    @property
    def device(self):
        return self._anchor.device

    def forward(self, inputs, detected_instances=None):
        from detectron2.structures import Boxes, Instances

        t = time.perf_counter()
        out = []
        for x in inputs:
            boxes, classes, kp, emb = self._answers[x["image_id"]]
            h, w = x["height"], x["width"]
            masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
            for i, b in enumerate(boxes.round().int().tolist()):
                masks[i, b[1] : b[3], b[0] : b[2]] = True
            inst = Instances((h, w), pred_boxes=Boxes(boxes), scores=torch.full((len(boxes),), 0.9),
                             pred_classes=classes, pred_keypoints=kp, pred_masks=masks,
                             pred_embeddings=emb)  # fmt: skip
            if detected_instances is not None:
                inst.gt_style = detected_instances[len(out)].gt_style
            out.append({"instances": inst})
        self.seconds += time.perf_counter() - t
        return out

    def inference(self, inputs, detected_instances=None, do_postprocess=True):
        return self(inputs, detected_instances)


def _unit(rng, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(abs(seed)).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--out", default="bench/results/eval_overhead.json")
    args = p.parse_args()

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.logger import setup_logger

    from deepfashion2.config import load_config
    from deepfashion2.data import dataset_dicts, register_deepfashion2
    from deepfashion2.engine import Trainer

    setup_logger(name="deepfashion2")
    n = max(1, round(VALIDATION_IMAGES * args.scale))
    work = tempfile.mkdtemp(prefix="df2-bench-overhead-")
    try:
        t = time.perf_counter()
        make_folder(work, n, seed=1)
        name = "df2_bench_overhead"
        cache = os.path.join(work, "cache")
        register_deepfashion2(name, f"{work}/annos", f"{work}/image", cache_dir=cache)
        cfg = load_config("configs/EfficientNet-Lite0-CPU.yaml", [
            "DATASETS.TEST", f"('{name}',)", "OUTPUT_DIR", os.path.join(work, "out"),
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_MATCH_HEAD.EMBED_DIM", "16",
        ])  # fmt: skip
        dicts = dataset_dicts(name, cfg)  # parses, and writes the cache
        model = GroundTruthModel(dicts)
        setup_s = time.perf_counter() - t
        # a new registration of the same folder: what a second --eval-only process finds
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        register_deepfashion2(name, f"{work}/annos", f"{work}/image", cache_dir=cache)
        t = time.perf_counter()
        results = Trainer.test(cfg, model)
        total = time.perf_counter() - t
        items = sum(len(d["annotations"]) for d in dicts)
        out = {
            "images": n, "items": items, "setup_seconds": setup_s,
            "test_seconds": total, "model_seconds": model.seconds,
            "outside_inference_seconds": total - model.seconds,
            "box_ap": results["bbox"]["AP"], "retrieval_top1": results["retrieval"]["top1"],
            "cpu": cpu_model(), "threads": torch.get_num_threads(),
        }  # fmt: skip
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()})
        write_json(args.out, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
