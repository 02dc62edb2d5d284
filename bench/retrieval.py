#!/usr/bin/env python
"""
Retrieval benchmark: gallery search at validation size and at catalogue size, side by side.

Embeddings (256-d, unit length) are clustered like a trained model's: garments of one category
share a direction, garments of one style group cluster around it, and the photos of one garment
cluster tightly; a query is another photo of a garment in the gallery.

- validation size: 12,377 queries against 36,961 gallery items, exact search (the default there)
  and the FAISS index; also the evaluator's default of ranking within the query's category.
- catalogue size: 10,000 queries against 1,000,000 items with the FAISS index (IVF); recall@20
  of the index against exact search on a sample of the queries.

    python bench/retrieval.py [--scale F] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from _common import write_json

VAL_QUERIES, VAL_GALLERY = 12_377, 36_961
BIG_QUERIES, BIG_GALLERY = 10_000, 1_000_000
DIM = 256


def clustered(rng, n_gallery: int, n_queries: int, dim: int = DIM):
    """(gallery, gallery categories, queries, query categories), float32 unit rows."""
    n_groups = max(13, n_gallery // 500)
    n_items = max(n_groups, n_gallery // 4)
    cat_dir = rng.normal(size=(13, dim)).astype(np.float32)
    group_cat = rng.integers(0, 13, n_groups)
    group = cat_dir[group_cat] + 0.8 * rng.normal(size=(n_groups, dim)).astype(np.float32)
    item_group = rng.integers(0, n_groups, n_items)
    item = group[item_group] + 0.6 * rng.normal(size=(n_items, dim)).astype(np.float32)

    def photos(ids):
        x = item[ids] + 0.35 * rng.normal(size=(len(ids), dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True), group_cat[item_group[ids]]

    g_ids = rng.integers(0, n_items, n_gallery)
    gallery, g_cat = photos(g_ids)
    queries, q_cat = photos(g_ids[rng.integers(0, n_gallery, n_queries)])
    return gallery, g_cat, queries, q_cat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scale", type=float, default=1.0, help="fraction of every size")
    p.add_argument("--out", default="bench/results/retrieval.json")
    p.add_argument("--recall-sample", type=int, default=500)
    args = p.parse_args()

    import torch

    from deepfashion2.evaluation import GalleryIndex
    from deepfashion2.evaluation.retrieval import ItemSet, rank

    rng = np.random.default_rng(0)
    s = args.scale
    out = {"scale": s, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}

    # validation size
    gallery, g_cat, queries, q_cat = clustered(rng, int(VAL_GALLERY * s), int(VAL_QUERIES * s))
    t = time.perf_counter()
    exact = GalleryIndex(gallery, "exact")
    _, ids_exact = exact.search(queries, 20)
    out["val_exact_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ivf = GalleryIndex(gallery, "faiss")
    out["val_index_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, ids_ivf = ivf.search(queries, 20)
    out["val_index_search_s"] = time.perf_counter() - t
    out["val_index_recall_at_20"] = _recall(ids_ivf, ids_exact)
    n_q, n_g = len(queries), len(gallery)
    q_set = ItemSet(np.arange(n_q), np.zeros((n_q, 4)), q_cat + 1, np.ones(n_q), queries)
    g_set = ItemSet(np.arange(n_g), np.zeros((n_g, 4)), g_cat + 1, np.ones(n_g), gallery)
    t = time.perf_counter()
    rank(q_set, g_set, same_category=True)
    out["val_rank_same_category_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rank(q_set, g_set, same_category=False)
    out["val_rank_s"] = time.perf_counter() - t  # the evaluator's ranking, whole gallery
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()})
    del gallery, queries, exact, ivf

    # catalogue size
    gallery, _, queries, _ = clustered(rng, int(BIG_GALLERY * s), int(BIG_QUERIES * s))
    t = time.perf_counter()
    ivf = GalleryIndex(gallery, "faiss")
    out["index_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, ids_ivf = ivf.search(queries, 20)
    search_s = time.perf_counter() - t
    out["index_ms_per_query"] = 1000 * search_s / len(queries)
    sample = rng.choice(len(queries), min(args.recall_sample, len(queries)), replace=False)
    t = time.perf_counter()
    _, ids_exact = GalleryIndex(gallery, "exact").search(queries[sample], 20)
    out["exact_ms_per_query"] = 1000 * (time.perf_counter() - t) / len(sample)
    out["index_recall_at_20"] = _recall(ids_ivf[sample], ids_exact)
    out["index_nlist"] = int(ivf._index.nlist)
    out["index_nprobe"] = int(ivf._index.nprobe)
    out["gallery_size"] = len(gallery)
    print(json.dumps(out, indent=1))
    write_json(args.out, out, indent=1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-k that the index also returns."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


if __name__ == "__main__":
    main()
