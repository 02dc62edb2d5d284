#!/usr/bin/env python
"""
Score result files in the official DeepFashion2 formats against a split's annotations, without a
model, and print the dataset README's tables:

    python tools/evaluate.py --anno-dir validation/annos --image-dir validation/image \
        --results boxes.json landmarks.json masks.json --output-json metrics.json

Each file's kind is recognised from its content (``bbox`` / ``keypoints`` / ``segmentation``
entries). ``--output-json`` writes the same results dict the Detectron2 evaluator returns
(0-100, NaN as null); ``--output-dir`` also writes the tables as Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from deepfashion2.data import load_deepfashion2
from deepfashion2.evaluation import GroundTruth, evaluate, tables
from deepfashion2.evaluation.detections import load_result_files


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--anno-dir", required=True, help="the split's annos/ folder")
    p.add_argument("--image-dir", required=True, help="the split's image/ folder (image sizes)")
    p.add_argument("--results", nargs="+", required=True, help="official result JSON files")
    p.add_argument("--output-json", help="write the results dict here")
    p.add_argument("--output-dir", help="write deepfashion2_{metrics.json,tables.md} here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    gt = GroundTruth.from_dicts(load_deepfashion2(args.anno_dir, args.image_dir))
    dets = load_result_files(args.results, gt)
    results = tables.to_detectron2(evaluate(gt, dets))
    print(tables.markdown_tables(results))
    print(f"({gt.num_items} items, {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    if args.output_json:
        clean = {
            t: {k: None if math.isnan(v) else v for k, v in r.items()} for t, r in results.items()
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            json.dump(clean, f, indent=1)
    if args.output_dir:
        tables.save(results, args.output_dir)
    return results


if __name__ == "__main__":
    main()
