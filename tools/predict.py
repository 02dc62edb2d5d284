#!/usr/bin/env python
r"""
Inference on any images with the DeepFashion2 visualisation (boxes, masks, each item's own
landmarks joined by its category's skeleton), one drawing per image:

    python tools/predict.py --config-file configs/EfficientNet-Lite0-CPU.yaml \
        --input photo.jpg more/*.jpg --output predictions/ \
        --opts MODEL.WEIGHTS output/demo/model_final.pth

It ends with where the drawings are and how many garments each image has above
``--confidence-threshold`` (0.5). Small images (the synthetic set's are ~110 px) are drawn larger,
to at least 480 px on their longer side (``--scale`` sets the factor). ``MODEL.WEIGHTS`` may be a
``deepfashion2://`` model-zoo name; ``TEST.AUG.ENABLED True`` predicts with test-time augmentation
(``TEST.AUG.MIN_SIZES``, ``FLIP``; landmarks flipped per category).
"""

from __future__ import annotations

import argparse
import glob
import os

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from deepfashion2.config import load_config
from deepfashion2.engine import DeepFashion2Checkpointer
from deepfashion2.modeling import with_tta
from deepfashion2.utils.cli import fail, tool_main
from deepfashion2.utils.visualizer import draw_prediction

READABLE_SIDE = 480  # pixels: the longer side a small image is drawn at, by default


def setup_cfg(config_file: str, opts: list[str], threshold: float):
    cfg = load_config(config_file, opts)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.freeze()
    return cfg


def drawing_scale(height: int, width: int, scale: float | None) -> float:
    """``scale``, or by default enough to draw a small image at ``READABLE_SIDE`` pixels."""
    return scale if scale else max(1.0, READABLE_SIDE / max(height, width))


@tool_main
def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files or glob patterns")
    p.add_argument("--output", required=True, help="folder for the drawings")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--scale", type=float, help="drawing scale (default: small images enlarged)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    args = p.parse_args(argv)
    paths = [q for pattern in args.input for q in sorted(glob.glob(pattern)) or [pattern]]
    for path in paths:  # every input checked before anything is loaded or written
        if not os.path.isfile(path):
            fail(f"{path}: no such image file", "--input takes image files or glob patterns")
    setup_logger(name="deepfashion2")
    cfg = setup_cfg(args.config_file, args.opts, args.confidence_threshold)
    bare = cfg.clone()
    bare.defrost()
    bare.MODEL.WEIGHTS = ""  # loaded below by the project's checkpointer: its errors are one line
    predictor = DefaultPredictor(bare)
    DeepFashion2Checkpointer(predictor.model).load(cfg.MODEL.WEIGHTS)
    predictor.model = with_tta(cfg, predictor.model)
    os.makedirs(args.output, exist_ok=True)
    from PIL import Image

    done = []
    for path in tqdm(paths, desc="Predicting", unit="image"):
        image = read_image(path, format="BGR")
        instances = predictor(image)["instances"]
        scale = drawing_scale(*image.shape[:2], args.scale)
        drawing = draw_prediction(image, instances, scale).get_image()
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        Image.fromarray(drawing).save(os.path.join(args.output, name))
        done.append(
            {"image": path, "drawing": os.path.join(args.output, name), "garments": len(instances)}
        )
    print(summary(done, args.output, args.confidence_threshold))
    return done


def summary(done: list[dict], output: str, threshold: float) -> str:
    """What was written where, with each image's number of garments above the threshold."""
    lines = [f"{len(done)} drawings in {output}/ (garments scored >= {threshold}):"]
    lines += [f"  {os.path.basename(d['drawing'])}: {d['garments']}" for d in done]
    if done and not any(d["garments"] for d in done):
        lines.append(
            f"No garment scored {threshold} or more: try --confidence-threshold 0.2, or check "
            "MODEL.WEIGHTS (a model trained on the synthetic set sees little in real photos)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
