#!/usr/bin/env python
"""
Validate a DeepFashion2 split, build its cache, optionally export it as COCO-style JSON.

    python datasets/prepare_deepfashion2.py --anno-dir DIR --image-dir DIR \
        [--lenient] [--coco-json OUT] [--retrieval-gt OUT_DIR]

Exit status 2 on the first malformed file in strict mode, with the error (file, item, field) in
one line on stderr, or on a folder without annotation files; 0 otherwise (a lenient run lists what
it skipped).
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    p.add_argument("--anno-dir", required=True)
    p.add_argument("--image-dir", required=True)
    p.add_argument("--lenient", action="store_true", help="skip bad items, count and report them")
    p.add_argument("--coco-json", help="write a COCO-style file (official converter conventions)")
    p.add_argument(
        "--retrieval-gt",
        metavar="OUT_DIR",
        help="write the split's consumer-to-shop ground truth in the official layout "
        "(query_gt.json, gallery_gt.json)",
    )
    p.add_argument("--cache-dir", help="where to cache the parsed split")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from deepfashion2.data import DeepFashion2FormatError, load_split_store
    from deepfashion2.data.coco_export import store_to_coco
    from deepfashion2.utils.cli import error_line

    try:
        store = load_split_store(
            args.anno_dir,
            args.image_dir,
            lenient=args.lenient,
            cache_dir=args.cache_dir,
            use_cache=False if args.no_cache else None,  # None: $DF2_CACHE decides
            num_workers=args.workers,
        )
    except (DeepFashion2FormatError, FileNotFoundError) as e:
        print(error_line(e) or f"error: {e}", file=sys.stderr)
        return 2
    if store.skips:
        skipped = sum(store.skips.values())
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(store.skips.items()))
        print(f"{store.num_images} images, {store.num_items} items; skipped {skipped} ({reasons})")
    else:
        print(f"{store.num_images} images, {store.num_items} items: OK")
    if args.coco_json:
        with open(args.coco_json, "wb") as f:
            f.write(orjson.dumps(store_to_coco(store)))
        print(f"wrote {args.coco_json}")
    if args.retrieval_gt:
        write_retrieval_gt(store, args.retrieval_gt)
    return 0


def write_retrieval_gt(store, out_dir: str) -> None:
    """``query_gt.json`` / ``gallery_gt.json`` as the official 2019 files lay them out."""
    import json
    import os

    from deepfashion2.evaluation import GroundTruth, RetrievalGroundTruth

    rgt = RetrievalGroundTruth.from_groundtruth(GroundTruth.from_store(store))
    queries, gallery = rgt.to_official()
    os.makedirs(out_dir, exist_ok=True)
    for name, entries in (("query_gt.json", queries), ("gallery_gt.json", gallery)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(entries, f)  # the official files' separators
    print(
        f"wrote {out_dir}/query_gt.json ({len(queries)} items, {rgt.num_queries} with style > 0) "
        f"and gallery_gt.json ({len(gallery)} items)"
    )


if __name__ == "__main__":
    sys.exit(main())
