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
"""

from __future__ import annotations

import argparse
import os
import sys

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
from detectron2.utils.logger import setup_logger

from deepfashion2.apps.catalogue import index_images
from deepfashion2.config import load_config
from deepfashion2.utils.cli import fail, tool_main


@tool_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", help="the model's config (MODEL.WEIGHTS among the overrides)")
    p.add_argument(
        "--model", help="or an exported model: .onnx / .ts (tools/deploy/export_model.py)"
    )
    p.add_argument("--images", required=True, help="folder of shop images (searched recursively)")
    p.add_argument("--output", default="catalogue", help="the catalogue folder")
    p.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs, or CPU processes)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--retry-skipped", action="store_true", help="try unreadable images again")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="skip damaged shards (their images are indexed again) instead of stopping",
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if bool(args.config_file) == bool(args.model):
        p.error("give --config-file (and MODEL.WEIGHTS), or --model, not both")
    if not os.path.isdir(args.images):
        fail(f"{args.images}: not a folder", "--images takes the folder of shop images")
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
    )
    skipped = len(cat.skipped_images())
    print(
        f"{args.output}: {len(cat)} garments in {len(cat.entries().images)} images"
        + (f"; {skipped} unreadable images skipped" if skipped else ""),
        file=sys.stderr,
    )
    return cat


if __name__ == "__main__":
    main()
