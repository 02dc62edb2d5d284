#!/usr/bin/env python
r"""
Inference on any images with the DeepFashion2 visualisation (boxes, masks, each item's own
landmarks joined by its category's skeleton), one drawing per image:

    python tools/predict.py --config-file configs/EfficientNet-Lite0-CPU.yaml \
        --input photo.jpg more/*.jpg --output predictions/ \
        --opts MODEL.WEIGHTS output/demo/model_final.pth

It ends with where the drawings are and how many garments each image has above
``--confidence-threshold`` (0.5). ``--model model.onnx`` (or ``.ts``) predicts with an exported
model (``tools/deploy/export_model.py``) instead of a config and weights; ``--json FILE`` also
writes the predictions for other programs: one entry per image, ``{"image", "instances": [{"box":
[x0, y0, x1, y1], "category": 1-13, "score", "landmarks": [[x, y, score], ...] (the category's
own, in the dataset's order, pixel indices as in the result files), "embedding", "mask": COCO
RLE}]}``. Small images (the synthetic set's are ~110 px) are drawn larger,
to at least 480 px on their longer side (``--scale`` sets the factor). ``MODEL.WEIGHTS`` may be a
``deepfashion2://`` model-zoo name; ``TEST.AUG.ENABLED True`` predicts with test-time augmentation
(``TEST.AUG.MIN_SIZES``, ``FLIP``; landmarks flipped per category).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import numpy as np
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from deepfashion2 import landmarks as L
from deepfashion2.config import load_config
from deepfashion2.engine import DeepFashion2Checkpointer
from deepfashion2.export import to_instances
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
    p.add_argument("--config-file", help="the model's config (with MODEL.WEIGHTS in --opts)")
    p.add_argument(
        "--model", help="or an exported model: .onnx or .ts (tools/deploy/export_model.py)"
    )
    p.add_argument("--input", nargs="+", required=True, help="image files or glob patterns")
    p.add_argument("--output", required=True, help="folder for the drawings")
    p.add_argument("--json", help="also write the predictions here, for other programs")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("--scale", type=float, help="drawing scale (default: small images enlarged)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    args = p.parse_args(argv)
    if bool(args.config_file) == bool(args.model):
        p.error("give --config-file (and MODEL.WEIGHTS in --opts), or --model, not both")
    paths = [q for pattern in args.input for q in sorted(glob.glob(pattern)) or [pattern]]
    for path in paths:  # every input checked before anything is loaded or written
        if not os.path.isfile(path):
            fail(f"{path}: no such image file", "--input takes image files or glob patterns")
    if args.model and not os.path.isfile(args.model):
        fail(f"{args.model}: no such exported model", "tools/deploy/export_model.py writes one")
    setup_logger(name="deepfashion2")
    predict = _exported(args.model) if args.model else _eager(args.config_file, args.opts, args)
    os.makedirs(args.output, exist_ok=True)
    from PIL import Image

    done, entries = [], []
    for path in tqdm(paths, desc="Predicting", unit="image"):
        rgb = read_image(path, format="RGB")  # EXIF orientation applied, as Detectron2 reads
        found = predict(rgb)
        keep = found["scores"] >= args.confidence_threshold
        found = {k: v[keep] for k, v in found.items()}
        scale = drawing_scale(*rgb.shape[:2], args.scale)
        drawing = draw_prediction(rgb[:, :, ::-1], to_instances(found, rgb.shape[:2]), scale)
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        Image.fromarray(drawing.get_image()).save(os.path.join(args.output, name))
        done.append({"image": path, "drawing": os.path.join(args.output, name),
                     "garments": int(keep.sum())})  # fmt: skip
        entries.append({"image": path, "instances": json_instances(found)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(entries, f, allow_nan=False)
    print(summary(done, args.output, args.confidence_threshold))
    if args.json:
        print(f"predictions: {args.json}")
    return done


def _eager(config_file: str, opts: list[str], args):
    """The model of a config and its weights (Detectron2), answering as the runtime does."""
    cfg = setup_cfg(config_file, opts, min(args.confidence_threshold, 0.05))
    bare = cfg.clone()
    bare.defrost()
    bare.MODEL.WEIGHTS = ""  # loaded below by the project's checkpointer: its errors are one line
    predictor = DefaultPredictor(bare)
    DeepFashion2Checkpointer(predictor.model).load(cfg.MODEL.WEIGHTS)
    predictor.model = with_tta(cfg, predictor.model)

    def predict(rgb: np.ndarray) -> dict:
        # DefaultPredictor takes BGR, whatever the model's format (it converts)
        inst = predictor(np.ascontiguousarray(rgb[:, :, ::-1]))["instances"].to("cpu")
        found = {"boxes": inst.pred_boxes.tensor.numpy(), "scores": inst.scores.numpy(),
                 "categories": inst.pred_classes.numpy() + 1}  # fmt: skip
        for key, field in (("masks", "pred_masks"), ("landmarks", "pred_keypoints"),
                           ("embeddings", "pred_embeddings")):  # fmt: skip
            if inst.has(field):
                found[key] = inst.get(field).numpy()
        return found

    return predict


def _exported(path: str):
    from deepfashion2_runtime import ExportedModel

    return ExportedModel(path)


def json_instances(found: dict) -> list[dict]:
    """
    Each garment as plain JSON: box [x0, y0, x1, y1] and its category's own landmarks [x, y,
    score] in the dataset's order, both in the files' pixel convention (landmarks -0.5, as the
    result files), category 1..13, score, embedding, mask as COCO RLE.
    """
    from pycocotools import mask as mask_util

    out = []
    for i, c in enumerate(found["categories"].tolist()):
        entry = {"box": [float(v) for v in found["boxes"][i]], "category": int(c),
                 "score": float(found["scores"][i])}  # fmt: skip
        if "landmarks" in found:
            sl = L.CATEGORY_BY_ID[c].landmark_slice
            own = found["landmarks"][i, sl]
            entry["landmarks"] = L.to_pixel_indices(own, placed=(own != 0).any(-1)).tolist()
        if "embeddings" in found:
            entry["embedding"] = [float(v) for v in found["embeddings"][i]]
        if "masks" in found:
            rle = mask_util.encode(np.asfortranarray(found["masks"][i].astype(np.uint8)))
            entry["mask"] = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
        out.append(entry)
    return out


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
