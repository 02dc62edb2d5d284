"""
The embedded demo (``make demo``): generate the synthetic set, train the small CPU model
(detector + masks + landmarks + matching head), evaluate the four benchmarks, draw the figures,
and leave everything in one folder. With ``dataset=`` a real DeepFashion2 folder is used instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from .. import add_deepfashion2_config
from ..data import register_deepfashion2
from ..data.synthetic import ensure_mini_split
from ..evaluation import GroundTruth, tables
from ..evaluation.chance import detection_chance, retrieval_chance
from ..utils.figures import draw_predictions, plot_subset_ap, retrieval_strip_figure
from .trainer import Trainer

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BENCHMARKS = ("bbox", "segm", "keypoints", "keypoints_vis", "retrieval")
DEMO_SEED = 2019


class ProgressBar(HookBase):
    """A tqdm bar over the training iterations with the current total loss."""

    def before_train(self):
        t = self.trainer
        self._bar = tqdm(total=t.max_iter - t.start_iter, desc="Training", unit="it")

    def after_step(self):
        self._bar.update(1)
        hist = self.trainer.storage.histories().get("total_loss")
        if hist is not None:
            self._bar.set_postfix(loss=f"{hist.median(20):.2f}", refresh=False)

    def after_train(self):
        self._bar.close()


def _concise(record: logging.LogRecord) -> bool:
    """Console filter: warnings, and Detectron2's periodic inference progress."""
    return record.levelno >= logging.WARNING or record.name == "detectron2.evaluation.evaluator"


def _default_config() -> str:
    if torch.cuda.is_available():
        return os.path.join(REPO, "configs", "mask_rcnn_landmarks_R_50_FPN_1x.yaml")
    return os.path.join(REPO, "configs", "Mini-CPU.yaml")


def _register(dataset: str | None) -> tuple[str, str]:
    """(train, validation) dataset names: the embedded synthetic set or a real folder."""
    if dataset is None:
        for split in ("train", "validation"):
            ensure_mini_split(split)
        return "deepfashion2_mini_train", "deepfashion2_mini_validation"
    names = []
    for split in ("train", "validation"):
        d = os.path.join(dataset, split)
        if not os.path.isdir(os.path.join(d, "annos")):
            raise SystemExit(f"{d}/annos not found (expected <dataset>/{{train,validation}})")
        name = f"deepfashion2_demo_{split}"
        if name not in DatasetCatalog.list():
            register_deepfashion2(name, os.path.join(d, "annos"), os.path.join(d, "image"))
        names.append(name)
    return names[0], names[1]


def run_demo(
    output_dir: str = "output/demo",
    dataset: str | None = None,
    config_file: str | None = None,
    opts: list[str] | tuple = (),
    num_drawings: int = 4,
) -> dict:
    """Train, evaluate and draw; returns the contents of ``metrics.json``."""
    os.makedirs(output_dir, exist_ok=True)
    setup_logger(output=os.path.join(output_dir, "log.txt"), name="detectron2")
    logger = setup_logger(output=os.path.join(output_dir, "log.txt"), name="deepfashion2")
    for name in ("detectron2", "deepfashion2"):  # concise console, full log.txt
        for h in logging.getLogger(name).handlers:
            if getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                h.addFilter(_concise)
    train_name, val_name = _register(dataset)
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(config_file or _default_config())
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train_name,), (val_name,)
    cfg.OUTPUT_DIR = output_dir
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = DEMO_SEED
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    seed_all_rng(cfg.SEED)  # weights, sampler and augmentation: the same figures every run
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())

    start = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.register_hooks([ProgressBar()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_s = time.perf_counter() - start
    # Detectron2's JSONWriter logs training metrics to metrics.json: keep them under another name
    if os.path.exists(os.path.join(output_dir, "metrics.json")):
        os.replace(
            os.path.join(output_dir, "metrics.json"),
            os.path.join(output_dir, "training_metrics.json"),
        )
    print(f"Trained {cfg.SOLVER.MAX_ITER} iterations in {train_s / 60:.1f} min; evaluating ...")

    results = Trainer.test(cfg, trainer.model)
    results = {k: dict(v) for k, v in results.items()}
    val_dicts = DatasetCatalog.get(val_name)
    gt = GroundTruth.from_dicts(val_dicts)
    chance = {t: {m: 100 * v for m, v in r.items()} for t, r in detection_chance(gt).items()}
    chance["retrieval"] = {k: 100 * v for k, v in retrieval_chance(gt).items()}
    chance["retrieval_within_category"] = {
        k: 100 * v for k, v in retrieval_chance(gt, within_category=True).items()
    }
    above = {}
    for task in BENCHMARKS:
        if task in results:
            key = "top1" if task == "retrieval" else "AP"
            above[task] = bool(results[task][key] > chance[task][key])
    metrics = {
        **results,
        "chance": chance,
        "above_chance": above,
        "chance_definition": {
            "bbox/segm/keypoints": "10 uniformly random boxes per image (random category and "
            "score, box masks, landmarks uniform in the box), mean of 3 seeds",
            "retrieval": "expected top-k of a uniformly random ranking of the ground-truth shop "
            "items (retrieval_within_category: of the query's category only)",
        },
        "train_iterations": cfg.SOLVER.MAX_ITER,
        "train_seconds": train_s,
        "total_seconds": time.perf_counter() - start,
        "datasets": {"train": train_name, "validation": val_name},
    }

    # tables (Markdown + JSON in the dataset README's 0-1 layout) and figures
    md = tables.markdown_tables(results)
    with open(os.path.join(output_dir, "tables.md"), "w") as f:
        f.write(md)
    with open(os.path.join(output_dir, "tables.json"), "w") as f:
        json.dump(tables.table_dict(results), f, indent=1)
    plot_subset_ap(results, os.path.join(output_dir, "subset_ap.png"), _ap01(chance))
    final = cfg.clone()
    final.defrost()
    final.MODEL.WEIGHTS = os.path.join(output_dir, "model_final.pth")
    drawings = draw_predictions(
        final, val_dicts, os.path.join(output_dir, "predictions"), num_drawings
    )
    submission = os.path.join(output_dir, "inference", "retrieval_submission.json")
    strip = os.path.join(output_dir, "retrieval_strip.png")
    if os.path.exists(submission):
        with open(submission) as f:
            if not retrieval_strip_figure(json.load(f), val_dicts, strip):
                strip = None
    metrics["figures"] = {
        "subset_ap": "subset_ap.png",
        "predictions": [os.path.relpath(p, output_dir) for p in drawings],
        "retrieval_strip": "retrieval_strip.png" if strip else None,
    }
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(_nan_to_none(metrics), f, indent=1)
    if drawings:
        shutil.copyfile(drawings[0], os.path.join(output_dir, "prediction.png"))
    print(md)
    print(_chance_summary(results, chance))
    logger.info(f"Demo outputs in {output_dir}")
    return metrics


def _ap01(chance: dict) -> dict:
    return {t: {m: v / 100 for m, v in r.items()} for t, r in chance.items()}


def _chance_summary(results: dict, chance: dict) -> str:
    lines = ["| benchmark | result | chance |", "|---|---|---|"]
    for task in BENCHMARKS:
        if task in results:
            key = "top1" if task == "retrieval" else "AP"
            lines.append(
                f"| {task} {key} | {results[task][key] / 100:.3f} | {chance[task][key] / 100:.3f} |"
            )
    return "\n".join(lines) + "\n"


def _nan_to_none(x):
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
