"""
The benchmark tables in the dataset README's layout: one row per metric, 13 columns (the 12
subsets, then overall), values on 0-1 with three decimals; "-" marks a subset without items.
"""

from __future__ import annotations

import json
import math
import os

from .retrieval import TOPK
from .scoring import subsets

# (title, [(row label, task, metric)])
TABLES = [
    ("Clothes detection", [(m, "bbox", m) for m in ("AP", "AP50", "AP75")]),
    (
        "Landmark estimation",
        [(f"{m} (visible)", "keypoints_vis", m) for m in ("AP", "AP50", "AP75")]
        + [(f"{m} (visible + occluded)", "keypoints", m) for m in ("AP", "AP50", "AP75")],
    ),
    ("Clothes segmentation", [(m, "segm", m) for m in ("AP", "AP50", "AP75")]),
]


def columns() -> list[tuple[str, str]]:
    """(header, key suffix) of the 13 columns; the suffix is "" for overall."""
    cols = [(f"{a.replace('_', '-')} {v.replace('_', ' ')}", f"/{a}:{v}") for a, v in subsets()]
    return cols + [("overall", "")]


# the retrieval table's row groups: (label, results key)
RETRIEVAL_ROWS = [("detected boxes", "retrieval"), ("ground-truth boxes", "retrieval_gt_boxes")]
RETRIEVAL_TITLE = "Consumer-to-shop clothes retrieval"


def _rows(results: dict) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(title, [(row label, results key, metric)]) of every table with results."""
    out = []
    for title, rows in TABLES:
        rows = [r for r in rows if r[1] in results]
        if rows:
            out.append((title, rows))
    rows = [
        (f"top-{k} ({label})", key, f"top{k}")
        for label, key in RETRIEVAL_ROWS
        if key in results
        for k in TOPK
    ]
    if rows:
        out.append((RETRIEVAL_TITLE, rows))
    return out


def _cell(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown_tables(results: dict[str, dict[str, float]], scale: float = 100.0) -> str:
    """Markdown of every table whose tasks are in ``results`` (values divided by ``scale``)."""
    out = []
    cols = columns()
    for title, rows in _rows(results):
        out += [f"### {title}", ""]
        out.append("| | " + " | ".join(h for h, _ in cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        for label, task, metric in rows:
            vals = [_scaled(results[task].get(metric + suffix), scale) for _, suffix in cols]
            out.append(f"| {label} | " + " | ".join(_cell(v) for v in vals) + " |")
        out.append("")
    return "\n".join(out)


def to_detectron2(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """0-1 AP -> Detectron2's 0-100 scale (NaN stays NaN)."""
    return {t: {k: v * 100 for k, v in r.items()} for t, r in results.items()}


def json_safe(x):
    """A results structure for JSON: NaN (an empty subset) becomes null, recursively."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def save(
    results: dict[str, dict[str, float]], output_dir: str, prefix: str = "deepfashion2"
) -> None:
    """Write ``<prefix>_metrics.json`` (the results dict, NaN as null), ``<prefix>_tables.md``."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{prefix}_metrics.json"), "w") as f:
        json.dump(json_safe(results), f, indent=1)
    with open(os.path.join(output_dir, f"{prefix}_tables.md"), "w") as f:
        f.write(markdown_tables(results))


def table_dict(results: dict[str, dict[str, float]], scale: float = 100.0) -> dict:
    """The tables as data: {title: {row: {column: value on 0-1 or None}}}."""
    cols = columns()
    return {
        title: {
            label: {h: _scaled(results[task].get(metric + sfx), scale) for h, sfx in cols}
            for label, task, metric in rows
        }
        for title, rows in _rows(results)
    }


def _scaled(v, scale: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v / scale
