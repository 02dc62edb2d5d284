#!/usr/bin/env python
"""
Draw the ground truth of a registered DeepFashion2 split (boxes, masks, landmarks with their
category's skeleton), to check a conversion or a new folder by eye:

    python tools/visualize_data.py --dataset deepfashion2_mini_validation --output out/ --num 20
    python tools/visualize_data.py --anno-dir val/annos --image-dir val/image --output out/ \
        [--lenient]

``--lenient`` skips malformed items (and says how many, per reason) instead of stopping at the
first with an error naming the file, the item and the field.
"""

from __future__ import annotations

import argparse
import os

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import numpy as np
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from tqdm import tqdm

from deepfashion2 import add_deepfashion2_config  # (and registers the builtin splits)
from deepfashion2.data import dataset_dicts, register_deepfashion2
from deepfashion2.utils.cli import tool_main
from deepfashion2.utils.visualizer import DeepFashion2Visualizer


@tool_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", help="a registered split, e.g. deepfashion2_validation")
    p.add_argument("--anno-dir", help="or an annos/ folder ...")
    p.add_argument("--image-dir", help="... with its image/ folder")
    p.add_argument("--output", required=True)
    p.add_argument("--num", type=int, default=20, help="images to draw (0 = all)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--lenient", action="store_true", help="skip malformed items, count them")
    args = p.parse_args(argv)
    name = args.dataset
    if name is None:
        if not (args.anno_dir and args.image_dir):
            p.error("give --dataset, or --anno-dir and --image-dir")
        name = "deepfashion2_visualize"
        if name not in DatasetCatalog.list():
            register_deepfashion2(name, args.anno_dir, args.image_dir)
    # the split with this command's options (dataset_dicts: LENIENT, the cache switch)
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.DEEPFASHION2.LENIENT = args.lenient
    dicts = dataset_dicts(name, cfg)  # a malformed item: one line, with --lenient as the hint
    meta = MetadataCatalog.get(name)
    os.makedirs(args.output, exist_ok=True)
    for d in tqdm(dicts[: args.num or None], desc="Drawing", unit="image"):
        img = np.asarray(Image.open(d["file_name"]).convert("RGB"))
        drawing = DeepFashion2Visualizer(img, meta, scale=args.scale).draw_dataset_dict(d)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        drawing.save(os.path.join(args.output, stem + ".png"))


if __name__ == "__main__":
    main()
