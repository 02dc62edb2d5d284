#!/usr/bin/env python
"""
Learning curves of the demo recipes side by side (README): box, mask and landmark AP and
retrieval top-1 against training minutes, from the ``curves`` that ``bench/demo_seeds.py
--curve-seeds`` records (each checkpoint evaluated after the run).

    python bench/plot_curves.py LABEL=bench/results/demo_seeds_effnet.json [LABEL=...] \
        [--out docs/learning_curves.png]
"""

from __future__ import annotations

import argparse
import json

METRICS = [
    ("bbox/AP", "box AP"), ("segm/AP", "mask AP"), ("keypoints/AP", "landmark AP (vis + occ)"),
    ("retrieval/top1", "retrieval top-1 (detected)"),
    ("retrieval_gt_boxes/top1", "retrieval top-1 (gt boxes)"),
]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", nargs="+", help="LABEL=demo_seeds result JSON with curves")
    p.add_argument("--out", default="docs/learning_curves.png")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.0), dpi=100)
    for k, spec in enumerate(args.results):
        label, path = spec.split("=", 1)
        with open(path) as f:
            result = json.load(f)
        for seed, curve in result["curves"].items():
            iters = sorted(int(i) for i in curve)
            i_seed = result["seeds"].index(int(seed))
            minutes_per_iter = result["train_seconds"][i_seed] / 60 / max(iters)
            x = [i * minutes_per_iter for i in iters]
            for ax, (key, name) in zip(axes, METRICS):
                ax.plot(x, [curve[str(i)][key] for i in iters], "o-", ms=3, color=f"C{k}",
                        label=f"{label} (seed {seed})")  # fmt: skip
                ax.set_title(name, fontsize=9)
                ax.set_xlabel("training minutes (2 CPU cores)", fontsize=8)
                ax.set_ylim(0, 100)
                ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
