#!/usr/bin/env python
"""
Export a trained DeepFashion2 model to run without Detectron2 or this project (Detectron2's
``tools/deploy/export_model.py``, for this model): one traced graph of the whole model (boxes,
masks, the landmark heatmaps of each garment's own category, the retrieval embedding) as
TorchScript or ONNX, run by ``deepfashion2_runtime`` (torch alone, or ONNX Runtime and numpy),
which does Detectron2's pre- and post-processing:

    .venv/bin/python tools/deploy/export_model.py --format onnx \\
        --config-file configs/EfficientNet-Lite0-CPU.yaml --output exported/ \\
        MODEL.WEIGHTS output/demo/model_final.pth

writes ``exported/model.onnx`` (``--format torchscript``: ``model.ts``), checks it against the
eager model on an image (``--check-image``, default: a synthetic one) and prints the differences.
``--quantize int8 --calibration-images DIR`` also writes ``model_int8.onnx``: ONNX Runtime's static
quantisation of the compute layers (convolutions, fully connected), calibrated on DIR's images;
it says which operations stay in float and why.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import _tool  # noqa: F401, E402  (first: hides torch's warnings about its own internals)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepfashion2.config import load_config  # noqa: E402
from deepfashion2.utils.cli import fail, tool_main  # noqa: E402

FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
# the float operations worth naming when the rest is int8 (the others are shape bookkeeping)
NOTABLE_FLOAT = ("RoiAlign", "NonMaxSuppression", "TopK", "Resize", "InstanceNormalization",
                 "Softmax", "Sigmoid", "Exp")  # fmt: skip


@tool_main
def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", required=True, help="folder for model.onnx / model.ts")
    p.add_argument("--check-image", help="an image to compare the export with the eager model on")
    p.add_argument("--quantize", choices=["int8"], help="also an int8 ONNX model (--format onnx)")
    p.add_argument("--calibration-images", help="folder of images to calibrate int8 on")
    p.add_argument("--calibration-count", type=int, default=32)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    from deepfashion2_runtime import ExportedModel
    from detectron2.modeling import build_model
    from PIL import Image

    from deepfashion2.apps.catalogue.embed import model_identity
    from deepfashion2.engine import DeepFashion2Checkpointer
    from deepfashion2.export import INT8_OPS, KEEP_FLOAT, export, quantize_int8

    if args.quantize and (args.format != "onnx" or not args.calibration_images):
        p.error("--quantize int8 needs --format onnx and --calibration-images DIR")
    cfg = load_config(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    DeepFashion2Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "model" + FORMATS[args.format])
    sha = model_identity(cfg)["weights_sha256"]
    export(model, cfg, path, weights_sha256=sha)
    exported = ExportedModel(path)
    if args.check_image:
        rgb = np.asarray(Image.open(args.check_image).convert("RGB"))
    else:
        rgb = np.random.default_rng(0).integers(0, 256, (160, 120, 3), dtype=np.uint8)
    chw = exported.preprocess(rgb)
    with torch.no_grad():
        eager = model([{"image": torch.from_numpy(chw), "height": rgb.shape[0],
                        "width": rgb.shape[1]}])[0]["instances"]  # fmt: skip
    got = exported(rgb)
    same = len(got["boxes"]) == len(eager)
    box = (
        np.abs(got["boxes"] - eager.pred_boxes.tensor.numpy()).max() if same and len(eager) else 0.0
    )
    if not same:
        fail(f"{path}: {len(got['boxes'])} detections where the eager model has {len(eager)}")
    print(f"{path}: {os.path.getsize(path) / 2**20:.1f} MB; on the check image {len(got['boxes'])} "
          f"detections (eager {len(eager)}), boxes within {box:.2g} px")  # fmt: skip
    if args.quantize:
        int8 = os.path.join(args.output, "model_int8.onnx")
        names = sorted(glob.glob(os.path.join(args.calibration_images, "*.jp*g")))
        names += sorted(glob.glob(os.path.join(args.calibration_images, "*.png")))
        if not names:
            fail(f"{args.calibration_images}: no .jpg or .png images to calibrate on")
        images = [np.asarray(Image.open(n).convert("RGB")) for n in names[: args.calibration_count]]
        floats = quantize_int8(path, int8, [exported.preprocess(x) for x in images])
        kept = floats.pop("kept float")
        notable = [f"{op} {floats[op]}" for op in NOTABLE_FLOAT if op in floats]
        rest = sum(v for k, v in floats.items() if k not in NOTABLE_FLOAT)
        print(f"{int8}: {os.path.getsize(int8) / 2**20:.1f} MB; int8: {', '.join(INT8_OPS)} "
              f"(calibrated on {len(images)} images); float, as ONNX Runtime has no int8 kernels "
              f"for them or 8 bits would move boxes: {', '.join(notable)}, and {rest} shape and "
              "element-wise operations; kept float, as int8 costs accuracy there: "
              + "; ".join(f"{KEEP_FLOAT[k]} ({n})" for k, n in kept.items() if n))  # fmt: skip
        return int8
    return path


if __name__ == "__main__":
    main()
