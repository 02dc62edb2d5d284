"""What the demo leaves behind: tables, metrics.json, and the console summary."""

from __future__ import annotations

import json
import os

from ...evaluation import tables
from ...evaluation.tables import json_safe
from ...evaluation.tasks import TASKS
from .chance import not_above_chance

CHANCE_DEFINITION = {
    "bbox/segm/keypoints": "10 uniformly random boxes per image (random category and score, box "
    "masks, landmarks uniform in the box), mean of 3 seeds",
    "retrieval": "expected top-k of a uniformly random ranking of the ground-truth shop items of "
    "the whole gallery (retrieval_within_category: of the query's category only)",
}


def write_tables(results: dict, output_dir: str) -> str:
    """``tables.md`` and ``tables.json`` in the dataset README's layout; returns the Markdown."""
    md = tables.markdown_tables(results)
    with open(os.path.join(output_dir, "tables.md"), "w") as f:
        f.write(md)
    with open(os.path.join(output_dir, "tables.json"), "w") as f:
        json.dump(tables.table_dict(results), f, indent=1)
    return md


def write_metrics(metrics: dict, output_dir: str) -> None:
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(json_safe(metrics), f, indent=1)


def where(output_dir: str, metrics: dict, cfg) -> str:
    """The closing lines of ``make demo``: what it wrote where, and what to do with the model."""
    d = output_dir.rstrip("/")
    figures = metrics.get("figures", {})
    strip = figures.get("retrieval_strip")
    lines = [
        f"Everything is in {d}/:",
        f"  {d}/tables.md, tables.json   the four benchmarks' tables (above)",
        f"  {d}/metrics.json             every figure, with chance levels and timings",
        f"  {d}/overview.png             predictions{' and a retrieval strip' if strip else ''}"
        f" ({d}/predictions/, {d}/subset_ap.png{', ' + d + '/' + strip if strip else ''})",
        f"  {d}/model_final.pth          the trained model ({d}/config.yaml: its config)",
        f"  {d}/inference/               result files in the official formats; {d}/log.txt",
        "Search shop photos with it:",
        f"  .venv/bin/python tools/index_catalogue.py --config-file {d}/config.yaml "
        f"--images SHOP_IMAGES/ --output catalogue/ MODEL.WEIGHTS {d}/model_final.pth",
        "  .venv/bin/python tools/serve.py --catalogue catalogue/",
    ]
    return "\n".join(lines)


def summary(results: dict, chance: dict, above: dict) -> str:
    """The console summary: each benchmark against chance, and plainly what is not above it."""
    lines = ["| benchmark | result | chance |", "|---|---|---|"]
    for task, (label, keys) in ((k, (t.label, t.headline)) for k, t in TASKS.items()):
        if task not in results:
            continue
        keys = keys if isinstance(keys, tuple) else (keys,)
        got = " / ".join(f"{results[task][k] / 100:.3f}" for k in keys)
        ref = " / ".join(f"{chance[task][k] / 100:.3f}" for k in keys) if task in chance else "-"
        lines.append(f"| {label} | {got} | {ref} |")
    failed = not_above_chance(above)
    if failed:
        verdict = "NOT above chance: " + ", ".join(failed)
    else:
        verdict = "Every benchmark is above chance at every metric and every k."
    return "\n".join(lines) + "\n\n" + verdict + "\n"
