"""Search a catalogue with photos: detect their garments, find each one's closest shop items."""

from __future__ import annotations

import json
import os
import time

from detectron2.config import get_cfg
from PIL import Image

from ... import add_deepfashion2_config
from ...retrieval import Catalogue
from ...utils.visualizer import retrieval_strip, stack_rows
from .embed import GarmentEmbedder, model_identity


def catalogue_config(cat: Catalogue, opts=()):
    """The config of the model that built ``cat`` (its config.yaml), with ``opts`` on top."""
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(os.path.join(cat.folder, "config.yaml"))
    cfg.merge_from_list(list(opts))
    return cfg


def search_photos(
    catalogue_dir: str,
    photos: list[str],
    *,
    top_k: int = 20,
    output: str | None = None,
    opts=(),
    same_category: bool | None = None,
    embedder: GarmentEmbedder | None = None,
) -> dict:
    """
    For each photo, its garments (the ``MAX_PER_IMAGE`` best detections, score >= ``MIN_SCORE``)
    and each garment's ``top_k`` catalogue items, within its predicted category unless
    ``same_category=False`` (default: the catalogue's policy). With ``output``, writes
    ``results.json`` and a picture per photo. Refuses a model other than the catalogue's.
    """
    cat = Catalogue(catalogue_dir)
    if embedder is None:
        cfg = catalogue_config(cat, opts)
        cat.check_model(model_identity(cfg))
        embedder = GarmentEmbedder(cfg)
    else:
        cat.check_model(embedder.identity)
    if same_category is None:
        same_category = cat.meta.get("policy", {}).get("same_category", True)
    t0 = time.perf_counter()
    found = embedder.queries(photos)
    t1 = time.perf_counter()
    cat.index(same_category)  # built (or loaded) once, not per photo
    t2 = time.perf_counter()
    out = []
    for photo, (boxes, cats, scores, emb) in zip(photos, found):
        matches = cat.search(emb, cats, top_k, same_category)
        out.append(
            {
                "photo": photo,
                "garments": [
                    {"box": b, "category": int(c), "score": float(s), "matches": m}
                    for b, c, s, m in zip(boxes.tolist(), cats.tolist(), scores.tolist(), matches)
                ],
            }
        )
    t3 = time.perf_counter()
    result = {
        "catalogue": catalogue_dir,
        "results": out,
        "seconds": {"detection_and_embedding": t1 - t0, "index": t2 - t1, "lookup": t3 - t2},
    }
    if output:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "results.json"), "w") as f:
            json.dump(result, f, indent=1)
        for entry in out:
            draw(entry, cat.images_root, os.path.join(output, _stem(entry["photo"]) + ".png"))
    return result


def draw(entry: dict, images_root: str, path: str, top: int = 5) -> None:
    """One row per garment of the photo: the garment, then its ``top`` best catalogue items."""
    photo = Image.open(entry["photo"])
    rows = [
        retrieval_strip(
            photo,
            g["box"],
            [(Image.open(os.path.join(images_root, m["image"])), m["box"], None)
             for m in g["matches"][:top]],
        )  # fmt: skip
        for g in entry["garments"]
    ]
    if rows:
        stack_rows(rows).save(path)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
