"""
A catalogue's vectors in Milvus Lite (the embedded Milvus engine, a local file; the same client
talks to a Milvus server or cluster by URI): the same results as the folder with an exact index,
recall@20 >= 0.99 with the recommended one, filters, products and removals the same there, and
another model's collection refused.
"""

import os

import numpy as np
import pytest
from test_catalogue_faults import _catalogue, _unit
from test_products import _csv

from deepfashion2.apps.catalogue import update_products
from deepfashion2.retrieval import Catalogue, CatalogueMismatchError
from deepfashion2.retrieval import milvus as milvus_module
from deepfashion2.retrieval.filters import FilterError
from deepfashion2.retrieval.milvus import push


def _pair(tmp_path, images=120, index="FLAT", name="c"):
    """The same catalogue twice: searched from its folder, and from Milvus Lite."""
    folder = _catalogue(tmp_path / f"{name}_folder", images=images)
    rows = [  # every tenth image has no row (its own product, no fields); some cells blank
        f"{i:03d}.jpg,P{p},{p if p % 7 else ''},{'true' if p % 3 else 'false'},T{p % 4}"
        for i, p in ((i, i // 2) for i in range(images))
        if i % 10 != 9
    ]
    header = "image,product,price,available,title"
    products = _csv(tmp_path / "p.csv", rows, header=header)
    update_products(folder, products)
    other = _catalogue(tmp_path / f"{name}_milvus", images=images)
    update_products(other, products)
    other.use_milvus(str(tmp_path / "milvus.db"), f"{name}_garments", index)
    push(other)
    return Catalogue(folder.folder), Catalogue(other.folder)


def _rows(found):
    return [[m["item"] for m in q] for q in found]


@pytest.mark.parametrize("per_request", [256, 3])  # 3: a category's queries over many requests
def test_milvus_gives_the_folders_results_with_an_exact_index(tmp_path, monkeypatch, per_request):
    monkeypatch.setattr(milvus_module, "QUERIES_PER_REQUEST", per_request)
    folder, milvus = _pair(tmp_path)
    e = folder.entries()
    q, cats = e.embeddings[::7], e.categories[::7]
    for same in (True, False):
        for where in (
            None,
            "available == true and price <= 40",
            "category == 5",
            "title != T1 and price > 3",
        ):
            a = folder.search(q, cats, 20, same, where)
            b = milvus.search(q, cats, 20, same, where)
            assert _rows(a) == _rows(b), (same, where)
            for x, y in zip(a, b):
                np.testing.assert_allclose(
                    [m["similarity"] for m in x], [m["similarity"] for m in y], atol=1e-5
                )
                assert [m["product"] for m in x] == [m["product"] for m in y]
            if where and where.startswith("available"):
                assert all(len(x) == 20 for x in b)  # k results: filtered before the top-k
    with pytest.raises(FilterError, match="unknown field 'colour'"):
        milvus.search(q, cats, 20, where="colour == red")


def test_removals_and_updates_reach_milvus(tmp_path):
    folder, milvus = _pair(tmp_path)
    sold = tmp_path / "sold.txt"
    sold.write_text("P0\nP1\nP2\n")
    update_products(milvus, remove=str(sold))  # pushes: the rows leave the collection
    update_products(folder, remove=str(sold))
    assert (
        milvus.milvus().client.query(
            milvus.milvus().collection,
            filter='product in ["P0", "P1", "P2"]',
            output_fields=["key"],
        )
        == []
    )
    e = folder.entries()
    a = Catalogue(folder.folder).search(e.embeddings, e.categories, 20, False)
    b = Catalogue(milvus.folder).search(e.embeddings, e.categories, 20, False)
    assert _rows(a) == _rows(b)
    assert not {"P0", "P1", "P2"} & {m["product"]["id"] for q in b for m in q}
    # the fields known at creation are typed columns; a field a later file brings is dynamic
    schema = milvus.milvus().client.describe_collection(milvus.milvus().collection)["fields"]
    kinds = {f["name"]: getattr(f["type"], "name", "") for f in schema}
    assert {n: kinds.get(n) for n in ("price", "available", "title")} == {
        "price": "DOUBLE", "available": "BOOL", "title": "VARCHAR"
    }  # fmt: skip
    rows = ["010.jpg,P5,red", "012.jpg,P6,blue"]
    later = _csv(tmp_path / "colour.csv", rows, "image,product,colour")
    for c in (folder, milvus):
        update_products(c, later)
    assert "colour" not in kinds
    for where in ("colour == red", "colour != red and price >= 3"):
        a = Catalogue(folder.folder).search(e.embeddings, e.categories, 20, False, where)
        b = Catalogue(milvus.folder).search(e.embeddings, e.categories, 20, False, where)
        assert _rows(a) == _rows(b), where
        assert all(m["product"]["colour"] == "red" for q in b for m in q) or "!=" in where
    unchanged = {"inserted": 0, "updated": 0, "deleted": 0, "rows": len(e) - 6 * 3}
    assert push(Catalogue(milvus.folder)) == unchanged  # from the record of the last push
    # a push killed midway leaves no record: the next one reads the collection's keys instead
    Catalogue(milvus.folder).record_milvus_pushed(None)
    assert push(Catalogue(milvus.folder)) == unchanged
    assert len(os.listdir(os.path.join(milvus.folder, "milvus"))) == 1


def test_recall_at_20_with_the_recommended_index(tmp_path):
    folder, milvus = _pair(tmp_path, images=1000, index="HNSW", name="h")
    e = folder.entries()
    q, cats = e.embeddings[::25], e.categories[::25]
    exact, approx = _rows(folder.search(q, cats, 20)), _rows(milvus.search(q, cats, 20))
    recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, approx)])
    assert recall >= 0.99, recall


def test_a_collection_of_another_model_is_refused(tmp_path):
    _, milvus = _pair(tmp_path, images=6)
    other = Catalogue.create(
        str(tmp_path / "other"),
        {"config": "x", "weights_sha256": "v" * 64, "embed_dim": 8, "policy": {}},
        images_root="/shop",
    )
    rng = np.random.default_rng(1)
    other.add(["a.jpg"], [(np.zeros((1, 4)), np.array([3]), np.ones(1), _unit(rng, 1))])
    other.use_milvus(str(tmp_path / "milvus.db"), "c_garments", "FLAT")
    with pytest.raises(CatalogueMismatchError, match="holds the vectors of"):
        push(Catalogue(other.folder))
    assert os.path.exists(tmp_path / "milvus.db")
