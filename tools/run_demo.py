#!/usr/bin/env python
"""
`make demo`: generate (once) and register the embedded synthetic DeepFashion2 set, or a real
DeepFashion2 folder with --dataset, and print a summary of what was loaded.

Training, the four benchmarks and the figures are not part of the demo yet (see README).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import time

from tabulate import tabulate


def summarize(name: str, dicts: list[dict], seconds: float) -> str:
    from deepfashion2.landmarks import ATTRIBUTES, CATEGORY_NAMES

    annos = [a for d in dicts for a in d.get("annotations", ())]
    cats = collections.Counter(a["category_id"] for a in annos)
    sources = collections.Counter(d.get("source") for d in dicts)
    lines = [
        f"{name}: {len(dicts)} images ({dict(sources)}), {len(annos)} items, "
        f"loaded in {seconds:.2f}s"
    ]
    lines.append(
        tabulate(
            [(CATEGORY_NAMES[c], cats[c]) for c in range(13)],
            headers=["category", "items"],
            tablefmt="github",
        )
    )
    rows = [
        (attr, *[sum(a[attr] == v + 1 for a in annos) for v in range(3)], "/".join(values))
        for attr, values in ATTRIBUTES.items()
    ]
    lines.append(tabulate(rows, headers=["attribute", "1", "2", "3", "values"], tablefmt="github"))
    pairs = {
        (d["pair_id"], a["style"])
        for d in dicts
        for a in d.get("annotations", ())
        if a["style"] > 0 and d.get("source") == "user"
    }
    shop = {
        (d["pair_id"], a["style"])
        for d in dicts
        for a in d.get("annotations", ())
        if a["style"] > 0 and d.get("source") == "shop"
    }
    lines.append(f"consumer items with a shop match (pair_id, style): {len(pairs & shop)}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--dataset", help="a real DeepFashion2 folder with <split>/{annos,image}")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from detectron2.data import DatasetCatalog

    from deepfashion2.data import register_deepfashion2

    if args.dataset:
        names = []
        for split in ("train", "validation"):
            d = os.path.join(args.dataset, split)
            if os.path.isdir(os.path.join(d, "annos")):
                name = f"demo_deepfashion2_{split}"
                register_deepfashion2(name, os.path.join(d, "annos"), os.path.join(d, "image"))
                names.append(name)
        if not names:
            raise SystemExit(
                f"no <split>/annos folder under {args.dataset} (see datasets/README.md)"
            )
    else:
        names = ["deepfashion2_mini_train", "deepfashion2_mini_validation"]
    for name in names:
        t = time.perf_counter()
        dicts = DatasetCatalog.get(name)
        print(summarize(name, dicts, time.perf_counter() - t), end="\n\n")
    print("Next: tools/train_net.py --config-file configs/Mini-CPU.yaml (see README).")


if __name__ == "__main__":
    main()
