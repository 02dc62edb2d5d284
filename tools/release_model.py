#!/usr/bin/env python
"""
Package a trained checkpoint for sharing, model-zoo style (weights for Detectron2 and this
project; ``tools/deploy/export_model.py`` exports a model to run without them):

    python tools/release_model.py --config-file configs/Mini-CPU.yaml \
        --weights output/demo/model_final.pth --name Mini-CPU --output release/ \
        [--metrics output/demo/metrics.json]

Writes ``<name>.pth`` (model weights only: no optimizer, scheduler or iteration), ``<name>.yaml``
(the full config), ``<name>.metrics.json`` (if given), ``<name>.pth.sha256``, and prints the
sha256 and the MODEL_ZOO.md row. Upload the folder's files to the model-zoo base URL; they are
then loadable as ``deepfashion2://<name>.pth#sha256=<sha256>``, or by name once the sha256 is
pinned in ``deepfashion2.model_zoo.CHECKPOINTS`` (a hash served beside the file is not trusted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import _tool  # noqa: F401  (first: hides torch's warnings about its own internals)
import torch

from deepfashion2.config import load_config
from deepfashion2.engine.checkpoint import read_weights_only
from deepfashion2.model_zoo import sha256_of
from deepfashion2.utils.cli import fail, tool_main


def _ap(metrics: dict, task: str, key: str = "AP") -> str:
    v = metrics.get(task, {}).get(key)
    return "-" if v is None else f"{v:.1f}"


@tool_main
def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help="a checkpoint written by the trainer")
    p.add_argument("--name", required=True, help="file stem of the release, e.g. Mini-CPU")
    p.add_argument("--output", required=True)
    p.add_argument("--metrics", help="a results JSON (task -> metrics, 0-100)")
    p.add_argument("--schedule", default="", help="for the table, e.g. 1x")
    args = p.parse_args(argv)

    cfg = load_config(args.config_file)
    if not os.path.isfile(args.weights):
        fail(
            f"{args.weights}: no such checkpoint", "`make demo` writes output/demo/model_final.pth"
        )
    model = read_weights_only(args.weights)["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        fail(f"{args.weights}: no model state_dict in the checkpoint")
    os.makedirs(args.output, exist_ok=True)
    pth = os.path.join(args.output, args.name + ".pth")
    torch.save({"model": model, "__author__": "deepfashion2"}, pth)
    with open(os.path.join(args.output, args.name + ".yaml"), "w") as f:
        f.write(cfg.dump())
    metrics = {}
    if args.metrics:
        with open(args.metrics) as f:
            metrics = json.load(f)
        shutil.copyfile(args.metrics, os.path.join(args.output, args.name + ".metrics.json"))
    digest = sha256_of(pth)
    with open(pth + ".sha256", "w") as f:
        f.write(f"{digest}  {args.name}.pth\n")
    retrieval = metrics.get("retrieval", {})
    row = (
        f"| {args.name} | {os.path.basename(args.config_file)} | {args.schedule or '-'} "
        f"| {_ap(metrics, 'bbox')} | {_ap(metrics, 'segm')} | {_ap(metrics, 'keypoints_vis')} "
        f"| {_ap(metrics, 'keypoints')} | {_ap({'r': retrieval}, 'r', 'top1')} "
        f"| {_ap({'r': retrieval}, 'r', 'top20')} | `deepfashion2://{args.name}.pth` "
        f"| `{digest}` |"
    )
    print(f"sha256: {digest}")
    print(f"path:   deepfashion2://{args.name}.pth#sha256={digest}")
    print(row)
    return row


if __name__ == "__main__":
    main()
