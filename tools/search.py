#!/usr/bin/env python
"""
Search a catalogue (``tools/index_catalogue.py``) with photos: each garment found in a photo gets
its top-k catalogue items (item id, image, box, category, similarity). A short summary is
printed; ``--output`` gets the full ``results.json`` and a picture per photo (the garments and
their best matches); ``--json`` prints the full JSON instead of the summary:

    python tools/search.py --catalogue catalogue/ --input photo.jpg [more.jpg ...] \\
        [--top-k 20] [--output search_out/] [--all-categories] [MODEL.WEIGHTS ...]

Garments: those the model gives a score of at least 0.5, at most 5 per photo (a person's view);
``--benchmark-policy`` uses the retrieval benchmark's instead (``DEEPFASHION2.RETRIEVAL``: up to
10 per photo from 0.05), ``--min-score`` / ``--max-garments`` set them. Categories are numbered
1..13 as in the annotation files (Detectron2's dataset dicts count from 0), with their names.

The model is the catalogue's own (its config.yaml and weights); overrides are checked: weights or
an embedding size other than the catalogue's are refused. A catalogue folder is data: its config
is read as plain YAML (tags refused), the weights it names must be a local .pth file or a
deepfashion2:// name this project trusts (else give MODEL.WEIGHTS yourself), and a damaged file
is refused by name. Exit status 2 with one line on stderr for any such refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)

from deepfashion2.apps.catalogue import search_photos
from deepfashion2.apps.catalogue.search import PEOPLE_POLICY, TOP_K
from deepfashion2.errors import DeepFashion2Error
from deepfashion2.retrieval.catalogue import MAX_TOP_K
from deepfashion2.utils.cli import fail, tool_main

CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def top_k(text: str) -> int:
    """An argparse type: an integer from 1 to ``MAX_TOP_K``."""
    try:
        k = int(text)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"an integer from 1 to {MAX_TOP_K}, got {text!r}")
    return k


def summary(results: list[dict], shown: int = 3) -> str:
    """A few lines per photo: each garment, its category and its best matches."""
    lines = []
    for r in results:
        lines.append(f"{r['photo']}: {len(r['garments'])} garments")
        for g in r["garments"]:
            best = ", ".join(_match(m) for m in g["matches"][:shown])
            lines.append(
                f"  {g['category']:>2} {g['category_name']:<20} score {g['score']:.2f}  "
                f"best: {best or 'none'}"
            )
    return "\n".join(lines)


def _match(m: dict) -> str:
    """An item as the summary shows it: its image, its product when a products file named it."""
    product = m.get("product", {}).get("id", m["image"])
    named = f" = {product}" if product != m["image"] else ""
    return f"{m['image']}{named} ({m['similarity']:.2f})"


@tool_main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--catalogue", required=True)
    p.add_argument("--input", nargs="+", required=True, help="photos to search with")
    p.add_argument("--top-k", type=top_k, default=TOP_K, help=f"results per garment ({TOP_K})")
    p.add_argument("--output", help="write results.json and one picture per photo here")
    p.add_argument(
        "--images", help="the shop images, for the pictures (default: the folder indexed)"
    )
    p.add_argument("--model", help="the exported model (.onnx / .ts) a catalogue was indexed with")
    p.add_argument("--json", action="store_true", help="print the full JSON, not the summary")
    p.add_argument(
        "--all-categories",
        action="store_true",
        help="rank the whole catalogue, not only items of the garment's predicted category",
    )
    p.add_argument(
        "--filter",
        help="only items that satisfy it, e.g. 'available == true and price <= 50' (fields of"
        " the products file; category; product)",
    )
    p.add_argument("--min-score", type=float, default=None, help="default 0.5")
    p.add_argument("--max-garments", type=int, default=None, help="default 5")
    p.add_argument(
        "--benchmark-policy",
        action="store_true",
        help="the retrieval benchmark's garments: DEEPFASHION2.RETRIEVAL.MIN_SCORE, MAX_PER_IMAGE",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    # `--input a.jpg b.jpg MODEL.WEIGHTS w.pth`: the photos end where a config key begins
    for i, item in enumerate(args.input):
        if CONFIG_KEY.fullmatch(item):
            args.input, args.opts = args.input[:i], args.input[i:] + args.opts
            break
    if not args.input:
        p.error("--input: no photo given")
    for photo in args.input:
        if not os.path.isfile(photo):
            fail(f"{photo}: no such file", "--input takes photos")
    policy = {} if args.benchmark_policy else dict(PEOPLE_POLICY)
    if args.min_score is not None:
        policy["min_score"] = args.min_score
    if args.max_garments is not None:
        policy["max_garments"] = args.max_garments
    try:
        result = search_photos(
            args.catalogue,
            args.input,
            top_k=args.top_k,
            output=args.output,
            opts=args.opts,
            same_category=False if args.all_categories else None,
            image_root=args.images,
            model=args.model,
            where=args.filter,
            **policy,
        )
    except ValueError as e:  # a policy out of range (min-score, max-garments), a bad filter
        if isinstance(e, DeepFashion2Error):
            raise
        fail(str(e))
    if args.json:
        print(json.dumps(result["results"], indent=1, allow_nan=False))
    else:
        print(summary(result["results"]))
        if args.output:
            print(f"full results: {os.path.join(args.output, 'results.json')}")
    return result


if __name__ == "__main__":
    main()
