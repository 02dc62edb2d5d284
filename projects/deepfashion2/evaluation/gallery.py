"""
Gallery search behind one interface: exact inner-product search for small galleries, a FAISS
inverted-file index for large ones (a validation gallery is ~37K items; a shop catalogue can hold
millions). Embeddings are L2-normalised, so inner product = cosine similarity.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import RETRIEVAL_DEFAULTS

EXACT_MAX = RETRIEVAL_DEFAULTS["EXACT_MAX_GALLERY"]  # exact search up to this many items


class GalleryIndex:
    """
    ``GalleryIndex(embeddings, kind="auto")``, then ``search(queries, k)`` -> (scores, ids), both
    (Q, k), best first; ids index the gallery rows (-1 where the gallery has fewer than k items).

    ``kind``: "exact" (blocked matrix product + top-k), "faiss" (``IndexIVFFlat``, inner product;
    ``nlist`` cells, ``nprobe`` probed per query) or "auto" (exact up to ``exact_max`` items).
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        kind: str = "auto",
        *,
        exact_max: int = EXACT_MAX,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
    ):
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"gallery embeddings must be (N, D), got {emb.shape}")
        if kind == "auto":
            kind = "exact" if len(emb) <= exact_max else "faiss"
        if kind not in ("exact", "faiss"):
            raise ValueError(f"unknown gallery index {kind!r}: 'exact', 'faiss' or 'auto'")
        self.kind, self.size, self.dim = kind, len(emb), emb.shape[1]
        if kind == "exact":
            self._emb = torch.from_numpy(emb)
        else:
            self._index = _build_ivf(emb, nlist, nprobe, seed)

    def to_bytes(self) -> bytes | None:
        """FAISS: the trained index, serialised; exact: None (it is its embeddings)."""
        if self.kind != "faiss":
            return None
        import faiss

        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | None, embeddings: np.ndarray) -> "GalleryIndex":
        """
        The index :meth:`to_bytes` gave (FAISS), or an exact one over ``embeddings``. A FAISS
        index is refused (``ValueError``) unless it is an inner-product IVF index over exactly
        these rows: every stored id once, each within ``0..len(embeddings) - 1``.
        """
        if data is None:
            return cls(embeddings, "exact")
        import faiss

        self = cls.__new__(cls)
        self._index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        self.kind, self.size, self.dim = "faiss", self._index.ntotal, self._index.d
        emb = np.asarray(embeddings)
        if self.size != len(emb) or self.dim != emb.shape[1]:
            raise ValueError(f"an index of {self.size} x {self.dim}, gallery {emb.shape}")
        if self._index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("not an inner-product index")
        ivf = faiss.extract_index_ivf(self._index)  # RuntimeError if it is not an IVF index
        lists = ivf.invlists
        ids = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if lists.list_size(i)
        ]
        ids = np.sort(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        if not np.array_equal(ids, np.arange(self.size)):
            raise ValueError("its ids are not the gallery's rows, each once")
        return self

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``allowed``: (size,) bool, the rows a result may be (a filter, applied before the
        top-k: the k best allowed rows, not the allowed ones among the k best)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = self.size if allowed is None else int(np.count_nonzero(allowed))
        kk = min(k, n)
        if kk == 0 or len(q) == 0:
            scores, ids = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        elif self.kind == "exact":
            scores, ids = _exact(self._emb, torch.from_numpy(q), kk, allowed)
        elif allowed is None:
            scores, ids = self._index.search(q, kk)
        else:
            import faiss

            bits = np.packbits(allowed.astype(np.uint8), bitorder="little")
            params = faiss.SearchParametersIVF(
                sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits)),
                nprobe=self._index.nprobe,
            )
            scores, ids = self._index.search(q, kk, params=params)
        if kk < k:  # pad like FAISS does
            pad = k - kk
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids.astype(np.int64)


def _exact(gallery: torch.Tensor, queries: torch.Tensor, k: int, allowed=None, block: int = 2048):
    scores, ids = [], []
    barred = None if allowed is None else torch.from_numpy(~np.asarray(allowed, bool))
    with torch.no_grad():
        for s in range(0, len(queries), block):
            sims = queries[s : s + block] @ gallery.T
            if barred is not None:
                sims[:, barred] = -torch.inf
            v, i = torch.topk(sims, k, dim=1)
            scores.append(v.numpy())
            ids.append(i.numpy())
    return np.concatenate(scores), np.concatenate(ids)


def _build_ivf(emb: np.ndarray, nlist: int | None, nprobe: int | None, seed: int):
    import faiss  # optional at import time: only large galleries need it

    n, d = emb.shape
    nlist = nlist or int(max(1, min(np.sqrt(n), n // 39)))  # ~sqrt(n) cells, >= 39 points each
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    # k-means on a sample: FAISS would subsample to 256 points per cell anyway
    rng = np.random.default_rng(seed)
    sample = emb[rng.choice(n, min(n, 64 * nlist), replace=False)] if n > 64 * nlist else emb
    index.train(sample)
    index.add(emb)
    index.nprobe = nprobe or max(1, min(nlist, 32))
    return index


class GroupedIndex:
    """
    Ranking within the query's category (``same_category``, the benchmark's default) or over the
    whole gallery: one :class:`GalleryIndex` per gallery category. ``search`` returns gallery row
    numbers, so a ranking is the same whether the index was just built or loaded.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        categories: np.ndarray,
        *,
        same_category: bool = True,
        kind: str = "auto",
        exact_max: int = EXACT_MAX,
        **ivf,
    ):
        self.same_category = same_category
        self.embeddings, self.categories = embeddings, np.asarray(categories)
        self.rows = self._groups()
        self.indexes = {
            c: GalleryIndex(embeddings[rows], kind, exact_max=exact_max, **ivf)
            for c, rows in self.rows.items()
        }

    def _groups(self) -> dict[int, np.ndarray]:
        if not self.same_category:
            return {-1: np.arange(len(self.categories))}
        return {int(c): np.flatnonzero(self.categories == c) for c in np.unique(self.categories)}

    def search(
        self, queries: np.ndarray, categories: np.ndarray, k: int, allowed: np.ndarray | None = None
    ):
        """(scores, rows), each (Q, k), best first; rows are gallery rows, -1 = none.
        ``allowed``: (N,) bool over the gallery rows, applied before the top-k."""
        q = np.asarray(queries, dtype=np.float32)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        rows = -np.ones((len(q), k), np.int64)
        cats = np.asarray(categories) if self.same_category else np.full(len(q), -1)
        for c in np.unique(cats).tolist():
            index = self.indexes.get(int(c))
            sel = cats == c
            if index is None or not sel.any():
                continue
            sub = None if allowed is None else allowed[self.rows[int(c)]]
            s, ids = index.search(q[sel], k, sub)
            scores[sel] = s
            rows[sel] = np.where(ids >= 0, self.rows[int(c)][np.maximum(ids, 0)], -1)
        return scores, rows

    def to_files(self) -> dict[str, bytes]:
        """Each category's FAISS index as ``<category>.faiss`` (exact ones need none)."""
        out = {}
        for c, index in self.indexes.items():
            data = index.to_bytes()
            if data is not None:
                out[f"{c}.faiss"] = data
        return out

    @classmethod
    def from_files(
        cls,
        files: dict[str, bytes],
        embeddings: np.ndarray,
        categories: np.ndarray,
        same_category: bool,
    ) -> "GroupedIndex":
        """The index :meth:`to_files` gave, over these rows (``ValueError`` if it does not fit)."""
        self = cls.__new__(cls)
        self.same_category = same_category
        self.embeddings, self.categories = embeddings, np.asarray(categories)
        self.rows = self._groups()
        unknown = set(files) - {f"{c}.faiss" for c in self.rows}
        if unknown:
            raise ValueError(f"index files of no category here: {sorted(unknown)}")
        self.indexes = {
            c: GalleryIndex.from_bytes(files.get(f"{c}.faiss"), embeddings[rows])
            for c, rows in self.rows.items()
        }
        return self
