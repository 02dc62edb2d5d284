"""
Training and evaluation steps of the demo: train with a progress bar (in one or several
processes), evaluate once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from torch import nn
from tqdm import tqdm

from ...data import dataset_dicts
from ...engine import DeepFashion2Checkpointer, Trainer, launch
from ...evaluation import RetrievalEvaluator


def _concise(record: logging.LogRecord) -> bool:
    """Console filter: warnings, and Detectron2's periodic inference progress."""
    return record.levelno >= logging.WARNING or record.name == "detectron2.evaluation.evaluator"


def setup_logging(output_dir: str) -> None:
    """A concise console and the full ``log.txt`` (``log.txt.rankN`` in the other processes)."""
    for name in ("detectron2", "deepfashion2"):
        setup_logger(
            output=os.path.join(output_dir, "log.txt"), distributed_rank=comm.get_rank(), name=name
        )
        for h in logging.getLogger(name).handlers:
            if getattr(h, "stream", None) in (sys.stdout, sys.stderr):
                h.addFilter(_concise)


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


def _train(cfg) -> nn.Module:
    trainer = Trainer(cfg)
    if comm.is_main_process():
        trainer.register_hooks([ProgressBar()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.model


def _train_worker(cfg, setup: Callable[[], object] | None) -> None:
    """One of several training processes. Spawned, it starts from nothing: the datasets are
    registered, and logging and seeds set up, again."""
    if setup is not None:
        setup()
    setup_logging(cfg.OUTPUT_DIR)
    seed_all_rng(cfg.SEED + comm.get_rank())  # as Detectron2's default_setup: seed + rank
    _train(cfg)


def train(
    cfg, num_processes: int = 1, setup: Callable[[], object] | None = None
) -> tuple[nn.Module, float]:
    """
    Train ``cfg`` from scratch in ``num_processes`` processes (on CPU each gets its share of the
    cores; ``SOLVER.IMS_PER_BATCH`` is the total batch, as in Detectron2). Returns the trained
    model and the seconds it took, process start-up included. ``setup``: a picklable callable
    each spawned process runs first (registering the datasets). The evaluation datasets are left
    out: Detectron2's ``EvalHook`` evaluates after the last iteration even with
    ``TEST.EVAL_PERIOD 0``, and the demo evaluates once, afterwards (:func:`evaluate`).
    """
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.DATASETS.TEST = ()
    train_cfg.freeze()
    start = time.perf_counter()
    if num_processes > 1:
        # parse (and cache) the training data here, once: its warnings (a lenient load's
        # skipped items) reach this console, and the processes do not race to parse it
        for name in cfg.DATASETS.TRAIN:
            dataset_dicts(name, cfg)
        launch(_train_worker, num_processes, dist_url="auto", args=(train_cfg, setup))
        model = Trainer.build_model(cfg)
        DeepFashion2Checkpointer(model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    else:
        model = _train(train_cfg)
    seconds = time.perf_counter() - start
    # Detectron2's JSONWriter logs training metrics to metrics.json: keep them under another name
    logged = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    if os.path.exists(logged):
        os.replace(logged, os.path.join(cfg.OUTPUT_DIR, "training_metrics.json"))
    return model, seconds


def default_num_processes(cfg) -> int:
    """On CPU two processes (on 2 cores, one thread each: 0.62 against 0.80 s per iteration for
    one process with both threads and a loader worker, bench/results/demo_processes.json); one
    where there is a GPU (Detectron2's launch then starts one process per GPU)."""
    return 2 if cfg.MODEL.DEVICE == "cpu" and not torch.cuda.is_available() else 1


def evaluate(cfg, model) -> tuple[dict[str, dict[str, float]], object]:
    """The four benchmarks (and the ground-truth-box retrieval variant), once; with the
    retrieval evaluator's ranking (a ``Submission``, or None without a matching head)."""
    built: list = []
    results = Trainer.test(cfg, model, built=built)
    rankings = [e.submission for e in built if isinstance(e, RetrievalEvaluator)]
    return {task: dict(metrics) for task, metrics in results.items()}, next(iter(rankings), None)
