#!/usr/bin/env python
"""
Train and evaluate DeepFashion2 models with Detectron2.

    python tools/train_net.py --config-file configs/Mini-CPU.yaml
    python tools/train_net.py --num-gpus 8 \
        --config-file configs/mask_rcnn_landmarks_R_50_FPN_1x.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... TEST.AUG.ENABLED True

With ``TEST.AUG.ENABLED`` the four benchmarks are evaluated a second time with test-time
augmentation (``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``; landmarks flipped per category):
the results gain ``bbox_TTA``, ... and the tables go to ``<OUTPUT_DIR>/inference_TTA``.
"""

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import torch
from detectron2.engine import default_argument_parser, default_setup, hooks
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from deepfashion2.compat import explain_environment_table
from deepfashion2.config import load_config as load_project_config
from deepfashion2.engine import DeepFashion2Checkpointer, Trainer, launch
from deepfashion2.modeling.test_time_augmentation import tta_passes
from deepfashion2.utils.cli import fail, tool_main


def load_config(args):
    """The config; a CUDA config on a machine without CUDA is one line, not a traceback."""
    cfg = load_project_config(args.config_file, args.opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        fail(
            f"{args.config_file} runs on CUDA (MODEL.DEVICE {cfg.MODEL.DEVICE}) and this "
            "machine has no CUDA device",
            "add MODEL.DEVICE cpu to run it on the CPU (slowly), or use "
            "configs/EfficientNet-Lite0-CPU.yaml",
        )
    if cfg.TEST.AUG.ENABLED:
        passes = tta_passes(cfg)
        print(
            "TEST.AUG.ENABLED: after the plain evaluation, a second one with test-time "
            f"augmentation: {passes} passes per image, some at larger sizes, so about {passes}x "
            "the plain evaluation's time or more"
        )
    return cfg


def setup(args):
    cfg = load_config(args)
    cfg.freeze()
    explain_environment_table()  # no "_C not built correctly" / "No CUDA runtime" on a CPU
    default_setup(cfg, args)
    # the project's own logger (tables, pair sampling), like PointRend's train_net does
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="deepfashion2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DeepFashion2Checkpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:  # after the plain evaluation, as Detectron2's train_net does
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


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
