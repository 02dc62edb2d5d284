#!/usr/bin/env python
"""
Train and evaluate DeepFashion2 models from Detectron2 LazyConfigs (``configs/lazy/*.py``), as
Detectron2's own ``tools/lazyconfig_train_net.py`` does, with what ``tools/train_net.py`` gives:
the DeepFashion2 and retrieval evaluators and their tables, the safe checkpointer (atomic
writes, a checked ``--resume``, ``weights_only`` loading), test-time augmentation
(``train.tta.enabled=True``), the CPU back-ports, and one line per mistake.

    python tools/lazyconfig_train_net.py --config-file configs/lazy/EfficientNet_Lite0_CPU.py \\
        --num-gpus 2
    python tools/lazyconfig_train_net.py --config-file configs/lazy/... --eval-only \\
        train.init_checkpoint=output/effnet_lite0_cpu_lazy/model_final.pth
    python tools/lazyconfig_train_net.py --config-file configs/lazy/... --resume
    python tools/lazyconfig_train_net.py --config-file configs/lazy/... train.max_iter=600 \\
        dataloader.train.total_batch_size=8

Overrides are ``key=value`` (Detectron2's LazyConfig syntax: a dotted path, a Python literal).
"""

import logging
import os

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from deepfashion2 import compat
from deepfashion2.compat import explain_environment_table
from deepfashion2.engine import DeepFashion2Checkpointer, launch
from deepfashion2.evaluation import tables
from deepfashion2.utils.cli import fail, tool_main

logger = logging.getLogger("deepfashion2")


def load_config(args):
    """The LazyConfig with its overrides; a missing file, a key it does not have or a CUDA
    config on a machine without CUDA: one line, before any process starts."""
    if not os.path.isfile(args.config_file):
        fail(f"{args.config_file}: no such config file", "configs/lazy/ holds this project's")
    try:
        cfg = LazyConfig.load(args.config_file)
        for override in args.opts:
            check_override(cfg, override, args.config_file)
        cfg = LazyConfig.apply_overrides(cfg, args.opts)
    except (KeyError, ValueError, AttributeError) as e:
        fail(f"{args.config_file}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
             "overrides are key=value, e.g. train.max_iter=600")  # fmt: skip
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        fail(
            f"{args.config_file} runs on CUDA (train.device {cfg.train.device}) and this "
            "machine has no CUDA device",
            "add train.device=cpu to run it on the CPU (slowly), or use "
            "configs/lazy/EfficientNet_Lite0_CPU.py",
        )
    return cfg


def check_override(cfg, override: str, config_file: str) -> None:
    """
    ``key=value`` must name what the config has, or an argument of the object a node builds
    (Detectron2 lets an override add any key: a typo, ``train.max_iters=600``, would be kept
    and ignored). One line naming the key otherwise.
    """
    import inspect

    from omegaconf import OmegaConf

    key = override.split("=", 1)[0].strip()
    if "=" not in override:
        fail(f"{override}: an override is key=value", "e.g. train.max_iter=600")
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if parent is None or not OmegaConf.is_config(parent):
        fail(f"{config_file}: no {parent_key or key!r} to set {key!r} in",
             "list what the config holds: python -c \"from detectron2.config import LazyConfig;"
             f" print(LazyConfig.to_py(LazyConfig.load('{config_file}')))\"")  # fmt: skip
    if last in parent:
        return
    target = parent.get("_target_") if OmegaConf.is_dict(parent) else None
    if target is not None:
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return
        if last in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
    keys = ", ".join(sorted(str(k) for k in parent.keys()))[:300]
    fail(f"{config_file}: {parent_key or 'the config'} has no {last!r} ({key})",
         f"check the spelling; it has: {keys}")  # fmt: skip


def tta_model(cfg, model):
    """The model under test-time augmentation (``train.tta``), as the YAML path builds it."""
    from deepfashion2.lazy import yaml_node
    from deepfashion2.modeling import DeepFashion2RCNNWithTTA

    heads = cfg.model.roi_heads
    node = yaml_node(
        cfg.get("deepfashion2"),
        MASK_ON=heads.get("mask_head") is not None,
        KEYPOINT_ON=heads.get("keypoint_head") is not None,
        MATCH_ON=heads.get("match_head") is not None,
    )
    node.INPUT.FORMAT = cfg.model.input_format
    tta = cfg.train.tta
    node.TEST.AUG.MIN_SIZES = tuple(tta.min_sizes)
    node.TEST.AUG.MAX_SIZE = tta.max_size
    node.TEST.AUG.FLIP = tta.flip
    return DeepFashion2RCNNWithTTA(node, model)


def do_test(cfg, model, tta: bool = False):
    """The benchmarks of ``dataloader.test`` with ``dataloader.evaluator``; their tables saved
    beside the result files (``inference/``, or ``inference_TTA/``)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    evaluator_cfg = cfg.dataloader.evaluator
    plain = evaluator_cfg.output_dir
    if tta:
        model = tta_model(cfg, model)
        evaluator_cfg.output_dir = os.path.join(cfg.train.output_dir, "inference_TTA")
    try:
        output_dir = evaluator_cfg.output_dir
        evaluator = instantiate(evaluator_cfg)
    finally:
        evaluator_cfg.output_dir = plain
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), evaluator)
    if comm.is_main_process() and ret:
        print_csv_format(ret)
        tables.save(ret, output_dir)
    return {f"{k}_TTA": v for k, v in ret.items()} if tta else ret


def do_train(args, cfg):
    """Detectron2's lazy training loop, with the project's checkpointer and evaluation."""
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    with compat.cpu_ddp():  # a CPU model wrapped without device_ids (both Detectron2s)
        from detectron2.engine import defaults

        model = defaults.create_ddp_model(model, **cfg.train.ddp)
    amp = cfg.train.amp.enabled and str(cfg.train.device).startswith("cuda")
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, train_loader, optim)
    checkpointer = DeepFashion2Checkpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if comm.is_main_process()
                else None
            ),
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            (
                hooks.EvalHook(0, lambda: do_test(cfg, model, tta=True))
                if cfg.train.get("tta", {}).get("enabled")
                else None
            ),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def main(args):
    cfg = load_config(args)
    compat.apply_backports()
    explain_environment_table()
    default_setup(cfg, args)
    setup_logger(output=cfg.train.output_dir, distributed_rank=comm.get_rank(), name="deepfashion2")
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        with compat.cpu_ddp():
            from detectron2.engine import defaults

            model = defaults.create_ddp_model(model)
        DeepFashion2Checkpointer(model, cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        res = do_test(cfg, model)
        if cfg.train.get("tta", {}).get("enabled"):
            res.update(do_test(cfg, model, tta=True))
        return res
    do_train(args, cfg)


@tool_main
def cli(argv=None):
    """The command: errors of the config, data and checkpoints are one line (utils.cli)."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    load_config(args)  # before any process starts: its errors once, in one line
    return launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
