"""Training and evaluation steps of the demo: train with a progress bar, evaluate once."""

from __future__ import annotations

import os
import time

from detectron2.engine import HookBase
from tqdm import tqdm

from ...engine import Trainer


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


def train(cfg) -> tuple[Trainer, float]:
    """
    Train ``cfg`` from scratch; returns the trainer and the seconds it took. The evaluation
    datasets are left out here: Detectron2's ``EvalHook`` evaluates after the last iteration even
    with ``TEST.EVAL_PERIOD 0``, and the demo evaluates once, afterwards (:func:`evaluate`).
    """
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.DATASETS.TEST = ()
    train_cfg.freeze()
    start = time.perf_counter()
    trainer = Trainer(train_cfg)
    trainer.register_hooks([ProgressBar()])
    trainer.resume_or_load(resume=False)
    trainer.train()
    seconds = time.perf_counter() - start
    # Detectron2's JSONWriter logs training metrics to metrics.json: keep them under another name
    logged = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
    if os.path.exists(logged):
        os.replace(logged, os.path.join(cfg.OUTPUT_DIR, "training_metrics.json"))
    return trainer, seconds


def evaluate(cfg, model) -> dict[str, dict[str, float]]:
    """The four benchmarks (and the ground-truth-box retrieval variant), once."""
    results = Trainer.test(cfg, model)
    return {task: dict(metrics) for task, metrics in results.items()}
