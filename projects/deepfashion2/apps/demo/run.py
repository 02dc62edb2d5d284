"""
``run_demo``: the embedded demo end to end. Generate (or find) the data, train, evaluate once,
compare with chance, write the report and the figures, and say where they are. With ``dataset=``
a real DeepFashion2 folder is used instead of the synthetic set: ``<dir>/{train,validation}`` is
trained and evaluated on; a folder of annotated photos (``<dir>/{annos,image}``, no splits) is
where the demo's model, trained on the synthetic set, is evaluated.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng

from ... import add_deepfashion2_config
from ...data import dataset_dicts, register_deepfashion2
from ...data.synthetic import ensure_mini_split
from ...errors import FileError
from ...evaluation.groundtruth import split_ground_truth
from ...model_zoo import get_config_file
from . import figures, report
from .chance import above_chance, chance_levels
from .training import default_num_processes, evaluate, setup_logging, train

DEMO_SEED = 6  # held out: every recipe-search run used 2019 (README, the demo)


def register(dataset: str | None) -> tuple[str, str]:
    """
    (train, validation) dataset names: the embedded synthetic set, a real folder's splits
    (``<dir>/{train,validation}/{annos,image}``), or the synthetic training split and a folder of
    annotated photos (``<dir>/{annos,image}``) to evaluate on.
    """
    if dataset is None or is_photo_folder(dataset):
        for split in ("train", "validation"):
            ensure_mini_split(split)
        if dataset is None:
            return "deepfashion2_mini_train", "deepfashion2_mini_validation"
        return "deepfashion2_mini_train", _register("deepfashion2_demo_photos", dataset)
    missing = [s for s in ("train", "validation") if not _is_split(os.path.join(dataset, s))]
    if missing:
        raise FileError(
            dataset,
            f"no {' or '.join(missing)} split (<dir>/<split>/annos and image)",
            "give a DeepFashion2 folder with train/ and validation/, or a folder with annos/ and "
            "image/ to evaluate the demo's model on",
        )
    return tuple(
        _register(f"deepfashion2_demo_{s}", os.path.join(dataset, s))
        for s in ("train", "validation")
    )


def is_photo_folder(dataset: str) -> bool:
    """Annotated photos without splits: ``<dir>/annos`` and ``<dir>/image``."""
    return _is_split(dataset) and not _is_split(os.path.join(dataset, "train"))


def _is_split(folder: str) -> bool:
    return all(os.path.isdir(os.path.join(folder, d)) for d in ("annos", "image"))


def _register(name: str, folder: str) -> str:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    register_deepfashion2(name, os.path.join(folder, "annos"), os.path.join(folder, "image"))
    return name


def demo_config(
    output_dir: str,
    train_name: str,
    val_name: str,
    config_file: str | None = None,
    opts=(),
    seed: int = DEMO_SEED,
):
    """
    The demo's config: the model zoo's EfficientNet-Lite0-CPU (from ImageNet; R50-FPN 1x on a
    GPU), the demo's data. ``config_file=configs/Mini-CPU.yaml``: the model trained from scratch.
    """
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    real = torch.cuda.is_available() and train_name != "deepfashion2_mini_train"
    default = "mask_rcnn_landmarks_R_50_FPN_1x" if real else "EfficientNet-Lite0-CPU"
    cfg.merge_from_file(config_file or get_config_file(default))
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train_name,), (val_name,)
    cfg.OUTPUT_DIR = output_dir
    cfg.SEED = seed
    cfg.SOLVER.CHECKPOINTS_TO_KEEP = 1  # the demo keeps model_final.pth (and, while it trains, one)
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def run_demo(
    output_dir: str = "output/demo",
    dataset: str | None = None,
    config_file: str | None = None,
    opts: list[str] | tuple = (),
    num_drawings: int = 4,
    seed: int = DEMO_SEED,
    num_processes: int | None = None,
) -> dict:
    """
    Train, evaluate and draw; returns the contents of ``metrics.json``. ``num_processes``: training
    processes, by default :func:`.training.default_num_processes` (2 on CPU, 1 on a GPU).
    """
    start = time.perf_counter()
    train_name, val_name = register(dataset)  # a wrong folder is said before anything is written
    if dataset is not None and is_photo_folder(dataset):
        print(
            f"{dataset} holds annotated photos without train/ and validation/: the demo trains "
            f"on the synthetic set and evaluates on these photos"
        )
    os.makedirs(output_dir, exist_ok=True)
    setup_logging(output_dir)
    cfg = demo_config(output_dir, train_name, val_name, config_file, opts, seed)
    seed_all_rng(cfg.SEED)  # weights, sampler and augmentation: the same run on the same machine
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())

    num_processes = num_processes or default_num_processes(cfg)
    model, train_s = train(cfg, num_processes, functools.partial(register, dataset))
    print(f"Trained {cfg.SOLVER.MAX_ITER} iterations in {train_s / 60:.1f} min; evaluating ...")
    results, ranking = evaluate(cfg, model)
    val_dicts = dataset_dicts(val_name, cfg)
    gt = split_ground_truth(val_name, cfg)  # the evaluators' own, built once
    chance = chance_levels(gt)
    above = above_chance(results, chance)
    metrics = {
        **results,
        "chance": chance,
        "above_chance": above,
        "chance_definition": report.CHANCE_DEFINITION,
        "seed": cfg.SEED,
        "train_iterations": cfg.SOLVER.MAX_ITER,
        "train_seconds": train_s,
        "train_processes": num_processes,
        "datasets": {"train": train_name, "validation": val_name},
    }
    md = report.write_tables(results, output_dir)
    metrics["figures"] = figures.draw_all(
        cfg, results, chance, val_dicts, output_dir, num_drawings, gt, ranking
    )
    metrics["total_seconds"] = time.perf_counter() - start
    report.write_metrics(metrics, output_dir)
    remove_periodic_checkpoints(output_dir)
    print(md)
    print(report.summary(results, chance, above))
    print(report.where(output_dir, metrics, cfg))
    logging.getLogger("deepfashion2").info(f"Demo outputs in {output_dir}")
    return metrics


def remove_periodic_checkpoints(output_dir: str) -> None:
    """A finished demo needs only ``model_final.pth`` (the demo always trains from the start)."""
    for name in os.listdir(output_dir):
        if re.fullmatch(r"model_\d+\.pth", name):
            os.remove(os.path.join(output_dir, name))
