#!/usr/bin/env python
"""
Registration benchmark: our loader vs. the common route, side by side on one synthetic folder.

The folder has the released train split's size (191,961 JSON files at --scale 1) with realistic
item counts (~1.63 per image) and polygon sizes (~80 points, full-precision floats, as in the real
files); images are hard links to a few small template JPEGs of different sizes, so header reads are
real file reads.

- ours: ``load_split_store`` cold (parallel parse + cache write), then warm (cache) and
  ``load_deepfashion2`` (dicts) in a fresh process, with its RSS growth.
- common: the official converter's route (json per file -> dense 294x3 COCO JSON), then
  Detectron2's ``load_coco_json``, with its RSS growth.

    python bench/registration.py [--scale F] [--out FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import numpy as np
from _common import run_json_child, write_json

TRAIN_IMAGES = 191_961


def make_folder(root: str, n: int, seed: int = 0) -> None:
    from PIL import Image

    from deepfashion2 import landmarks as L

    rng = np.random.default_rng(seed)
    os.makedirs(f"{root}/annos", exist_ok=True)
    os.makedirs(f"{root}/image", exist_ok=True)
    sizes = [(640, 480), (500, 750), (800, 800), (375, 500)]
    templates = []
    for k, (w, h) in enumerate(sizes):
        p = f"{root}/template_{k}.jpg"
        Image.new("RGB", (w, h), (120, 100, 90)).save(p)
        templates.append((p, w, h))
    for i in range(1, n + 1):
        p, w, h = templates[rng.integers(len(templates))]
        stem = f"{i:06d}"
        os.link(p, f"{root}/image/{stem}.jpg")
        anno = {"source": "user" if rng.random() < 0.6 else "shop", "pair_id": int(i // 6 + 1)}
        for k in range(1 + (rng.random() < 0.5) + (rng.random() < 0.13)):
            c = L.CATEGORIES[rng.integers(13)]
            x1, y1 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            x2, y2 = rng.uniform(x1 + 10, w), rng.uniform(y1 + 10, h)
            t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
            poly = np.stack(
                [
                    (x1 + x2) / 2 + (x2 - x1) / 2 * np.cos(t),
                    (y1 + y2) / 2 + (y2 - y1) / 2 * np.sin(t),
                ],
                1,
            )
            lm = []
            for _ in range(c.num_landmarks):
                v = int(rng.choice(3, p=[0.3, 0.3, 0.4]))
                lm += [int(rng.uniform(x1, x2)), int(rng.uniform(y1, y2)), v] if v else [0, 0, 0]
            anno[f"item{k + 1}"] = {
                "segmentation": [poly.reshape(-1).tolist()],
                "scale": int(rng.integers(1, 4)),
                "viewpoint": int(rng.integers(1, 4)),
                "zoom_in": int(rng.integers(1, 4)),
                "landmarks": lm,
                "style": int(rng.integers(0, 3)),
                "bounding_box": [int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))],
                "category_id": c.id,
                "occlusion": int(rng.integers(1, 4)),
                "category_name": c.name,
            }
        with open(f"{root}/annos/{stem}.json", "w") as f:
            json.dump(anno, f)


def common_convert(root: str, out: str) -> None:
    """The official converter's approach: dense 294x3 keypoints per item, one COCO JSON."""
    from PIL import Image

    names = sorted(os.listdir(f"{root}/annos"))
    coco = {"images": [], "annotations": [], "categories": []}
    for c in range(1, 14):
        coco["categories"].append(
            {
                "id": c,
                "name": str(c),
                "supercategory": "clothes",
                "keypoints": [str(i) for i in range(1, 295)],
                "skeleton": [],
            }
        )
    from deepfashion2 import landmarks as L

    for name in names:
        stem = name[:-5]
        w, h = Image.open(f"{root}/image/{stem}.jpg").size
        image_id = int(stem)
        coco["images"].append({"file_name": stem + ".jpg", "id": image_id, "width": w, "height": h})
        with open(f"{root}/annos/{name}") as f:
            obj = json.load(f)
        for k, it in obj.items():
            if not k.startswith("item"):
                continue
            x1, y1, x2, y2 = it["bounding_box"]
            pts = [0.0] * 882
            c = L.CATEGORY_BY_ID[it["category_id"]]
            pts[3 * c.start : 3 * (c.start + c.num_landmarks)] = [float(v) for v in it["landmarks"]]
            coco["annotations"].append(
                {
                    "area": (x2 - x1) * (y2 - y1),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "category_id": it["category_id"],
                    "id": len(coco["annotations"]) + 1,
                    "pair_id": obj["pair_id"],
                    "image_id": image_id,
                    "iscrowd": 0,
                    "style": it["style"],
                    "num_keypoints": sum(v > 0 for v in it["landmarks"][2::3]),
                    "keypoints": pts,
                    "segmentation": it["segmentation"],
                }
            )
    with open(out, "w") as f:
        json.dump(coco, f)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, root: str, cache: str, coco: str) -> None:
    """One measurement in a fresh process; prints a JSON line."""
    import logging

    logging.disable(logging.CRITICAL)
    import detectron2.data.datasets  # noqa: F401  (imports count as baseline, not as dicts)

    from deepfashion2.data import load_deepfashion2
    from deepfashion2.data.loader import load_split_store

    before = rss_mb()
    t = time.perf_counter()
    if mode == "ours_cold":
        load_split_store(f"{root}/annos", f"{root}/image", cache_dir=cache, progress=False)
        dicts = None
    elif mode == "ours_warm":
        dicts = load_deepfashion2(f"{root}/annos", f"{root}/image", cache_dir=cache)
    elif mode == "common_convert":
        common_convert(root, coco)
        dicts = None
    else:
        from detectron2.data.datasets import load_coco_json

        dicts = load_coco_json(coco, f"{root}/image", extra_annotation_keys=["style", "pair_id"])
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "rss_growth_mb": rss_mb() - before,
                "peak_rss_mb": peak,
                "n": len(dicts) if dicts is not None else None,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--out", default="bench/results/registration.json")
    p.add_argument("--workdir", default=None, help="keep the generated folder here")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    n = max(100, int(TRAIN_IMAGES * args.scale))
    work = args.workdir or tempfile.mkdtemp(prefix="df2-bench-reg-")
    root, cache, coco = f"{work}/split", f"{work}/cache", f"{work}/coco.json"
    if not os.path.exists(f"{root}/annos/{n:06d}.json"):
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        make_folder(root, n)
        print(f"wrote {n} files in {time.perf_counter() - t:.0f}s")
    shutil.rmtree(cache, ignore_errors=True)
    r = {"files": n, "scale": args.scale, "cpus": os.cpu_count()}
    r["ours_cold"] = run_json_child(__file__, "ours_cold", root, cache, coco)
    r["ours_warm"] = run_json_child(__file__, "ours_warm", root, cache, coco)
    r["common_convert"] = run_json_child(__file__, "common_convert", root, cache, coco)
    r["common_load"] = run_json_child(__file__, "common_load", root, cache, coco)
    common_cold = r["common_convert"]["seconds"] + r["common_load"]["seconds"]
    r["cold_speedup"] = common_cold / r["ours_cold"]["seconds"]
    r["warm_load_s"] = r["ours_warm"]["seconds"]
    r["memory_ratio"] = r["common_load"]["rss_growth_mb"] / max(r["ours_warm"]["rss_growth_mb"], 1)
    print(f"files: {n}")
    print(
        f"cold parse: ours {r['ours_cold']['seconds']:.1f}s vs common "
        f"{common_cold:.1f}s (convert {r['common_convert']['seconds']:.1f}s + load "
        f"{r['common_load']['seconds']:.1f}s): {r['cold_speedup']:.1f}x"
    )
    print(f"warm load (dicts from cache): {r['warm_load_s']:.2f}s")
    print(
        f"RSS growth of the dicts: ours {r['ours_warm']['rss_growth_mb']:.0f} MB vs common "
        f"{r['common_load']['rss_growth_mb']:.0f} MB: {r['memory_ratio']:.1f}x"
    )
    write_json(args.out, r, indent=2)
    print(f"wrote {args.out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
