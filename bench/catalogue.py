#!/usr/bin/env python
"""
Catalogue benchmark ("shop the look"), side by side in one run on this machine:

- model: indexing throughput of the demo model (configs/Mini-CPU.yaml; ``--weights``, else its
  random initialisation: the cost does not depend on the weights) on the embedded synthetic
  validation split's shop images (images/s on CPU), and the time per search photo (its consumer
  photos, one at a time), split into detection + embedding and catalogue lookup.
- scale: a 1,000,000-item catalogue (clustered synthetic embeddings, the demo model's 128
  dimensions, 13 categories) written through ``Catalogue.add`` and searched one photo's garments
  at a time within the query's category: the exact index and FAISS IVF, ms per query, the recall
  of FAISS's top 20 against exact search, and the exact/FAISS crossover by category size (the
  ``EXACT_MAX_GALLERY`` default).

- products (``--products``): the same 1,000,000 garments as products of two photos each, with a
  price and an availability (20% of products available): add (shards + products table; push into
  Milvus Lite), remove 10% of the products, and search one garment at a time, unfiltered and
  filtered by ``available == true`` (before the top-k, one result per product): p50 / p95 ms per
  garment in the folder store (FAISS) and in Milvus Lite (HNSW), side by side.

    python bench/catalogue.py [--weights W] [--scale F] [--out FILE] [--products-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from _common import write_json
from retrieval import _recall, clustered

BIG = 1_000_000
DIM = 128  # the demo model's EMBED_DIM


def model_part(weights: str | None, work: str) -> dict:
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from deepfashion2 import add_deepfashion2_config
    from deepfashion2.apps.catalogue import GarmentEmbedder, index_images, search_photos
    from deepfashion2.data import load_deepfashion2
    from deepfashion2.data.synthetic import ensure_mini_split
    from deepfashion2.model_zoo import get_config_file

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(get_config_file("Mini-CPU"))
    if not weights:
        torch.manual_seed(0)
        weights = os.path.join(work, "random_init.pth")
        torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    root = ensure_mini_split("validation")
    dicts = load_deepfashion2(root + "/annos", root + "/image")
    shop = os.path.join(work, "shop")
    os.makedirs(shop)
    users = []
    for d in dicts:
        if d["source"] == "shop":
            os.link(d["file_name"], os.path.join(shop, os.path.basename(d["file_name"])))
        else:
            users.append(d["file_name"])
    t = time.perf_counter()
    cat = index_images(cfg, shop, os.path.join(work, "cat"), progress=False)
    index_s = time.perf_counter() - t
    n_shop = len(os.listdir(shop))
    embedder = GarmentEmbedder(cfg)
    detect, lookup, garments = [], [], 0
    for photo in users:
        r = search_photos(cat.folder, [photo], top_k=20, embedder=embedder)
        detect.append(r["seconds"]["detection_and_embedding"])
        lookup.append(r["seconds"]["lookup"])
        garments += len(r["results"][0]["garments"])
    return {
        "weights": "trained" if weights and "random_init" not in weights else "random init",
        "shop_images": n_shop,
        "catalogue_items": len(cat),
        "index_seconds": index_s,
        "index_images_per_s": n_shop / index_s,
        "search_photos": len(users),
        "search_garments_per_photo": garments / len(users),
        "search_detection_embedding_ms_per_photo": 1000 * float(np.mean(detect)),
        "search_lookup_ms_per_photo": 1000 * float(np.mean(lookup)),
    }


def scale_part(n: int, work: str, queries: int, seed: int = 0) -> dict:
    from deepfashion2.evaluation.gallery import GroupedIndex
    from deepfashion2.retrieval import Catalogue

    rng = np.random.default_rng(seed)
    gallery, g_cat, q, q_cat = clustered(rng, n, queries, DIM)
    from detectron2.config import get_cfg

    from deepfashion2 import add_deepfashion2_config

    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    policy = {"index": "auto", "exact_max": cfg.DEEPFASHION2.RETRIEVAL.CATALOGUE_EXACT_MAX}
    identity = {"config": "bench", "weights_sha256": "bench", "embed_dim": DIM, "policy": policy}
    folder = os.path.join(work, "big")
    cat = Catalogue.create(folder, identity)
    t = time.perf_counter()
    per_shard = 100_000  # 100K images of one garment each
    for s in range(0, n, per_shard):
        e = slice(s, min(n, s + per_shard))
        images = [f"{i:07d}.jpg" for i in range(e.start, e.stop)]
        dets = [(np.zeros((1, 4)), [c + 1], [1.0], v[None]) for c, v in zip(g_cat[e], gallery[e])]
        cat.add(images, dets)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    cat = Catalogue(folder)
    entries = cat.entries()
    load_s = time.perf_counter() - t
    out = {"catalogue_items": len(entries), "write_seconds": write_s, "load_seconds": load_s}
    for kind in ("exact", "faiss"):
        t = time.perf_counter()
        index = GroupedIndex(entries.embeddings, entries.categories, kind=kind)
        out[f"{kind}_build_seconds"] = time.perf_counter() - t
        rows, t = [], time.perf_counter()
        for i in range(len(q)):  # one garment at a time, as a search photo sends them
            rows.append(index.search(q[i : i + 1], q_cat[i : i + 1] + 1, 20)[1])
        out[f"{kind}_ms_per_query"] = 1000 * (time.perf_counter() - t) / len(q)
        out[f"{kind}_rows"] = np.concatenate(rows)
    out["faiss_recall_at_20"] = _recall(out.pop("faiss_rows"), out.pop("exact_rows"))
    # the catalogue's own search (its policy: exact up to EXACT_MAX_GALLERY per category)
    t = time.perf_counter()
    cat.index()
    out["catalogue_index_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(len(q)):
        cat.search(q[i : i + 1], q_cat[i : i + 1] + 1, 20)
    out["catalogue_search_ms_per_query"] = 1000 * (time.perf_counter() - t) / len(q)
    out["catalogue_policy"] = policy
    out["category_sizes"] = np.bincount(entries.categories).tolist()[1:]
    return out


def products_part(
    n: int, work: str, queries: int, seed: int = 2, milvus_queries: int = 20, batch: int = 200
) -> dict:
    """The product catalogue at scale: folder store vs Milvus Lite, side by side."""
    from deepfashion2.apps.catalogue import update_products
    from deepfashion2.retrieval import Catalogue
    from deepfashion2.retrieval.milvus import push

    rng = np.random.default_rng(seed)
    gallery, g_cat, q, q_cat = clustered(rng, n, queries, DIM)
    identity = {"config": "bench", "weights_sha256": "bench", "embed_dim": DIM, "policy": {}}
    folder = os.path.join(work, "products")
    out: dict = {"garments": n, "products": n // 2, "queries": len(q)}
    t = time.perf_counter()
    cat = Catalogue.create(folder, identity)
    for s in range(0, n, 100_000):
        e = slice(s, min(n, s + 100_000))
        images = [f"{i:07d}.jpg" for i in range(e.start, e.stop)]
        dets = [(np.zeros((1, 4)), [c + 1], [1.0], v[None]) for c, v in zip(g_cat[e], gallery[e])]
        cat.add(images, dets)
    out["add_shards_s"] = time.perf_counter() - t
    print("add_shards_s", round(out["add_shards_s"], 1), flush=True)
    price = rng.uniform(1, 200, n // 2).round(2)
    available = rng.uniform(size=n // 2) < 0.2
    csv = os.path.join(work, "products.csv")
    with open(csv, "w") as f:
        f.write("image,product,price,available\n")
        for i in range(n):
            p = i // 2
            f.write(f"{i:07d}.jpg,P{p},{price[p]},{'true' if available[p] else 'false'}\n")
    t = time.perf_counter()
    update_products(Catalogue(folder), csv)
    out["add_products_s"] = time.perf_counter() - t
    print("add_products_s", round(out["add_products_s"], 1), flush=True)
    milvus = Catalogue(folder)
    t = time.perf_counter()
    milvus.use_milvus(os.path.join(work, "milvus.db"), "bench", "HNSW")
    push(milvus)
    out["milvus_push_s"] = time.perf_counter() - t
    print("milvus_push_s", round(out["milvus_push_s"], 1), flush=True)
    sold = os.path.join(work, "sold.txt")
    with open(sold, "w") as f:
        f.write("\n".join(f"P{p}" for p in rng.choice(n // 2, n // 20, replace=False)))
    t = time.perf_counter()
    update_products(milvus, remove=sold)  # the folder's table, then Milvus's rows
    out["remove_10pct_s_folder_and_milvus"] = time.perf_counter() - t
    print(
        "remove_10pct_s_folder_and_milvus",
        round(out["remove_10pct_s_folder_and_milvus"], 1),
        flush=True,
    )
    folder_cat = Catalogue(folder)
    folder_cat.meta.pop("milvus")  # the same catalogue, searched from its folder
    folder_cat._milvus = None
    milvus = Catalogue(folder)
    store = milvus.milvus()
    store.client.release_collection(store.collection)
    t = time.perf_counter()
    store.client.load_collection(store.collection)  # Milvus Lite builds the HNSW index here
    out["milvus_load_s"] = time.perf_counter() - t
    print("milvus_load_s", round(out["milvus_load_s"], 1), flush=True)
    for name, c in (("folder", folder_cat), ("milvus", milvus)):
        t = time.perf_counter()
        c.search(q[:1], q_cat[:1] + 1, 20)  # index built or loaded, Milvus collection loaded
        out[f"{name}_first_search_s"] = time.perf_counter() - t
        n_q = len(q) if name == "folder" else min(len(q), milvus_queries)
        out[f"{name}_queries"] = n_q
        for where in (None, "available == true"):
            times = []
            for i in range(n_q):
                t = time.perf_counter()
                c.search(q[i : i + 1], q_cat[i : i + 1] + 1, 20, where=where)
                times.append(time.perf_counter() - t)
            label = f"{name}_{'filtered' if where else 'all'}"
            out[f"{label}_p50_ms"] = 1000 * float(np.percentile(times, 50))
            out[f"{label}_p95_ms"] = 1000 * float(np.percentile(times, 95))
            t = time.perf_counter()  # many photos in one call (tools/search.py, evaluation)
            c.search(q[:batch], q_cat[:batch] + 1, 20, where=where)
            out[f"{label}_batch_of_{batch}_ms_per_query"] = 1000 * (time.perf_counter() - t) / batch
        print({k: v for k, v in out.items() if k.startswith(name)}, flush=True)
    a = [[m["item"] for m in r] for r in folder_cat.search(q[:100], q_cat[:100] + 1, 20)]
    b = [[m["item"] for m in r] for r in milvus.search(q[:100], q_cat[:100] + 1, 20)]
    out["milvus_overlap_at_20_with_folder"] = float(
        np.mean([len(set(x) & set(y)) / max(1, len(x)) for x, y in zip(a, b)])
    )
    return out


def crossover(sizes: list[int], queries: int, seed: int = 1) -> list[dict]:
    """Exact vs FAISS ms per single query, and FAISS recall@20, by (category) gallery size."""
    from deepfashion2.evaluation import GalleryIndex

    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        gallery, _, q, _ = clustered(rng, n, queries, DIM)
        res = {"size": n}
        ids = {}
        for kind in ("exact", "faiss"):
            index = GalleryIndex(gallery, kind)
            t = time.perf_counter()
            ids[kind] = np.concatenate([index.search(q[i : i + 1], 20)[1] for i in range(len(q))])
            res[f"{kind}_ms_per_query"] = 1000 * (time.perf_counter() - t) / len(q)
        res["faiss_recall_at_20"] = _recall(ids["faiss"], ids["exact"])
        rows.append(res)
        print(res, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", help="the trained demo model (default: random initialisation)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the 1M catalogue")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--out", default="bench/results/catalogue.json")
    p.add_argument("--products-only", action="store_true", help="only the products part")
    args = p.parse_args()
    import torch

    work = tempfile.mkdtemp(prefix="df2-bench-cat-")
    try:
        out = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
        if args.products_only:  # beside the rest of an earlier run's results
            import json

            if os.path.exists(args.out):
                out = json.load(open(args.out))
            out["products"] = products_part(int(BIG * args.scale), work, args.queries)
            print(out["products"], flush=True)
            write_json(args.out, out)
            return
        out["model"] = model_part(args.weights, work)
        print(out["model"], flush=True)
        out["crossover"] = crossover([1_000, 3_000, 10_000, 30_000, 100_000, 300_000], args.queries)
        out["million"] = scale_part(int(BIG * args.scale), work, args.queries)
        print(out["million"], flush=True)
        out["products"] = products_part(int(BIG * args.scale), work, args.queries)
        print(out["products"], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
