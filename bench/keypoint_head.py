#!/usr/bin/env python
"""
Landmark head benchmark: the category-gated head vs. the stock 294-channel head, same trunk
(8 x 512 convs, as Detectron2's keypoint configs), same weights, inputs from the synthetic set.

1. one training step (forward + loss + backward) on 128 foreground RoIs: peak memory of the whole
   head, and of the part after the trunk (predictor + loss);
2. inference for one image with 50 detections: head forward + decoding into landmarks (median);
3. the loss of both on the same inputs.

Memory is the growth of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)
during the measured step, each measurement in a fresh process. The children run with
MALLOC_MMAP_THRESHOLD_=131072 so that every large tensor buffer is its own mapping, returned on
free: otherwise glibc's adaptive threshold serves later buffers from a heap it does not give back,
and peak RSS counts freed memory too (for both heads; ours by ~95 MB, stock's by ~10 MB).

    python bench/keypoint_head.py [--out FILE] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from _common import run_json_child, write_json

CONV_DIMS = (512,) * 8
FEATURE_SHAPE = (256, 14, 14)  # FPN channels, ROI_KEYPOINT_HEAD.POOLER_RESOLUTION
# The synthetic images are ~130 px on a side, real DeepFashion2 photos ~600-800 px; decoding cost
# grows with the box size (heatmaps are resized to the box), so boxes and landmarks are scaled up.
BOX_SCALE = 5.0
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def build(kind: str):
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.roi_heads import build_keypoint_head

    import deepfashion2  # noqa: F401  (registers the head)

    cfg = get_cfg()
    cfg.MODEL.ROI_KEYPOINT_HEAD.NAME = (
        "CategoryKeypointHead" if kind == "ours" else "KRCNNConvDeconvUpsampleHead"
    )
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 294
    cfg.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = CONV_DIMS
    torch.manual_seed(0)  # same weights for both: the parameter names and shapes are the same
    c, h, w = FEATURE_SHAPE
    return build_keypoint_head(cfg, ShapeSpec(channels=c, height=h, width=w))


def inputs(split: str, n: int, train: bool):
    """n RoIs from the synthetic set's items: jittered ground-truth boxes, their landmarks."""
    from detectron2.structures import Boxes, Instances, Keypoints

    from deepfashion2.data import load_deepfashion2
    from deepfashion2.landmarks import expand_landmarks

    dicts = load_deepfashion2(f"{split}/annos", f"{split}/image", use_cache=False)
    annos = [a for d in dicts for a in d["annotations"]]
    rng = np.random.default_rng(0)
    pick = [annos[i] for i in rng.integers(len(annos), size=n)]
    boxes = torch.tensor([a["bbox"] for a in pick], dtype=torch.float32) * BOX_SCALE
    boxes += torch.from_numpy(rng.normal(0, 2 * BOX_SCALE, boxes.shape)).float()
    classes = torch.tensor([a["category_id"] for a in pick])
    inst = Instances((1024, 1024))
    if train:
        gt = np.stack([expand_landmarks(a["category_id"], a["landmarks"]) for a in pick])
        gt[:, :, :2] *= BOX_SCALE
        inst.proposal_boxes, inst.gt_classes = Boxes(boxes), classes
        inst.gt_keypoints = Keypoints(torch.from_numpy(gt).float())
    else:
        inst.pred_boxes, inst.pred_classes = Boxes(boxes), classes
    torch.manual_seed(1)
    return torch.randn(n, *FEATURE_SHAPE), inst


def train_step(kind: str, split: str, n: int, device: str = "cpu", repeats: int = 2) -> dict:
    """
    One training step (forward + loss + backward) of ``kind``'s head on ``n`` RoIs of ``split``,
    on ``device``, after a warm-up: seconds, and on CUDA the peak of allocated memory (what
    tools/check_gpu.py measures on a GPU; on the CPU, :func:`child` measures the RSS instead).
    """
    head = build(kind).to(device).train()
    x, inst = inputs(split, n, train=True)
    x, inst = x.to(device), inst.to(device)
    cuda = device.startswith("cuda")
    for _ in range(repeats):  # the last is measured
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        loss = head(x, [inst])["loss_keypoint"]
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    out = {"seconds": seconds, "loss": loss.item()}
    if cuda:
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _reset_peak() -> float:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def child(kind: str, what: str, split: str, repeats: int) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    head = build(kind)
    if what == "train":
        head.train()
        x, inst = inputs(split, 128, train=True)
        base = _reset_peak()
        t = time.perf_counter()
        loss = head(x.requires_grad_(), [inst])["loss_keypoint"]
        loss.backward()
        elapsed = time.perf_counter() - t
        return {"peak_mb": _status("VmHWM") - base, "seconds": elapsed, "loss": loss.item()}
    if what == "predictor":
        head.train()
        x, inst = inputs(split, 128, train=True)
        # the trunk's output, as the predictor receives it (ours: RoIs sorted by category)
        order = torch.argsort(inst.gt_classes, stable=True)
        with torch.no_grad():
            feats = head.trunk(x[order]) if kind == "ours" else _stock_trunk(head, x)
        feats.requires_grad_()
        base = _reset_peak()
        loss = _after_trunk(kind, head, feats, inst, order)
        loss.backward()
        return {"peak_mb": _status("VmHWM") - base, "loss": loss.item()}
    # inference: head forward + decoding, one image with 50 detections
    head.eval()
    x, inst = inputs(split, 50, train=False)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            head(x, [inst])
            times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "times": times}


def _stock_trunk(head, x):
    for name, layer in head.named_children():
        if name.startswith("conv_fcn"):
            x = layer(x)
    return x


def _after_trunk(kind, head, feats, inst, order):
    if kind == "ours":
        from deepfashion2.modeling.keypoint_head import category_keypoint_loss

        sorted_logits = head.predict(feats, inst.gt_classes[order])
        logits = [(c, order[rows], y) for c, rows, y in sorted_logits]
        return category_keypoint_loss(
            logits, inst.gt_keypoints.tensor, inst.proposal_boxes.tensor, None
        )
    from detectron2.layers import interpolate
    from detectron2.modeling.roi_heads.keypoint_head import keypoint_rcnn_loss

    y = interpolate(
        head.score_lowres(feats), scale_factor=2.0, mode="bilinear", align_corners=False
    )
    return keypoint_rcnn_loss(y, [inst], None)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/results/keypoint_head.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, what, split, repeats = args.child
        print(json.dumps(child(kind, what, split, int(repeats))))
        return
    from deepfashion2.data.synthetic import generate_split

    with tempfile.TemporaryDirectory() as tmp:
        generate_split(tmp, 120, seed=5)
        r = {
            k: {
                w: run_json_child(__file__, k, w, tmp, str(args.repeats), env=MALLOC_ENV)
                for w in ("train", "predictor", "infer")
            }
            for k in ("stock", "ours")
        }
    r["train_memory_ratio"] = r["stock"]["train"]["peak_mb"] / r["ours"]["train"]["peak_mb"]
    r["predictor_memory_ratio"] = (
        r["stock"]["predictor"]["peak_mb"] / r["ours"]["predictor"]["peak_mb"]
    )
    r["inference_speedup"] = r["stock"]["infer"]["median_s"] / r["ours"]["infer"]["median_s"]
    r["loss_abs_diff"] = abs(r["stock"]["train"]["loss"] - r["ours"]["train"]["loss"])
    r["cpus"] = os.cpu_count()
    for k in ("stock", "ours"):
        print(
            f"{k:5s}: train step {r[k]['train']['seconds']:.1f}s, peak "
            f"{r[k]['train']['peak_mb']:.0f} MB (predictor + loss "
            f"{r[k]['predictor']['peak_mb']:.0f} MB); inference 50 dets "
            f"{r[k]['infer']['median_s']:.2f}s; loss {r[k]['train']['loss']:.6f}"
        )
    print(
        f"train memory ratio {r['train_memory_ratio']:.1f}x, predictor memory ratio "
        f"{r['predictor_memory_ratio']:.1f}x, inference speedup {r['inference_speedup']:.1f}x, "
        f"loss |diff| {r['loss_abs_diff']:.2e}"
    )
    write_json(args.out, r, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
