#!/usr/bin/env python
"""
Evaluation benchmark: our scoring core vs. the straightforward route, side by side in one run.

A validation-size synthetic split (32,153 images at --scale 1, ~52K items with every attribute,
landmarks and ~80-point polygons; images are hard links to a few templates) and noisy predictions
made from it (misses, duplicates, wrong categories, false positives; ~60K detections, each with a
box, an RLE mask and 294 landmarks).

- ours: ground truth from the loader's dicts, result lists parsed, then all 4 tasks (bbox, segm,
  keypoints, keypoints_vis) on all 13 columns (IoU / OKS once per task, matching per subset).
- straightforward: pycocotools ``COCOeval`` with the DeepFashion2 sigmas once per task per column
  (52 runs), ground truth outside the subset ignored (``bench/reference.py``).

Both must agree to 1e-6 on every AP / AP50 / AP75.

    python bench/evaluation.py [--scale F] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
from _common import write_json
from registration import make_folder

VALIDATION_IMAGES = 32_153


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--out", default="bench/results/evaluation.json")
    args = p.parse_args()

    from reference import coco_gt_for_task, reference_ap
    from simulate import simulate_results

    from deepfashion2.data import load_deepfashion2
    from deepfashion2.data.coco_export import dicts_to_coco
    from deepfashion2.evaluation import TASKS, Detections, GroundTruth, evaluate, subsets

    n = max(1, round(VALIDATION_IMAGES * args.scale))
    work = tempfile.mkdtemp(prefix="df2-bench-eval-")
    try:
        t = time.perf_counter()
        make_folder(work, n, seed=1)
        dicts = load_deepfashion2(f"{work}/annos", f"{work}/image", cache_dir=f"{work}/cache")
        sim = simulate_results(GroundTruth.from_dicts(dicts), seed=0)
        print(f"setup: {n} images, {len(sim['bbox'])} detections ({time.perf_counter() - t:.0f} s)")

        # ours, from dataset dicts and result lists to all tables
        t0 = time.perf_counter()
        gt = GroundTruth.from_dicts(dicts)
        kp = Detections.from_results(sim["keypoints"], "keypoints", gt)
        dets = {
            "bbox": Detections.from_results(sim["bbox"], "bbox", gt),
            "segm": Detections.from_results(sim["segm"], "segm", gt),
            "keypoints": kp,
            "keypoints_vis": kp,
        }
        parse_s = time.perf_counter() - t0
        ours = evaluate(gt, dets)
        ours_s = time.perf_counter() - t0
        print(f"ours: {ours_s:.1f} s (ground truth and result parsing {parse_s:.1f} s)")

        # straightforward: one COCOeval per task per column
        t0 = time.perf_counter()
        coco = dicts_to_coco(sorted(dicts, key=lambda d: d["image_id"]))
        ref_task_s, max_diff, compared = {}, 0.0, 0
        for task in TASKS:
            ts = time.perf_counter()
            cg = coco_gt_for_task(coco, task)
            results = sim["keypoints" if task.startswith("keypoints") else task]
            for sub in [None] + subsets():
                ignored = (
                    [] if sub is None else (np.flatnonzero(~gt.subset_mask(*sub)) + 1).tolist()
                )
                suffix = "" if sub is None else f"/{sub[0]}:{sub[1]}"
                ref = reference_ap(cg, results, task, ignored)
                for r, m in zip(ref, ("AP", "AP50", "AP75")):
                    mine = ours[task][m + suffix]
                    if r == -1:
                        assert math.isnan(mine), (task, sub, m)
                    else:
                        max_diff = max(max_diff, abs(mine - r))
                        compared += 1
            ref_task_s[task] = time.perf_counter() - ts
            print(f"straightforward {task}: {ref_task_s[task]:.1f} s")
        ref_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = {
        "speedup": ref_s / ours_s,
        "total_s": ours_s,
        "max_abs_diff": max_diff,
        "ours_parse_s": parse_s,
        "straightforward_s": ref_s,
        "straightforward_task_s": ref_task_s,
        "values_compared": compared,
        "images": n,
        "items": int(gt.num_items),
        "detections": len(sim["bbox"]),
        "scale": args.scale,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=1))
    write_json(args.out, out, indent=1)


if __name__ == "__main__":
    main()
