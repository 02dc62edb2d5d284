#!/usr/bin/env python
"""
Score result files in the official DeepFashion2 formats against a split's annotations, without a
model, and print the dataset README's tables:

    python tools/evaluate.py --anno-dir validation/annos --image-dir validation/image \
        --results boxes.json landmarks.json masks.json --output-json metrics.json

Each file's kind is recognised from its content (``bbox`` / ``keypoints`` / ``segmentation``
entries, or a retrieval submission: ``query_image_id`` + ``gallery_image_id`` lists). A retrieval
submission is scored against the split's annotations, or against the official retrieval
ground truth with ``--query-gt query_gt.json --gallery-gt gallery_gt.json`` (then the annotation
folder is not needed; ``datasets/prepare_deepfashion2.py --retrieval-gt`` writes these files for any
split), exactly as the official retrieval script scores it. Per-attribute retrieval results need
the split's annotations (the official files carry no attributes). ``--output-json`` writes the
same results dict the Detectron2 evaluators return (0-100, NaN as null); ``--output-dir`` also
writes the tables as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)

from deepfashion2.data import load_split_store
from deepfashion2.evaluation import (
    GroundTruth,
    ResultFormatError,
    RetrievalGroundTruth,
    Submission,
    evaluate,
    score_submission,
    tables,
)
from deepfashion2.evaluation.detections import load_result_files, read_json
from deepfashion2.evaluation.retrieval import topk_percent
from deepfashion2.evaluation.tables import json_safe
from deepfashion2.utils.cli import fail, tool_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--anno-dir", help="the split's annos/ folder")
    p.add_argument("--image-dir", help="the split's image/ folder (image sizes)")
    p.add_argument("--results", nargs="+", required=True, help="official result JSON files")
    p.add_argument("--query-gt", help="official retrieval query ground truth (JSON list)")
    p.add_argument("--gallery-gt", help="official retrieval gallery ground truth (JSON list)")
    p.add_argument("--output-json", help="write the results dict here")
    p.add_argument("--output-dir", help="write deepfashion2_{metrics.json,tables.md} here")
    return p.parse_args(argv)


def is_retrieval_submission(entries) -> bool:
    return (
        bool(entries)
        and isinstance(entries, list)
        and isinstance(entries[0], dict)
        and ("query_image_id" in entries[0] and "gallery_image_id" in entries[0])
    )


@tool_main
def main(argv=None) -> dict:
    """Scores the files; bad input ends with one line naming the file, entry and field."""
    return run(parse_args(argv))


def run(args) -> dict:
    start = time.perf_counter()
    if bool(args.query_gt) != bool(args.gallery_gt):
        fail("--query-gt and --gallery-gt go together")
    files = {path: read_json(path) for path in args.results}  # each file parsed once
    for path, entries in files.items():
        if isinstance(entries, list) and not entries:
            raise ResultFormatError(path, None, "<top level>", "holds no results: nothing to score")
    retrieval = [p for p, e in files.items() if is_retrieval_submission(e)]
    detection = {p: e for p, e in files.items() if p not in retrieval}
    if len(retrieval) > 1:
        fail(f"more than one retrieval submission: {retrieval}")
    need_split = detection or (retrieval and not args.query_gt)
    if need_split and not (args.anno_dir and args.image_dir):
        fail("--anno-dir and --image-dir are needed for these results")
    gt = (
        GroundTruth.from_store(load_split_store(args.anno_dir, args.image_dir))
        if need_split
        else None
    )
    if gt is not None and not gt.num_items:
        fail(f"{args.anno_dir}: the split holds no annotated items")
    results = (
        tables.to_detectron2(evaluate(gt, load_result_files(detection, gt))) if detection else {}
    )
    if retrieval:
        if args.query_gt:
            rgt = RetrievalGroundTruth.from_official(
                read_json(args.query_gt), read_json(args.gallery_gt), args.query_gt, args.gallery_gt
            )
        else:
            rgt = RetrievalGroundTruth.from_groundtruth(gt)
        if not rgt.num_queries:
            fail("the retrieval ground truth holds no query with style > 0")
        path = retrieval[0]
        scores = score_submission(Submission.from_json(files[path], path), rgt)
        results["retrieval"] = topk_percent(scores)
        print(
            f"retrieval: {scores['num_represented']} of {scores['num_queries']} paired query "
            f"items represented; {scores['num_short_lists']} entries with fewer than 20 results; "
            f"{scores['num_unreachable']} queries without a gallery item",
            file=sys.stderr,
        )
    print(tables.markdown_tables(results))
    print(f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            json.dump(json_safe(results), f, indent=1)
    if args.output_dir:
        tables.save(results, args.output_dir)
    return results


if __name__ == "__main__":
    main()
