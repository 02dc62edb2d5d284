#!/usr/bin/env python
"""
Index a folder of shop images into a searchable catalogue, with a trained DeepFashion2 model:

    python tools/index_catalogue.py --config-file configs/Mini-CPU.yaml --images shop/ \
        --output catalogue/ [--num-gpus N] MODEL.WEIGHTS output/demo/model_final.pth

Every garment of every image (the evaluator's gallery policy: ``DEEPFASHION2.RETRIEVAL.
GALLERY_PER_IMAGE`` best detections with score >= ``MIN_SCORE``) is detected and embedded, in
batches, with a progress bar, on GPUs or ``--num-gpus`` CPU processes. Running it again on the
same folder indexes only the images not yet in the catalogue; a run killed at any moment resumes
without duplicates. An image that cannot be read (not an image, truncated, empty, a special
file, more than 50 MP by its header) is skipped, listed at the end and recorded in the catalogue;
``--retry-skipped`` tries those again. Symbolic links are followed (files and folders; a folder
reached twice is read once). Another image folder or other weights are refused for an existing
catalogue. Search it with ``tools/search.py``.

Products (docs/CATALOGUE.md): ``--products products.csv`` (columns ``image``, ``product`` and the
product's fields) makes search results products with their fields; run with ``--output CAT`` and
no ``--images`` it updates the fields without embedding anything again; ``--sync`` removes the
images the file no longer lists; ``--remove ids.txt`` removes products (one id per line). Each
update is atomic, and a running ``tools/serve.py`` serves it without a restart.

Across machines (Detectron2's launcher, as training): ``--num-machines 2 --machine-rank R
--dist-url tcp://HOST:PORT`` on each, with ``--images`` and ``--output`` on a file system they
share at the same path.
"""

from __future__ import annotations

import argparse
import os
import sys

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
from detectron2.utils.logger import setup_logger

from deepfashion2.apps.catalogue import index_images, update_products
from deepfashion2.config import load_config
from deepfashion2.retrieval import Catalogue
from deepfashion2.utils.cli import fail, tool_main


@tool_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", help="the model's config (MODEL.WEIGHTS among the overrides)")
    p.add_argument(
        "--model", help="or an exported model: .onnx / .ts (tools/deploy/export_model.py)"
    )
    p.add_argument("--images", help="folder of shop images (searched recursively)")
    p.add_argument("--output", default="catalogue", help="the catalogue folder")
    p.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine (GPUs, or CPU processes)"
    )
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    p.add_argument(
        "--dist-url", default="auto", help="the first machine's tcp://HOST:PORT (many machines)"
    )
    p.add_argument("--products", help="CSV: image, product, then the product's fields")
    p.add_argument(
        "--sync", action="store_true", help="with --products: remove images it does not list"
    )
    p.add_argument("--remove", help="a file of product ids to remove, one per line")
    p.add_argument(
        "--milvus",
        help="keep the vectors in Milvus: a Milvus Lite file (NAME.db) or http://HOST:19530",
    )
    p.add_argument("--milvus-collection", help="default: df2_ and a digest of --output's path")
    p.add_argument(
        "--milvus-index",
        choices=("HNSW", "FLAT"),
        default="HNSW",
        help="HNSW (default: recall@20 0.99+, fast) or FLAT (exact, the folder's answers)",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--retry-skipped", action="store_true", help="try unreadable images again")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="skip damaged shards (their images are indexed again), bad product rows and"
        " unknown ids (counted) instead of stopping",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    update = bool(args.products or args.remove)
    if args.sync and not args.products:
        p.error("--sync needs --products")
    if args.images is None:
        if args.milvus:
            return _update(args)
        if not update:
            p.error("--images: the folder of shop images to index (or --products / --remove to"
                    " update a catalogue)")  # fmt: skip
        return _update(args)
    if bool(args.config_file) == bool(args.model):
        p.error("give --config-file (and MODEL.WEIGHTS), or --model, not both")
    if not os.path.isdir(args.images):
        fail(f"{args.images}: not a folder", "--images takes the folder of shop images")
    if args.num_machines > 1 and args.dist_url == "auto":
        p.error("--num-machines > 1 needs --dist-url tcp://HOST:PORT of machine 0")
    setup_logger(name="deepfashion2")
    cfg = load_config(args.config_file, args.opts) if args.config_file else None
    # other weights or folder, damage, a full disk: one line (utils.cli)
    cat = index_images(
        cfg,
        args.images,
        args.output,
        config_name=os.path.basename(args.config_file or args.model),
        batch_size=args.batch_size,
        num_procs=args.num_gpus,
        retry_skipped=args.retry_skipped,
        lenient=args.lenient,
        model=args.model,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
    )
    if args.milvus and args.machine_rank == 0:
        _to_milvus(cat, args)
    skipped = len(cat.skipped_images())
    print(
        f"{args.output}: {len(cat)} garments in {len(cat.entries().images)} images"
        + (f"; {skipped} unreadable images skipped" if skipped else ""),
        file=sys.stderr,
    )
    if update and args.machine_rank == 0:
        _update(args)
    return cat


def _update(args):
    if not os.path.isfile(os.path.join(args.output, "catalogue.json")):
        fail(f"{args.output}: not a catalogue", "index shop images into it first: --images DIR")
    for given in (args.products, args.remove):
        if given and not os.path.isfile(given):
            fail(f"{given}: no such file")
    setup_logger(name="deepfashion2")
    cat = Catalogue(args.output)
    if args.milvus:
        _to_milvus(cat, args)
    if not (args.products or args.remove):
        return cat
    done = update_products(
        cat, args.products, sync=args.sync, remove=args.remove, lenient=args.lenient
    )
    print(
        f"{args.output}: {done['products']} products over {done['images']} images; "
        f"{done['removed']} images removed ({done['newly_removed']} now)"
        + (f"; {done['skipped']} rows or ids skipped" if done["skipped"] else ""),
        file=sys.stderr,
    )
    return cat


def _to_milvus(cat, args) -> None:
    """Record where the catalogue's vectors live, then make the collection equal to it."""
    import hashlib

    from deepfashion2.retrieval.milvus import push

    uri = args.milvus
    if not uri.startswith(("http://", "https://", "tcp://")):
        uri = os.path.abspath(uri)  # a Milvus Lite file, wherever search runs from
    name = (
        args.milvus_collection
        or "df2_"
        + hashlib.sha1(
            os.path.realpath(args.output).encode("utf-8", "surrogateescape")
        ).hexdigest()[:12]
    )
    cat.use_milvus(uri, name, args.milvus_index)
    done = push(cat)
    print(f"{uri} {name}: {done['rows']} garments ({done['inserted']} inserted, "
          f"{done['updated']} updated, {done['deleted']} deleted)", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
