#!/usr/bin/env python
"""
One command that checks the CUDA path end to end and writes what it found as JSON:

    python tools/check_gpu.py --output gpu_check.json            # on a GPU: ~5-10 minutes
    python tools/check_gpu.py --device cpu --output cpu.json     # the small CPU version (tested)

Steps, each timed and recorded as ok / failed (with the error) / skipped (with the reason):

1. ``train``: a few training iterations of the R50-FPN config (``mask_rcnn_landmarks_R_50_FPN_1x``)
   at real image size on a synthetic split (the small CPU config and images on ``--device cpu``);
   the backbone starts from random weights, since nothing can be downloaded where this runs;
2. ``train_amp``: the same with ``SOLVER.AMP.ENABLED`` (CUDA only);
3. ``evaluate``: inference and the four evaluators (``Trainer.test``) on the trained weights;
4. ``tta``: the same with test-time augmentation (a flip);
5. ``catalogue``: index the split's shop photos and search one consumer photo;
6. ``landmark_head``: the category-gated landmark head against Detectron2's 294-channel head, one
   training step each on the same RoIs: time and (CUDA) peak memory, as ratios;
7. ``launch``: ``--num-gpus 2`` training through ``launch`` (when the machine has 2 GPUs or more);
8. ``lazy``: ``tools/lazyconfig_train_net.py`` on the new-baseline LazyConfig
   (``lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ``: SyncBN, large-scale jitter, AMP; the CPU
   recipe's instant test on ``--device cpu``): a few iterations, then its evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class Skip(Exception):
    """A step that cannot run here; the message says why."""


def _cfg(device: str, out: str, split: str, iters: int, amp: bool = False):
    from detectron2.config import get_cfg

    from deepfashion2 import add_deepfashion2_config, model_zoo

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    if device == "cuda":
        cfg.merge_from_file(model_zoo.get_config_file("mask_rcnn_landmarks_R_50_FPN_1x"))
        cfg.MODEL.WEIGHTS = ""  # no download where this runs: random initial weights
        cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR = 4, 0.005
        cfg.SOLVER.WARMUP_ITERS = 0
    else:
        cfg.merge_from_file(
            os.path.join(ROOT, "configs", "quick_schedules", "Mini-CPU_instant_test.yaml")
        )
    cfg.MODEL.DEVICE = device
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (split,), (split,)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = iters, ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**6
    cfg.SOLVER.AMP.ENABLED = amp
    cfg.DATALOADER.NUM_WORKERS = 2 if device == "cuda" else 0
    cfg.OUTPUT_DIR = out
    return cfg


def _train(cfg) -> dict:
    from deepfashion2.engine import Trainer

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = trainer.storage.history("total_loss").values()
    return {
        "iterations": cfg.SOLVER.MAX_ITER,
        "first_loss": losses[0][0],
        "last_loss": losses[-1][0],
    }


def step_train(ctx) -> dict:
    ctx["cfg"] = _cfg(ctx["device"], os.path.join(ctx["tmp"], "train"), ctx["split"], ctx["iters"])
    return _train(ctx["cfg"])


def step_train_amp(ctx) -> dict:
    if ctx["device"] != "cuda":
        raise Skip("SOLVER.AMP needs CUDA")
    cfg = _cfg("cuda", os.path.join(ctx["tmp"], "amp"), ctx["split"], ctx["iters"], amp=True)
    return _train(cfg)


def _weights(ctx) -> object:
    if "cfg" not in ctx:
        raise Skip("training failed: no weights to evaluate")
    cfg = ctx["cfg"].clone()
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    return cfg


def _test(ctx, tta: bool) -> dict:
    """The four benchmarks on the trained weights (with TTA: a flip at the test size)."""
    from deepfashion2.engine import DeepFashion2Checkpointer, Trainer

    cfg = _weights(ctx)
    if tta:
        cfg.TEST.AUG.MIN_SIZES = (cfg.INPUT.MIN_SIZE_TEST,)
        cfg.TEST.AUG.MAX_SIZE, cfg.TEST.AUG.FLIP = cfg.INPUT.MAX_SIZE_TEST, True
    model = Trainer.build_model(cfg)
    DeepFashion2Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    res = Trainer.test_with_TTA(cfg, model) if tta else Trainer.test(cfg, model)
    return {t: {k: v for k, v in r.items() if "/" not in k} for t, r in res.items()}


def step_evaluate(ctx) -> dict:
    return _test(ctx, tta=False)


def step_tta(ctx) -> dict:
    return _test(ctx, tta=True)


def step_catalogue(ctx) -> dict:
    from deepfashion2.apps.catalogue import index_images, search_photos

    cfg = _weights(ctx)
    shop = os.path.join(ctx["tmp"], "shop")
    os.makedirs(shop, exist_ok=True)
    users = []
    for d in ctx["dicts"]:
        if d["source"] == "shop":
            os.symlink(d["file_name"], os.path.join(shop, os.path.basename(d["file_name"])))
        else:
            users.append(d["file_name"])
    cat_dir = os.path.join(ctx["tmp"], "catalogue")
    cat = index_images(cfg, shop, cat_dir, progress=False)
    found = search_photos(
        cat_dir,
        users[:1],
        top_k=5,
        opts=["MODEL.DEVICE", ctx["device"]],
        min_score=0.0,
        max_garments=3,
    )
    return {"items": len(cat), "garments_found": len(found["results"][0]["garments"])}


def step_landmark_head(ctx) -> dict:
    """One training step of each head on the same RoIs (128 on CUDA): seconds and peak memory
    (bench/keypoint_head.py's measurement, the heads and inputs it benchmarks on the CPU)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    from keypoint_head import train_step

    device = ctx["device"]
    n = 128 if device == "cuda" else 16  # the CPU version only checks that both run
    split = os.path.dirname(ctx["annos"])
    out = {kind: train_step(kind, split, n, device) for kind in ("ours", "stock")}
    out["time_ratio_ours_to_stock"] = out["ours"]["seconds"] / out["stock"]["seconds"]
    if device == "cuda":
        out["memory_ratio_ours_to_stock"] = (
            out["ours"]["peak_memory_mb"] / out["stock"]["peak_memory_mb"]
        )
    return out


def step_launch(ctx) -> dict:
    if ctx["device"] != "cuda" or torch.cuda.device_count() < 2:
        raise Skip(f"needs 2 GPUs, this machine has {torch.cuda.device_count()}")
    from deepfashion2.engine import launch

    cfg = _cfg("cuda", os.path.join(ctx["tmp"], "launch"), ctx["split"], 5)
    launch(_launched, 2, dist_url="auto", args=(cfg, ctx["annos"], ctx["images"], ctx["split"]))
    return {"processes": 2, "iterations": 5}


def _launched(cfg, annos, images, split):
    from deepfashion2.data import register_deepfashion2

    register_deepfashion2(split, annos, images)  # each process registers it again
    _train(cfg)


def step_lazy(ctx) -> dict:
    """A few iterations and an evaluation through tools/lazyconfig_train_net.py."""
    import importlib.util

    from detectron2.engine import default_argument_parser

    from deepfashion2 import model_zoo

    spec = importlib.util.spec_from_file_location(
        "lazyconfig_train_net", os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cuda = ctx["device"] == "cuda"
    name = ("lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ" if cuda
            else "lazy/EfficientNet_Lite0_CPU")  # fmt: skip
    out = os.path.join(ctx["tmp"], "lazy")
    overrides = [
        f"train.output_dir={out}", f"train.max_iter={ctx['iters']}",
        f"train.device={ctx['device']}",
        f"dataloader.train.dataset.names=['{ctx['split']}']",
        f"dataloader.test.dataset.name={ctx['split']}", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "train.eval_period=0", "train.checkpointer.period=1000",
        # a few iterations: one learning rate (the recipe's steps are thousands of iterations in)
        "lr_multiplier.scheduler.values=[1.0]", "lr_multiplier.scheduler.milestones=[]",
        f"lr_multiplier.scheduler.num_updates={ctx['iters']}", "lr_multiplier.warmup_length=0.0",
    ]  # fmt: skip
    if not cuda:  # the small CPU version: small images, no download
        overrides += ["model.backbone.bottom_up.weights=''", "train.amp.enabled=False"]
    config = ["--config-file", model_zoo.get_config_file(name)]
    t = time.perf_counter()
    tool.main(default_argument_parser().parse_args([*config, *overrides]))
    train_s = time.perf_counter() - t
    final = os.path.join(out, "model_final.pth")
    res = tool.main(
        default_argument_parser().parse_args(
            [*config, "--eval-only", *overrides, f"train.init_checkpoint={final}"]
        )
    )
    return {"config": name, "iterations": ctx["iters"], "train_seconds": train_s,
            "benchmarks": sorted(res)}  # fmt: skip


STEPS = [
    step_train,
    step_train_amp,
    step_evaluate,
    step_tta,
    step_catalogue,
    step_landmark_head,
    step_launch,
    step_lazy,
]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--output", required=True, help="the JSON report")
    p.add_argument("--iters", type=int, help="training iterations (default: 20 on CUDA, 3 on CPU)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device here")
    from detectron2.utils.logger import setup_logger

    from deepfashion2.data import load_deepfashion2, register_deepfashion2
    from deepfashion2.data.synthetic import generate_split

    setup_logger(name="deepfashion2")
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "steps": {},
    }
    with tempfile.TemporaryDirectory(prefix="df2-check-") as tmp:
        root = os.path.join(tmp, "split")
        size = (600, 800) if args.device == "cuda" else (96, 128)  # real photos are ~600-800 px
        generate_split(root, 16, seed=0, size_range=size)
        annos, images = os.path.join(root, "annos"), os.path.join(root, "image")
        split = "df2_check_gpu"
        register_deepfashion2(split, annos, images)
        ctx = {
            "device": args.device,
            "tmp": tmp,
            "split": split,
            "annos": annos,
            "images": images,
            "iters": args.iters or (20 if args.device == "cuda" else 3),
            "dicts": load_deepfashion2(annos, images, use_cache=False),
        }
        for step in STEPS:
            name = step.__name__[len("step_") :]
            t = time.perf_counter()
            try:
                result = {"status": "ok", "result": step(ctx)}
            except Skip as e:
                result = {"status": "skipped", "reason": str(e)}
            except Exception as e:  # a check reports every failure and goes on to the next
                result = {
                    "status": "failed",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            result["seconds"] = time.perf_counter() - t
            report["steps"][name] = result
            print(
                f"{name}: {result['status']} ({result['seconds']:.0f} s)"
                + (
                    f": {result.get('reason') or result.get('error')}"
                    if result["status"] != "ok"
                    else ""
                ),
                file=sys.stderr,
            )
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1, default=str)
    return report


if __name__ == "__main__":
    main()
