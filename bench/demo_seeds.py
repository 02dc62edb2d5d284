#!/usr/bin/env python
"""
A demo recipe (``make demo``'s by default, or ``--config-file``) with several
seeds, so that a published figure is a mean and a spread, not one run: the seed sets the
initialisation, the data order and the augmentation. Each seed runs in a fresh process, one after
the other, exactly as ``tools/run_demo.py --seed S`` does.

Reports, per metric, every run, the mean and the standard deviation (over runs, ddof=1), the
wall time of each run, and the recipe's targets (``TARGETS``: its issue's minimum means, box AP
sd <= 2.5, every retrieval top-k >= 1.5x the whole-gallery random-ranking chance). With
``--curve-seeds``, every checkpoint of those runs is evaluated afterwards (outside the timed
run): the learning curve, AP against iterations.

    python bench/demo_seeds.py [--seeds 1 2 3] [--config-file configs/Mini-CPU.yaml] \
        [--curve-seeds 1] [--out FILE] [--keep DIR [--reuse]]

``--reuse`` (with ``--keep``) takes a seed's finished run from DIR instead of running it again
(its metrics and the wall time recorded beside them), so that seeds can be added to a set later.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import cpu_model, eval_only, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METRICS = [
    ("bbox", "AP"), ("bbox", "AP50"), ("bbox", "AP75"),
    ("segm", "AP"), ("segm", "AP50"), ("segm", "AP75"),
    ("keypoints", "AP"), ("keypoints_vis", "AP"),
    *[("retrieval", f"top{k}") for k in (1, 5, 10, 15, 20)],
    *[("retrieval_gt_boxes", f"top{k}") for k in (1, 5, 10, 15, 20)],
]  # fmt: skip


# each demo config's targets (issues #11 and #26): metric -> minimum of the seeds' mean
TARGETS = {
    "Mini-CPU.yaml": {"bbox/AP": 35, "segm/AP": 30, "keypoints/AP": 20, "retrieval/top1": 20},
    "EfficientNet-Lite0-CPU.yaml": {
        "bbox/AP": 72, "segm/AP": 70, "keypoints/AP": 55, "retrieval/top1": 60,
        "retrieval_gt_boxes/top1": 85,
    },
}  # fmt: skip


def targets(mean: dict, sd: dict, chance: dict, config: str = "Mini-CPU.yaml") -> dict:
    ok = {f"{k} >= {v}": mean[k] >= v for k, v in TARGETS[os.path.basename(config)].items()}
    ok["box AP sd <= 2.5"] = sd["bbox/AP"] <= 2.5
    for k in (1, 5, 10, 15, 20):
        ref = chance["retrieval"][f"top{k}"]
        ok[f"retrieval top-{k} >= 1.5x chance ({1.5 * ref:.1f})"] = (
            mean[f"retrieval/top{k}"] >= 1.5 * ref
        )
    return ok


def markdown(result: dict) -> str:
    """README's demo table: mean ± sd over the seeds, each run, and chance (0-100)."""
    names = {
        "bbox/AP": "box AP", "segm/AP": "mask AP", "keypoints_vis/AP": "landmark AP (visible)",
        "keypoints/AP": "landmark AP (visible + occluded)",
        **{f"retrieval/top{k}": f"retrieval top-{k} (detected boxes)" for k in (1, 5, 10, 20)},
        "retrieval_gt_boxes/top1": "retrieval top-1 (ground-truth boxes)",
    }  # fmt: skip
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"| benchmark (validation, 0-100) | mean ± sd | runs (seeds {seeds}) | chance |",
        "|---|---|---|---|",
    ]
    for key, name in names.items():
        task, metric = key.split("/")
        # both retrieval variants against a random ranking of the same gallery
        ref = result["chance"].get("retrieval" if task.startswith("retrieval") else task, {})
        ref = ref.get(metric)
        runs = " / ".join(f"{v:.1f}" for v in result["runs"][key])
        lines.append(
            f"| {name} | {result['mean'][key]:.1f} ± {result['sd'][key]:.1f} | {runs} | "
            f"{'' if ref is None else f'{ref:.1f}'} |"
        )
    return "\n".join(lines)


def learning_curve(run_dir: str) -> dict:
    """
    Box, mask and landmark AP and retrieval top-1 of every checkpoint a demo run left
    (``model_0000199.pth``, ...), evaluated after the run, so that the run's wall time is not
    touched: {iteration: {metric: value}}.
    """
    curve = {}
    ckpts = sorted(n for n in os.listdir(run_dir) if n.startswith("model_0") and n.endswith(".pth"))
    last = json.load(open(os.path.join(run_dir, "metrics.json")))["train_iterations"]
    if not any(int(n[6:13]) + 1 == last for n in ckpts):
        ckpts.append("model_final.pth")  # unless a periodic checkpoint is the last iteration's
    for name in ckpts:
        it = int(name[6:13]) + 1 if name != "model_final.pth" else last
        out = os.path.join(run_dir, "curve", str(it))
        res = eval_only(run_dir, os.path.join(run_dir, name), out)
        curve[it] = {f"{t}/{k}": res[t][k] for t, k in METRICS if t in res and k in res[t]}
        print(f"  iteration {it}: box AP {curve[it]['bbox/AP']:.1f}", flush=True)
    return curve


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", default="bench/results/demo_seeds.json")
    p.add_argument("--keep", help="keep each run's demo folder under this folder")
    p.add_argument("--reuse", action="store_true", help="take finished runs from --keep")
    p.add_argument(
        "--config-file", default=os.path.join(ROOT, "configs", "EfficientNet-Lite0-CPU.yaml"),
        help="the demo recipe (default: make demo's)",
    )  # fmt: skip
    p.add_argument(
        "--curve-seeds", type=int, nargs="*", default=[],
        help="after these seeds' runs (untimed), evaluate every checkpoint: AP against iterations",
    )  # fmt: skip
    args = p.parse_args()
    if args.reuse and not args.keep:
        p.error("--reuse needs --keep")
    work = args.keep or tempfile.mkdtemp(prefix="df2-demo-seeds-")
    runs = []
    try:
        for seed in args.seeds:
            out = os.path.join(work, f"seed{seed}")
            wall_file = os.path.join(out, "bench_wall_seconds.json")
            if not (args.reuse and os.path.exists(wall_file)):
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, os.path.join(ROOT, "tools", "run_demo.py"), "--output", out,
                     "--seed", str(seed), "--config-file", args.config_file],
                    check=True, stdout=subprocess.DEVNULL,
                )  # fmt: skip
                write_json(wall_file, {"wall_seconds": time.perf_counter() - t})
            with open(os.path.join(out, "metrics.json")) as f:
                m = json.load(f)
            with open(wall_file) as f:
                m["wall_seconds"] = json.load(f)["wall_seconds"]
            if seed in args.curve_seeds:
                m["curve"] = learning_curve(out)
            runs.append(m)
            got = {f"{t}/{k}": round(m[t][k], 1) for t, k in METRICS[:1] + METRICS[6:9]}
            print(f"seed {seed}: {m['wall_seconds']:.0f} s, {got}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = {f"{t}/{k}": [r[t][k] for r in runs] for t, k in METRICS}
    mean = {k: float(np.mean(v)) for k, v in table.items()}
    sd = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in table.items()}
    chance = runs[0]["chance"]
    below = [
        f"{t} {k}" for r in runs for t, ms in r["above_chance"].items() for k, ok in ms.items()
        if not ok
    ]  # fmt: skip
    result = {
        "seeds": args.seeds,
        "runs": table,
        "mean": mean,
        "sd": sd,
        "wall_seconds": [r["wall_seconds"] for r in runs],
        "train_seconds": [r["train_seconds"] for r in runs],
        "chance": {
            t: chance[t] for t in ("bbox", "segm", "keypoints", "keypoints_vis", "retrieval")
        },
        "not_above_chance": sorted(set(below)),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "recipe": {
            "config": os.path.relpath(args.config_file, ROOT),
            "max_iter": runs[0]["train_iterations"],
        },
        "curves": {s: r["curve"] for s, r in zip(args.seeds, runs) if "curve" in r},
    }
    if len({r["train_iterations"] for r in runs}) > 1:
        raise SystemExit(f"runs of different recipes: {[r['train_iterations'] for r in runs]}")
    result["targets"] = targets(mean, sd, chance, args.config_file)
    result["markdown"] = markdown(result)
    print(json.dumps({"mean": mean, "sd": sd, "targets": result["targets"]}, indent=1))
    print(result["markdown"])
    write_json(args.out, result)


if __name__ == "__main__":
    main()
