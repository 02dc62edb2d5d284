#!/usr/bin/env python
"""
How to spend a small machine's cores on the demo's training, side by side: the Mini-CPU recipe
trained with ``tools/train_net.py`` for a few iterations in one process (all cores' threads) with
a data-loader worker beside it or loading in the training process, and in two processes (DDP,
gloo; the cores shared out, one thread each on 2 cores) with the same total batch.

Reports per setting the seconds per iteration (the mean of Detectron2's logged iteration times
after the first 20 iterations), the wall time of the whole command (process start-up included)
and the ratio of seconds per iteration to one process with one worker. ``--weights`` starts from
a trained model: late in training more foreground RoIs reach the heads, and a step costs more.

    python bench/demo_processes.py [--iters 60] [--weights output/demo/model_final.pth]
        [--out bench/results/demo_processes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from _common import cpu_model, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SETTINGS = [  # (processes, data-loader workers per process)
    (1, 1),
    (1, 0),
    (2, 0),
    (2, 1),
]


def run(procs: int, workers: int, iters: int, weights: str, out: str) -> dict:
    cmd = [
        sys.executable, os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file", os.path.join(ROOT, "configs", "Mini-CPU.yaml"), "--num-gpus", str(procs),
        "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", "1000000", "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", str(workers), "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "metrics.json")) as f:
        logged = [json.loads(line) for line in f]
    timed = [d for d in logged if "time" in d]
    # Detectron2 logs every 20 iterations and the last: past the first 20 (warm-up) when the
    # run is that long, else whatever a short run logged
    times = [d["time"] for d in timed if d["iteration"] >= 20] or [d["time"] for d in timed]
    if not times:
        raise SystemExit(f"{out}/metrics.json: no iteration times logged ({iters} iterations)")
    return {
        "processes": procs,
        "loader_workers_per_process": workers,
        "torch_threads_per_process": max(1, (os.cpu_count() or 1) // procs),
        "s_per_iter": sum(times) / len(times),
        "wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--weights", default="", help="start from these weights (default: scratch)")
    p.add_argument("--out", default="bench/results/demo_processes.json")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="df2-procs-") as tmp:
        for procs, workers in SETTINGS:
            row = run(
                procs, workers, args.iters, args.weights, os.path.join(tmp, f"{procs}{workers}")
            )
            rows.append(row)
            print(json.dumps(row))
    base = rows[0]["s_per_iter"]
    for row in rows:
        row["s_per_iter_vs_1_process_1_worker"] = row["s_per_iter"] / base
    write_json(
        args.out,
        {
            "config": "configs/Mini-CPU.yaml",
            "iterations": args.iters,
            "weights": args.weights or "scratch",
            "cpu_count": os.cpu_count(),
            "cpu": cpu_model(),
            "torch": torch.__version__,
            "settings": rows,
        },
    )


if __name__ == "__main__":
    main()
