"""
The Detectron2 back-ports of ``deepfashion2.compat``: each test fails on the unpatched v0.6 wheel
and passes on it with the back-port and on Detectron2's main branch.
"""

import os

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from test_training import CONFIG, TRAIN, tiny_opts, train_net

from deepfashion2 import compat
from deepfashion2.data import DeepFashion2Mapper

pytestmark = pytest.mark.usefixtures("tiny_split")


def _cfg(out, iters, *extra):
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG] + tiny_opts(out, iters, "MODEL.MATCH_ON", "False", *extra)
    )
    return train_net.setup(args)


class SkippingTrainer(train_net.Trainer):
    """A user's mapper that skips every other image (returns None: Detectron2's way to skip)."""

    @classmethod
    def build_train_loader(cls, cfg):
        from detectron2.data import build_detection_train_loader

        mapper = DeepFashion2Mapper(cfg, is_train=True)

        def skip_odd(d):
            return None if d["image_id"] % 2 else mapper(d)

        dicts = DatasetCatalog.get(TRAIN)
        return build_detection_train_loader(cfg, dataset=dicts, mapper=skip_odd)


@pytest.mark.slow
def test_a_mapper_that_skips_samples_trains(tmp_path):
    cfg = _cfg(tmp_path, 3, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    trainer = SkippingTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # v0.6 unpatched: TypeError: Population must be a sequence
    assert trainer.iter == 3  # all iterations ran


class StepLRTrainer(train_net.Trainer):
    """A user's torch scheduler (not one of Detectron2's)."""

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


@pytest.mark.slow
def test_a_torch_scheduler_resumes_where_it_stopped(tmp_path):
    extra = ("MODEL.ROI_HEADS.NAME", "StandardROIHeads", "SOLVER.CHECKPOINT_PERIOD", "3")
    trainer = StepLRTrainer(_cfg(tmp_path, 6, *extra))
    trainer.resume_or_load(resume=False)
    trainer.train()
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)
    assert saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 3  # v0.6 unpatched: absent
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    resumed = StepLRTrainer(_cfg(tmp_path, 6, *extra))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    assert resumed.scheduler.last_epoch == 3  # v0.6 unpatched: 0, the schedule restarts
    lr = resumed.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(resumed.cfg.SOLVER.BASE_LR * 0.5)  # the step at epoch 2 is kept


def test_backports_are_applied_only_where_needed():
    applied = compat.apply_backports()
    assert compat.apply_backports() == applied  # idempotent
    from detectron2.data.common import MapDataset

    ds = MapDataset([0, 1, 2], lambda x: None if x == 0 else x)
    assert ds[0] in (1, 2)
    import detectron2

    main_branch = os.path.realpath(detectron2.__file__).find("detectron2_main") >= 0
    if main_branch:
        assert applied == []  # main needs none of the run-time back-ports
        assert compat.trainer_saves_optimizer() and compat.launch_supports_cpu()
    else:
        assert set(applied) == {"MapDataset.__getitem__", "hooks.LRScheduler.state_dict"}
        assert not compat.trainer_saves_optimizer() and not compat.launch_supports_cpu()


def test_environment_table_explains_the_missing_compiled_ops():
    import logging

    from detectron2.utils.collect_env import collect_env_info
    from detectron2.utils.logger import setup_logger

    table = collect_env_info()
    compat.explain_environment_table()
    compat.explain_environment_table()  # idempotent: one filter
    logger = setup_logger(name="detectron2")  # what default_setup logs through (no propagation)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        logger.info("Environment info:\n" + table)
    finally:
        logger.removeHandler(handler)
    (logged,) = seen
    assert "not built correctly" not in logged
    if "not built correctly" in table:  # a Python-only Detectron2 (both in this suite)
        assert compat._C_NOTE in logged
    assert logged.count("\n") == table.count("\n") + 1  # the rest of the table as it was
