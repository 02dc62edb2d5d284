#!/usr/bin/env python
"""
Inference on any images with the DeepFashion2 visualisation (boxes, masks, each item's own
landmarks joined by its category's skeleton):

    python tools/predict.py --config-file configs/EfficientNet-Lite0-CPU.yaml --input a.jpg b.jpg \
        --output out/ --opts MODEL.WEIGHTS output/demo/model_final.pth

(``make demo`` / ``tools/run_demo.py`` trains and evaluates the demo model; ``apps/demo`` is the
library code behind it.)

``MODEL.WEIGHTS`` may be a ``deepfashion2://`` model-zoo name; ``TEST.AUG.ENABLED True`` predicts
with test-time augmentation (``TEST.AUG.MIN_SIZES``, ``FLIP``; landmarks flipped per category).
"""

from __future__ import annotations

import argparse
import glob
import os

from detectron2.config import get_cfg
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from deepfashion2 import add_deepfashion2_config
from deepfashion2.apps.demo.figures import draw_prediction
from deepfashion2.modeling import with_tta


def setup_cfg(config_file: str, opts: list[str], threshold: float):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.freeze()
    return cfg


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files or glob patterns")
    p.add_argument("--output", required=True, help="folder for the drawings")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--scale", type=float, default=1.0, help="drawing scale (small images: 2-4)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    args = p.parse_args(argv)
    setup_logger(name="deepfashion2")
    cfg = setup_cfg(args.config_file, args.opts, args.confidence_threshold)
    predictor = DefaultPredictor(cfg)
    predictor.model = with_tta(cfg, predictor.model)
    paths = [q for pattern in args.input for q in sorted(glob.glob(pattern)) or [pattern]]
    os.makedirs(args.output, exist_ok=True)
    from PIL import Image

    for path in tqdm(paths, desc="Predicting", unit="image"):
        image = read_image(path, format="BGR")
        drawing = draw_prediction(image, predictor(image)["instances"], args.scale).get_image()
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        Image.fromarray(drawing).save(os.path.join(args.output, name))


if __name__ == "__main__":
    main()
