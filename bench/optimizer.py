#!/usr/bin/env python
"""
The demo model's optimizer step, side by side: Detectron2's route (``maybe_add_gradient_clipping``
around ``torch.optim.AdamW``: one ``clip_grad_norm_`` and one AdamW update loop per parameter)
against ``deepfashion2.engine.optim.build_adamw`` (foreach per-parameter clipping + fused AdamW),
on the Mini-CPU model's parameters with random gradients. Reports ms per step for each, their
ratio, and the largest difference of the parameters after the same steps (the two must agree).

    python bench/optimizer.py [--steps 30] [--threads 2] [--out bench/results/optimizer.json]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import write_json
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.solver.build import maybe_add_gradient_clipping

from deepfashion2 import add_deepfashion2_config
from deepfashion2.engine.optim import build_adamw, param_groups
from deepfashion2.model_zoo import get_config_file


def stock(cfg, model):
    params = param_groups(cfg, model)
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )


def timed(model, opt, grads, steps: int) -> float:
    for _ in range(3):  # warm-up (state allocation)
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/optimizer.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(get_config_file("Mini-CPU"))
    base = build_model(cfg)
    grads = [torch.randn_like(p) * 10 for p in base.parameters()]  # large: clipping is active
    models = {"detectron2": copy.deepcopy(base), "deepfashion2": copy.deepcopy(base)}
    opts = {
        "detectron2": stock(cfg, models["detectron2"]),
        "deepfashion2": build_adamw(cfg, models["deepfashion2"]),
    }
    for name in models:  # the same gradients and steps on both, then compare
        for p, g in zip(models[name].parameters(), grads):
            p.grad = g.clone()
    ms = {name: timed(models[name], opts[name], grads, args.steps) for name in models}
    diff = max(
        float((a - b).abs().max())
        for a, b in zip(models["detectron2"].parameters(), models["deepfashion2"].parameters())
    )
    result = {
        "parameters": sum(p.numel() for p in base.parameters()),
        "parameter_tensors": len(grads),
        "threads": args.threads,
        "steps": args.steps,
        "ms_per_step": ms,
        "speedup": ms["detectron2"] / ms["deepfashion2"],
        "max_abs_param_diff_after_steps": diff,
    }
    print(result)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
