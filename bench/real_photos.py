#!/usr/bin/env python
"""
How far a model trained on the synthetic set carries to real photos: the DeepFashion2 benchmarks
(box, mask and landmark AP; no retrieval: the samples hold no shop photos) of one or more trained
models on the real annotated consumer photos of ``../shared/df2_samples`` (the files that come
with their image), and drawings of their predictions on a few of them.

    python bench/real_photos.py --model NAME CONFIG WEIGHTS [--model ...] \
        [--out bench/results/real_photos.json] [--draw docs/real] [--num 3]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile

from _common import cpu_model, write_json

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SAMPLES = os.path.join(ROOT, "..", "shared", "df2_samples")
NAME = "deepfashion2_real_samples"


def sample_split(folder: str) -> tuple[str, str]:
    """The annotated real photos (numeric names, with their image) as a split folder."""
    annos, images = os.path.join(folder, "annos"), os.path.join(folder, "image")
    os.makedirs(annos), os.makedirs(images)
    for img in sorted(glob.glob(os.path.join(SAMPLES, "image", "[0-9]*.jpg"))):
        stem = os.path.basename(img)[:-4]
        anno = os.path.join(SAMPLES, "annos", stem + ".json")
        if os.path.exists(anno):
            shutil.copy(anno, annos)
            os.symlink(os.path.abspath(img), os.path.join(images, stem + ".jpg"))
    return annos, images


def evaluate(config: str, weights: str, draw: str | None, num: int) -> dict:
    from detectron2.config import get_cfg
    from detectron2.evaluation import inference_on_dataset

    from deepfashion2 import add_deepfashion2_config
    from deepfashion2.apps.demo.figures import draw_predictions
    from deepfashion2.data import dataset_dicts
    from deepfashion2.engine import DeepFashion2Checkpointer, Trainer
    from deepfashion2.evaluation import DeepFashion2Evaluator

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TEST = (NAME,)
    model = Trainer.build_model(cfg).eval()
    DeepFashion2Checkpointer(model).load(weights)
    out = tempfile.mkdtemp()
    evaluator = DeepFashion2Evaluator(
        NAME, out, tasks=("bbox", "segm", "keypoints", "keypoints_vis"), distributed=False
    )
    res = inference_on_dataset(model, Trainer.build_test_loader(cfg, NAME), evaluator)
    shutil.rmtree(out, ignore_errors=True)
    drawings = []
    if draw:
        dicts = dataset_dicts(NAME, cfg)
        drawings = draw_predictions(cfg, dicts, draw, num, scale=1.0)
    return {
        "results": {t: {m: v for m, v in r.items() if "/" not in m} for t, r in res.items()},
        "drawings": [os.path.relpath(p, ROOT) for p in drawings],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", nargs=3, action="append", metavar=("NAME", "CONFIG", "WEIGHTS"),
                   required=True)  # fmt: skip
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "real_photos.json"))
    p.add_argument("--draw", help="folder for drawings (one subfolder per model)")
    p.add_argument("--num", type=int, default=3)
    args = p.parse_args()
    from deepfashion2.data import register_deepfashion2

    tmp = tempfile.mkdtemp()
    try:
        annos, images = sample_split(os.path.join(tmp, "split"))
        register_deepfashion2(NAME, annos, images)
        num_photos = len(os.listdir(images))
        result = {"cpu": cpu_model(), "photos": num_photos, "models": {}}
        for name, config, weights in args.model:
            draw = os.path.join(args.draw, name) if args.draw else None
            result["models"][name] = {"config": config, **evaluate(config, weights, draw, args.num)}
            print(
                name, {t: round(r["AP"], 1) for t, r in result["models"][name]["results"].items()}
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
