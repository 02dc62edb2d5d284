"""
A catalogue's vectors in Milvus (``tools/index_catalogue.py --milvus URI``): a Milvus Lite file
(``catalogue.db``, the embedded engine; what the tests use) or a Milvus server or cluster
(``http://HOST:19530``), through the one client, ``pymilvus.MilvusClient``.

The catalogue folder stays the record (its config, the model's identity, the shards, the
products table); Milvus holds what search needs: one row per live garment, keyed by a stable
id of (image path, detection), with its embedding, category, product id and the product's
fields (dynamic fields), and a digest of them. :func:`push` makes the collection equal to the
folder (inserts new garments, deletes removed ones, upserts changed fields), so a push that
was killed is finished by the next one; search then runs in Milvus with the filter translated
to Milvus's expression language (never evaluated here) and results grouped by product.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib

import numpy as np

from .errors import CatalogueError, CatalogueMismatchError
from .filters import Clause

logger = logging.getLogger(__name__)

BATCH = 2000  # rows per insert / upsert call
# FLAT: exact, the folder's answers; HNSW: Milvus's graph index for in-memory search (what the
# docs recommend past a million garments), searched with ef = max(EF, k)
INDEXES = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}
EF = 128
QUERIES_PER_REQUEST = 256  # vectors per search request (1 MB of float32 at 1024-d)
MAX_TEXT = 65535  # bytes of a VARCHAR (Milvus's most; a products cell is <= 4096 characters)
_IDENTITY = "deepfashion2.identity"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}\Z")


def garment_keys(images: list[str], image: np.ndarray) -> np.ndarray:
    """(N,) int64: a stable key per garment (its image path and its place among the image's
    detections), the same whichever shards hold it and however the rows are ordered."""
    keys = np.empty(len(image), np.int64)
    nth: dict[int, int] = {}
    for r, i in enumerate(image.tolist()):
        j = nth.get(i, 0)
        nth[i] = j + 1
        d = hashlib.blake2b(f"{images[i]}\0{j}".encode("utf-8", "surrogateescape"), digest_size=8)
        keys[r] = int.from_bytes(d.digest(), "little") >> 1  # positive int64
    return keys


class MilvusStore:
    """One collection of one catalogue, checked against the catalogue's model at open."""

    def __init__(self, uri: str, collection: str, identity: dict, index: str = "HNSW"):
        from pymilvus import MilvusClient

        if not _NAME.match(collection):
            raise CatalogueError(collection, "not a Milvus collection name")
        if index not in INDEXES:
            raise CatalogueError(collection, f"index {index!r}: one of {', '.join(INDEXES)}")
        self.uri, self.collection, self.index = uri, collection, index
        self._loaded = False
        self.identity = {k: identity[k] for k in ("weights_sha256", "embed_dim")}
        try:
            self.client = MilvusClient(uri)
        except Exception as e:  # pymilvus raises its own types for every failure
            hint = (
                "Milvus Lite opens its file in one process at a time: stop the other one (a"
                " running tools/serve.py), or use a Milvus server (http://HOST:19530)"
                if not uri.startswith(("http://", "https://", "tcp://"))
                else "is the Milvus server running and reachable?"
            )
            raise CatalogueError(uri, f"cannot open Milvus: {_one_line(e)}", hint) from None
        if self.client.has_collection(collection):
            self._check()

    def _check(self) -> None:
        properties = self.client.describe_collection(self.collection).get("properties") or {}
        try:
            theirs = json.loads(properties.get(_IDENTITY, ""))
        except ValueError:
            theirs = {}
        if not theirs and self._empty():  # created by a push killed before it said whose
            self._mark()
            return
        if theirs != self.identity:
            raise CatalogueMismatchError(
                f"{self.uri} {self.collection}",
                f"holds the vectors of {theirs or 'another program'}, not of this catalogue's "
                f"model {self.identity}: push into another collection",
            )

    def create(self, fields: dict[str, str]) -> None:
        """Create the collection; ``fields``: the products' fields and kinds known now, given
        typed, nullable columns (filtered column-wise, and indexable; a JSON dynamic field is
        parsed row by row on every search). A field a later products file brings goes in the
        dynamic field, filtered the same way."""
        from pymilvus import DataType

        if self.client.has_collection(self.collection):
            return
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=int(self.identity["embed_dim"]))
        schema.add_field("category", DataType.INT64)
        schema.add_field("product", DataType.VARCHAR, max_length=MAX_TEXT)
        schema.add_field("digest", DataType.INT64)
        types = {"number": DataType.DOUBLE, "bool": DataType.BOOL, "text": DataType.VARCHAR}
        for name, kind in fields.items():
            size = {"max_length": MAX_TEXT} if kind == "text" else {}
            schema.add_field(name, types[kind], nullable=True, **size)
        index = self.client.prepare_index_params()
        index.add_index(
            "embedding", index_type=self.index, metric_type="IP", params=INDEXES[self.index]
        )
        self.client.create_collection(self.collection, schema=schema, index_params=index)
        self._mark()

    def _mark(self) -> None:
        """Say in the collection whose vectors it holds (a property: the model's identity)."""
        self.client.alter_collection_properties(
            self.collection, properties={_IDENTITY: json.dumps(self.identity)}
        )

    def _empty(self) -> bool:
        self.client.load_collection(self.collection)
        return not self.client.query(self.collection, filter="key >= 0", limit=1)

    def keys(self) -> dict[int, int]:
        """key -> digest of every row in the collection."""
        out: dict[int, int] = {}
        it = self.client.query_iterator(
            self.collection, batch_size=BATCH, filter="key >= 0", output_fields=["key", "digest"]
        )
        while True:
            batch = it.next()
            if not batch:
                it.close()
                return out
            out.update((int(r["key"]), int(r["digest"])) for r in batch)

    def search(
        self,
        q: np.ndarray,
        categories: np.ndarray,
        k: int,
        same_category: bool,
        clauses: list[Clause],
        grouped: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, keys), each (Q, k), best first; key -1 = none."""
        sims = np.full((len(q), k), -np.inf, np.float32)
        keys = -np.ones((len(q), k), np.int64)
        if not self._loaded:  # a collection reopened is released until loaded
            self.client.load_collection(self.collection)
            self._loaded = True
        params = {"metric_type": "IP", "params": {"ef": max(EF, k)} if self.index == "HNSW" else {}}
        extra = {"group_by_field": "product"} if grouped else {}
        base = [expression(c) for c in clauses]
        # one request per filter (the queries of one category share theirs): Milvus Lite passes
        # over every row in Python once per request, whatever its number of queries (1M rows:
        # 14x less per garment in one call of 200, bench/results/catalogue.json)
        by_filter: dict[str, list[int]] = {}
        for j, category in enumerate(np.asarray(categories).tolist()):
            where = base + ([f"category == {int(category)}"] if same_category else [])
            by_filter.setdefault(" and ".join(where), []).append(j)
        q = np.asarray(q, np.float32)
        for where, rows in by_filter.items():
            for s in range(0, len(rows), QUERIES_PER_REQUEST):
                part = rows[s : s + QUERIES_PER_REQUEST]
                found = self.client.search(
                    self.collection, data=q[part].tolist(), limit=k, filter=where,
                    output_fields=["key"], search_params=params, **extra,
                )  # fmt: skip
                for j, hits in zip(part, found):
                    for i, hit in enumerate(hits[:k]):
                        sims[j, i], keys[j, i] = hit["distance"], hit["entity"]["key"]
        return sims, keys


def expression(c: Clause) -> str:
    """A parsed comparison in Milvus's filter language (values quoted, never pasted as text)."""
    if c.field == "product":
        return f"product {c.op} {json.dumps(c.value)}"
    if isinstance(c.value, bool):
        return f"{c.field} {c.op} {'true' if c.value else 'false'}"
    if isinstance(c.value, (int, float)):
        return f"{c.field} {c.op} {float(c.value)!r}"
    return f"{c.field} {c.op} {json.dumps(c.value)}"


def push(cat) -> dict:
    """
    Make the catalogue's collection equal to the folder: every live garment (not removed) with
    its embedding, category, product and fields. Idempotent; what changed: ``{"inserted",
    "updated", "deleted", "rows"}``. What the collection holds is known from the record of the
    last push (``Catalogue.milvus_pushed``), cleared before anything is sent and written after:
    a push killed midway makes the next one read the collection's keys instead.
    """
    store = cat.milvus()
    e, rows, table = cat.entries(), cat.rows(), cat.products
    store.create(table.fields)
    keys = cat.garment_keys()
    live = np.flatnonzero(rows["live"])
    digest_of = {}  # product -> crc32 of its id and fields
    for p in {int(rows["product"][r]) for r in live.tolist()}:
        product = rows["product_ids"][p]
        blob = json.dumps([product, table.products.get(product, {})], sort_keys=True)
        digest_of[p] = zlib.crc32(blob.encode("utf-8", "surrogateescape"))
    digests = np.zeros(len(e), np.int64)
    for r in live.tolist():
        digests[r] = digest_of[int(rows["product"][r])] | (int(e.categories[r]) << 32)
    want = {int(keys[r]): r for r in live.tolist()}
    present = cat.milvus_pushed()
    if present is None:  # no record (first push into an existing collection, or a kill)
        present = store.keys()
    cat.record_milvus_pushed(None)
    stale = [k for k in present if k not in want]
    todo = [r for k, r in want.items() if present.get(k) != int(digests[r])]
    inserted = sum(1 for r in todo if int(keys[r]) not in present)
    for s in range(0, len(todo), BATCH):
        batch = []
        for r in todo[s : s + BATCH]:
            product = rows["product_ids"][rows["product"][r]]
            batch.append({
                **_fields(table, product), "key": int(keys[r]),
                "embedding": e.embeddings[r].tolist(), "category": int(e.categories[r]),
                "product": product.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                "digest": int(digests[r]),
            })  # fmt: skip
        store.client.upsert(store.collection, batch)
    for s in range(0, len(stale), BATCH):
        store.client.delete(store.collection, ids=stale[s : s + BATCH])
    if todo or stale:  # sealed, so that Milvus indexes it (growing data is searched by scanning)
        store.client.flush(store.collection)
    cat.record_milvus_pushed({k: int(digests[r]) for k, r in want.items()})
    return {"inserted": inserted, "updated": len(todo) - inserted, "deleted": len(stale),
            "rows": len(want)}  # fmt: skip


def _fields(table, product: str) -> dict:
    """A product's fields as Milvus takes them: numbers as floats (DOUBLE columns)."""
    kinds = table.fields
    return {
        k: float(v) if kinds[k] == "number" and v is not None else v
        for k, v in table.products.get(product, {}).items()
    }


def _one_line(e: Exception) -> str:
    return str(e).splitlines()[0][:300] if str(e) else type(e).__name__
