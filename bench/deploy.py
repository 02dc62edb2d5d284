#!/usr/bin/env python
"""
The exported model against the eager one, side by side in one run: per-image latency (p50, p95)
of the whole prediction (resize, model, Detectron2's post-processing) at 1 and 2 threads, eager
PyTorch + Detectron2 vs TorchScript vs ONNX Runtime (both through ``deepfashion2_runtime``), on
the same images, and the files' sizes.

The model is the demo's architecture (configs/EfficientNet-Lite0-CPU.yaml: ImageNet backbone,
the heads as built; ``--weights`` for trained ones) keeping every detection (score threshold 0),
so that every image carries the full 20 detections through masks, landmarks and embeddings.
ONNX Runtime int8 (static, calibrated on 32 training images) runs beside them. With ``--weights``
(``make demo``'s model), the four benchmarks on the synthetic validation split are computed from
the eager model, the float ONNX model and the int8 one (the config's own score threshold).

With ``--serve``, ``tools/serve.py`` side by side over the validation split's shop images: the
eager model (config + weights) and the float ONNX model (``--model``, its default of one ONNX
Runtime session per core, and ``--parallel 1``), each searched by 1, 4 and 16 concurrent
clients with its consumer photos (``bench/serve.py``'s load): requests/s, p50 / p95 latency.

    python bench/deploy.py [--weights W] [--images N] [--out FILE] [--serve] [--serve-only]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from _common import cpu_model, write_json

CONFIG = "configs/EfficientNet-Lite0-CPU.yaml"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="")
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="bench/results/deploy.json")
    p.add_argument("--serve", action="store_true", help="also the service's requests/s")
    p.add_argument("--serve-only", action="store_true", help="only that, beside earlier results")
    p.add_argument("--seconds", type=float, default=20.0, help="per concurrency level")
    args = p.parse_args()
    if args.serve_only:
        import json

        out = json.load(open(args.out)) if os.path.exists(args.out) else {"cpu": cpu_model()}
        out["serve"] = serve(args.weights, args.seconds)
        write_json(args.out, out)
        return

    from deepfashion2_runtime import ExportedModel
    from detectron2.modeling import build_model
    from PIL import Image

    from deepfashion2.config import load_config
    from deepfashion2.data.synthetic import ensure_mini_split
    from deepfashion2.engine import DeepFashion2Checkpointer
    from deepfashion2.export import export, quantize_int8

    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.WEIGHTS", args.weights]
    cfg = load_config(CONFIG, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if args.weights:
        DeepFashion2Checkpointer(model).load(args.weights)
    folder = ensure_mini_split("validation")
    paths = sorted(glob.glob(os.path.join(folder, "image", "*.jpg")))[: args.images]
    images = [np.asarray(Image.open(q).convert("RGB")) for q in paths]
    out = {"cpu": cpu_model(), "images": len(images), "config": CONFIG,
           "weights": args.weights or "ImageNet backbone, untrained heads", "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            ext: export(model, cfg, os.path.join(tmp, f"model{ext}")) for ext in (".ts", ".onnx")
        }
        train = ensure_mini_split("train")
        calibration = [
            np.asarray(Image.open(q).convert("RGB"))
            for q in sorted(glob.glob(os.path.join(train, "image", "*.jpg")))[:32]
        ]
        float_rt = ExportedModel(files[".onnx"])
        files["_int8.onnx"] = os.path.join(tmp, "model_int8.onnx")
        quantize_int8(
            files[".onnx"], files["_int8.onnx"], [float_rt.preprocess(x) for x in calibration]
        )
        out["file_mb"] = {ext: os.path.getsize(f) / 2**20 for ext, f in files.items()}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runtimes = {
                "torchscript": ExportedModel(files[".ts"], threads=threads),
                "onnxruntime": ExportedModel(files[".onnx"], threads=threads),
                "onnxruntime_int8": ExportedModel(files["_int8.onnx"], threads=threads),
            }

            def eager(rgb, runtime=runtimes["onnxruntime"]):
                chw = torch.from_numpy(runtime.preprocess(rgb))
                with torch.no_grad():
                    return model([{"image": chw, "height": rgb.shape[0], "width": rgb.shape[1]}])

            forms = {"eager": eager, **runtimes}
            for name, run in forms.items():
                run(images[0])  # warm-up
                times = []
                for _ in range(args.repeats):
                    for rgb in images:
                        t = time.perf_counter()
                        run(rgb)
                        times.append(time.perf_counter() - t)
                times.sort()
                out["runs"][f"{name}@{threads}"] = {
                    "p50_ms": 1000 * statistics.median(times),
                    "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
                    "images_per_s": len(times) / sum(times),
                }
                print(
                    name,
                    threads,
                    {k: round(v, 1) for k, v in out["runs"][f"{name}@{threads}"].items()},
                )
        if args.weights:
            out["benchmarks"] = benchmarks(args.weights, files)
    if args.serve:
        out["serve"] = serve(args.weights, args.seconds)
    for threads in (1, 2):
        e = out["runs"][f"eager@{threads}"]["p50_ms"]
        for name in ("torchscript", "onnxruntime", "onnxruntime_int8"):
            out["runs"][f"{name}@{threads}"]["speedup_p50"] = (
                e / out["runs"][f"{name}@{threads}"]["p50_ms"]
            )
    write_json(args.out, out)


def benchmarks(weights: str, files: dict) -> dict:
    """The four benchmarks on the synthetic validation split: eager, ONNX float, ONNX int8 (the
    exports made again at the config's own score threshold, as the demo evaluates)."""
    from deepfashion2_runtime import ExportedModel
    from detectron2.modeling import build_model
    from PIL import Image

    from deepfashion2.config import load_config
    from deepfashion2.data.synthetic import ensure_mini_split
    from deepfashion2.engine import DeepFashion2Checkpointer, Trainer
    from deepfashion2.export import ExportedAsModel, export, quantize_int8

    cfg = load_config(
        CONFIG, ["MODEL.WEIGHTS", weights, "DEEPFASHION2.RETRIEVAL.GT_BOXES", "False"]
    )
    model = build_model(cfg).eval()
    DeepFashion2Checkpointer(model).load(weights)
    tmp = os.path.dirname(files[".onnx"])
    onnx_path = export(model, cfg, os.path.join(tmp, "eval.onnx"))
    int8_path = os.path.join(tmp, "eval_int8.onnx")
    runtime = ExportedModel(onnx_path)
    train = ensure_mini_split("train")
    calibration = [
        runtime.preprocess(np.asarray(Image.open(q).convert("RGB")))
        for q in sorted(glob.glob(os.path.join(train, "image", "*.jpg")))[:32]
    ]
    quantize_int8(onnx_path, int8_path, calibration)
    forms = {
        "eager": model,
        "onnxruntime": ExportedAsModel(runtime),
        "onnxruntime_int8": ExportedAsModel(ExportedModel(int8_path)),
    }
    out = {}
    for name, m in forms.items():
        cfg.defrost()
        cfg.OUTPUT_DIR = os.path.join(tmp, name)
        res = Trainer.test(cfg, m)
        out[name] = {t: res[t]["AP"] for t in ("bbox", "segm", "keypoints", "keypoints_vis")}
        out[name].update({f"retrieval_{k}": res["retrieval"][k] for k in ("top1", "top20")})
        print(name, {k: round(v, 2) for k, v in out[name].items()})
    return out


def serve(weights: str, seconds: float) -> dict:
    """tools/serve.py's requests/s at 1, 4 and 16 clients: eager, ONNX (parallel), ONNX (one at
    a time), each over a catalogue of the validation split's shop images indexed with it."""
    import subprocess
    import sys

    from _common import wait_until_serving
    from detectron2.modeling import build_model
    from serve import LEVELS, _post, load

    from deepfashion2 import compat
    from deepfashion2.apps.catalogue import index_images
    from deepfashion2.config import load_config
    from deepfashion2.data import load_deepfashion2
    from deepfashion2.data.synthetic import ensure_mini_split
    from deepfashion2.engine import DeepFashion2Checkpointer
    from deepfashion2.export import export

    if not weights:
        raise SystemExit("--serve needs --weights (a trained model finds garments to search)")
    cfg = load_config(CONFIG, ["MODEL.WEIGHTS", weights])
    root = ensure_mini_split("validation")
    dicts = load_deepfashion2(root + "/annos", root + "/image")
    photos = [open(d["file_name"], "rb").read() for d in dicts if d["source"] == "user"]
    out = {"seconds_per_level": seconds, "photos": len(photos), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        shop = os.path.join(tmp, "shop")
        os.makedirs(shop)
        for d in dicts:
            if d["source"] == "shop":
                os.link(d["file_name"], os.path.join(shop, os.path.basename(d["file_name"])))
        model = build_model(cfg).eval()
        DeepFashion2Checkpointer(model).load(weights)
        onnx_path = export(model, cfg, os.path.join(tmp, "model.onnx"))
        index_images(cfg, shop, os.path.join(tmp, "eager"), progress=False)
        index_images(None, shop, os.path.join(tmp, "onnx"), progress=False, model=onnx_path)
        forms = {
            "eager": ["--catalogue", os.path.join(tmp, "eager")],
            "onnxruntime": ["--catalogue", os.path.join(tmp, "onnx"), "--model", onnx_path],
            "onnxruntime_parallel1": ["--catalogue", os.path.join(tmp, "onnx"), "--model",
                                      onnx_path, "--parallel", "1"],
        }  # fmt: skip
        for name, argv in forms.items():
            port = compat.free_port()
            server = subprocess.Popen(
                [sys.executable, "tools/serve.py", *argv, "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                error = wait_until_serving(server, port)
                if error:
                    raise SystemExit(f"{name}: the server did not start: {error}")
                _post(port, photos[0])  # warm-up
                out[name] = [load(port, photos, c, seconds) for c in LEVELS]
            finally:
                server.terminate()
                server.wait(timeout=30)
            print(name, [round(lv["requests_per_s"], 1) for lv in out[name]], flush=True)
    out["onnx_vs_eager_requests_per_s"] = {
        str(c): out["onnxruntime"][i]["requests_per_s"] / out["eager"][i]["requests_per_s"]
        for i, c in enumerate(LEVELS)
    }
    return out


if __name__ == "__main__":
    main()
