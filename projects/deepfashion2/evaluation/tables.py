"""
The benchmark tables in the dataset README's layout: one row per metric, 13 columns (the 12
subsets, then overall), values on 0-1 with three decimals; "-" marks a subset without items.
"""

from __future__ import annotations

import json
import math
import os

from .scoring import subsets
from .tasks import TASKS


def columns() -> list[tuple[str, str]]:
    """(header, key suffix) of the 13 columns; the suffix is "" for overall."""
    cols = [(f"{a.replace('_', '-')} {v.replace('_', ' ')}", f"/{a}:{v}") for a, v in subsets()]
    return cols + [("overall", "")]


def _rows(results: dict) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(title, [(row label, results key, metric)]) of every table with results (tasks.TASKS)."""
    out: dict[str, list] = {}
    for key, task in TASKS.items():
        if key not in results:
            continue
        rows = out.setdefault(task.table, [])
        for m in task.metrics:
            if m.startswith("top"):
                rows.append((f"top-{m[3:]} ({task.row})", key, m))
            else:
                rows.append((f"{m} {task.row}".strip(), key, m))
    return list(out.items())


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
