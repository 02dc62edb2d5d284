#!/usr/bin/env python
"""
Test-time augmentation against the plain model, side by side in one run: the four benchmarks
(box, mask and landmark AP, retrieval top-k with detected and ground-truth boxes) and the
inference time per image (the detection pass), for each trained demo run given
(``bench/demo_seeds.py --keep DIR`` leaves one folder per seed, each with ``config.yaml`` and
``model_final.pth``):

    python bench/tta.py RUN_DIR [RUN_DIR ...] [--out bench/results/tta.json]

Settings: ``plain``; ``flip`` (the test size and its mirror image); ``flip+3 scales`` (three
sizes around the test size, each with its mirror image). Costs are Detectron2's inference time
per validation image (model and evaluator), reported as ratios to plain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile

import numpy as np
from _common import cpu_model, eval_only, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METRICS = [
    ("bbox", "AP"), ("segm", "AP"), ("keypoints", "AP"), ("keypoints_vis", "AP"),
    ("retrieval", "top1"), ("retrieval", "top20"),
    ("retrieval_gt_boxes", "top1"), ("retrieval_gt_boxes", "top20"),
]  # fmt: skip


def settings(test_size: int, max_size: int) -> dict[str, list[str]]:
    step = max(16, test_size // 8)
    sizes = f"({test_size - step}, {test_size}, {test_size + step})"
    aug = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MAX_SIZE", str(max_size + 2 * step)]
    return {
        "plain": [],
        "flip": aug + ["TEST.AUG.MIN_SIZES", f"({test_size},)", "TEST.AUG.FLIP", "True"],
        "flip+3 scales": aug + ["TEST.AUG.MIN_SIZES", sizes, "TEST.AUG.FLIP", "True"],
    }


def evaluate(run_dir: str, opts: list[str], out: str) -> tuple[dict, float]:
    """
    (results, seconds per image of the detection pass) of one --eval-only; with TEST.AUG the
    TTA pass's (it runs after the plain one, as in Detectron2's train_net).
    """
    weights = os.path.join(run_dir, "model_final.pth")
    res = eval_only(run_dir, weights, out, opts, "inference_TTA" if opts else "inference")
    # Detectron2's inference_on_dataset: "Total inference time: ... (X s / iter per device, ...)"
    # per pass: detected boxes, then ground-truth boxes; plain first, then TTA
    with open(os.path.join(out, "log.txt")) as f:
        per_image = [
            float(m) for m in re.findall(r"Total inference time: \S+ \(([\d.]+) s / iter", f.read())
        ]
    return {f"{t}/{k}": res[t][k] for t, k in METRICS}, per_image[2 if opts else 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="demo run folders (config.yaml, model_final.pth)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "tta.json"))
    args = p.parse_args()
    from detectron2.config import get_cfg

    from deepfashion2 import add_deepfashion2_config

    per_run, seconds = {}, {}
    for run in args.runs:
        cfg = get_cfg()
        add_deepfashion2_config(cfg)
        cfg.merge_from_file(os.path.join(run, "config.yaml"))
        per_run[run], seconds[run] = {}, {}
        for name, opts in settings(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST).items():
            with tempfile.TemporaryDirectory() as out:
                per_run[run][name], seconds[run][name] = evaluate(run, opts, out)
            print(run, name, f"{seconds[run][name]:.3f} s/image", per_run[run][name], flush=True)
    names = list(next(iter(per_run.values())))
    keys = [f"{t}/{k}" for t, k in METRICS]
    mean = {
        n: {m: float(np.mean([r[n][m] for r in per_run.values()])) for m in keys} for n in names
    }
    gain = {n: {m: mean[n][m] - mean["plain"][m] for m in mean[n]} for n in names}
    cost = {n: float(np.mean([s[n] / s["plain"] for s in seconds.values()])) for n in names}
    result = {
        "cpu": cpu_model(), "runs": per_run, "seconds": seconds, "mean": mean,
        "gain_over_plain": gain, "cost_ratio_to_plain": cost,
    }  # fmt: skip
    print(json.dumps({"gain_over_plain": gain, "cost_ratio_to_plain": cost}, indent=1))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
