#!/usr/bin/env python
"""
Validate a DeepFashion2 split, build its cache, optionally export it as COCO-style JSON.

    python datasets/prepare_deepfashion2.py --anno-dir DIR --image-dir DIR \
        [--lenient] [--coco-json OUT]

Exit status 1 on the first malformed file in strict mode, with the error (file, item, field) on
stderr; 0 otherwise.
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
    p.add_argument("--cache-dir", help="where to cache the parsed split")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from deepfashion2.data import DeepFashion2FormatError, load_split_store
    from deepfashion2.data.coco_export import store_to_coco

    try:
        store = load_split_store(
            args.anno_dir,
            args.image_dir,
            lenient=args.lenient,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            num_workers=args.workers,
        )
    except (DeepFashion2FormatError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{store.num_images} images, {store.num_items} items: OK")
    if args.coco_json:
        with open(args.coco_json, "wb") as f:
            f.write(orjson.dumps(store_to_coco(store)))
        print(f"wrote {args.coco_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
