#!/usr/bin/env python
"""
Search a catalogue (``tools/index_catalogue.py``) with photos: each garment detected in a photo
gets its top-k catalogue items (image, box, category, similarity), printed as JSON, and a picture
per photo (the garments and their matches) is drawn into ``--output``:

    python tools/search.py --catalogue catalogue/ --input photo.jpg [more.jpg ...] \\
        [--top-k 20] [--output search_out/] [--all-categories] [MODEL.WEIGHTS ...]

The model is the catalogue's own (its config.yaml and weights); overrides are checked: weights or
an embedding size other than the catalogue's are refused.
"""

from __future__ import annotations

import argparse
import json
import os

from deepfashion2.apps.catalogue import search_photos
from deepfashion2.retrieval import CatalogueMismatchError


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalogue", required=True)
    p.add_argument("--input", nargs="+", required=True, help="photos to search with")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--output", help="write results.json and one picture per photo here")
    p.add_argument(
        "--all-categories", action="store_true", help="rank the whole catalogue, not only items "
        "of the garment's predicted category",
    )  # fmt: skip
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    for photo in args.input:
        if not os.path.isfile(photo):
            raise SystemExit(f"error: {photo}: no such file")
    try:
        result = search_photos(
            args.catalogue,
            args.input,
            top_k=args.top_k,
            output=args.output,
            opts=args.opts,
            same_category=False if args.all_categories else None,
        )
    except (CatalogueMismatchError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(result["results"], indent=1))
    return result


if __name__ == "__main__":
    main()
