"""
A catalogue of products: a products file turns results into products with their fields (one
result per product), filters choose items before the top-k, removals and updates are atomic
(also under SIGKILL) and need no embedding again; bad files and filters are one line each.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_catalogue_faults import _catalogue, _unit

from deepfashion2.apps.catalogue import update_products
from deepfashion2.retrieval import Catalogue
from deepfashion2.retrieval.filters import FilterError
from deepfashion2.retrieval.products import ProductsFileError, read_products_csv

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _csv(path, rows, header="image,product,title,price,available"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def _shop(tmp_path, images=12, per_image=3):
    """A catalogue of ``images`` images (3 garments each, categories 3, 5, 3); products of two
    photos each (P0: 000, 001; P1: 002, 003; ...), price = 10 * product, available if even."""
    cat = _catalogue(tmp_path / "cat", images=images, per_image=per_image)
    rows = [
        f"{i:03d}.jpg,P{p},item {p},{10 * p},{'true' if p % 2 == 0 else 'false'}"
        for i, p in ((i, i // 2) for i in range(images))
    ]
    return cat, _csv(tmp_path / "products.csv", rows)


def _brute(cat, query, category, k, keep):
    """The k best rows of distinct products among the rows ``keep`` allows (exact)."""
    e, rows = cat.entries(), cat.rows()
    sims = e.embeddings @ query
    order = [r for r in np.argsort(-sims, kind="stable") if keep(r) and e.categories[r] == category]
    out, seen = [], set()
    for r in order:
        p = rows["product"][r]
        if p not in seen:
            seen.add(p)
            out.append(int(r))
    return out[:k]


def test_results_are_products_with_their_fields_one_per_product(tmp_path):
    cat, products = _shop(tmp_path)
    done = update_products(cat, products)
    assert done == {"products": 6, "images": 12, "removed": 0, "newly_removed": 0, "skipped": 0}
    cat = Catalogue(cat.folder)
    q = cat.entries().embeddings[:1]
    found = cat.search(q, np.array([3]), 4)[0]
    assert len(found) == 4
    ids = [m["product"]["id"] for m in found]
    assert len(set(ids)) == 4  # two photos of one product: one result
    p = int(ids[0][1:])
    assert found[0]["product"] == {
        "id": f"P{p}", "title": f"item {p}", "price": 10 * p, "available": p % 2 == 0
    }  # fmt: skip
    assert found[0]["other_photos"] == 1
    want = _brute(cat, q[0], 3, 4, lambda r: True)
    assert [m["item"] for m in found] == want


def test_images_without_a_row_are_their_own_products(tmp_path):
    cat = _catalogue(tmp_path / "cat", images=6)
    q = cat.entries().embeddings[:2]
    for matches in cat.search(q, np.array([3, 5]), 5):  # no products file: garments, as before
        for m in matches:
            assert m["product"] == {"id": m["image"]} and m["other_photos"] == 0
    update_products(cat, _csv(tmp_path / "p.csv", ["000.jpg,P0,a,1,true", "001.jpg,P0,a,1,true"]))
    cat = Catalogue(cat.folder)
    for j, matches in enumerate(cat.search(q, np.array([3, 5]), 5)):
        ids = [m["product"]["id"] for m in matches]
        assert len(ids) == len(set(ids))  # one result per product; an image is its own
        for m in matches:
            if m["image"] not in ("000.jpg", "001.jpg"):
                assert m["product"] == {"id": m["image"]} and m["other_photos"] == 0
        assert [m["item"] for m in matches] == _brute(cat, q[j], [3, 5][j], 5, lambda r: True)


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_a_filter_gives_k_results_that_all_satisfy_it(tmp_path, kind):
    cat = _catalogue(tmp_path / "cat", images=200, policy={"index": kind})
    rows = [
        f"{i:03d}.jpg,P{i},t,{i},{'true' if i % 5 == 0 else 'false'}" for i in range(200)
    ]  # 20% available
    update_products(cat, _csv(tmp_path / "p.csv", rows))
    cat = Catalogue(cat.folder)
    e = cat.entries()
    q, k = e.embeddings[:10], 10
    where = "available == true and price <= 150"
    found = cat.search(q, e.categories[:10], k, where=where)
    for j, matches in enumerate(found):
        assert len(matches) == k  # not fewer: chosen before the top-k
        for m in matches:
            assert m["product"]["available"] is True and m["product"]["price"] <= 150
        if kind == "exact":
            keep = lambda r: int(e.images[e.image[r]][:3]) % 5 == 0 and int(  # noqa: E731
                e.images[e.image[r]][:3]) <= 150  # fmt: skip
            assert [m["item"] for m in matches] == _brute(cat, q[j], e.categories[j], k, keep)
    by_category = cat.search(q[:1], np.array([3]), k, same_category=False, where="category == 5")
    assert by_category[0] and all(m["category"] == 5 for m in by_category[0])
    named = cat.search(q[:1], np.array([3]), k, same_category=False, where="category == vest")
    assert named == by_category


@pytest.mark.parametrize(
    "where, message",
    [
        ("price <= ", "expected FIELD OP VALUE"),
        ("colour == red", "unknown field 'colour'"),
        ("price <= cheap", "holds numbers"),
        ("available == maybe", "true/false"),
        ("price <= 5 or available == true", "expected 'and'"),
        ("__import__('os').system('touch x') == 1", "cannot read the filter"),
        ("title < 'a'", "compare it with == or !="),
        ("category == hat", "category 'hat'"),
    ],
)
def test_a_bad_filter_is_one_line_and_never_evaluated(tmp_path, where, message):
    cat, products = _shop(tmp_path)
    update_products(cat, products)
    with pytest.raises(FilterError, match=message) as e:
        Catalogue(cat.folder).search(cat.entries().embeddings[:1], np.array([3]), 3, where=where)
    assert "\n" not in str(e.value)
    assert not os.path.exists("x")


@pytest.mark.parametrize(
    "row, message",
    [
        ("999.jpg,P9,t,1,true", r"line 3: field image: 999.jpg is not in the catalogue"),
        ("000.jpg,P9,t,1,true", r"line 3: field image: 000.jpg is listed twice"),
        ("001.jpg,P1,t,cheap,true", r"line 3: field price: 'cheap' is not a number"),
        ("001.jpg,P1,t,1,perhaps", r"line 3: field available: 'perhaps' is not bool"),
        ("001.jpg,P0,t,2,true", r"line 3: field product: P0 has other fields"),
        ("001.jpg,P1,t", r"line 3: 3 cells, the header has 5"),
        ("/etc/passwd,P1,t,1,true", r"line 3: field image: '/etc/passwd' is not a path"),
    ],
)
def test_bad_rows_are_refused_by_file_line_and_field_or_skipped_and_counted(tmp_path, row, message):
    cat = _catalogue(tmp_path / "cat", images=6)
    path = _csv(tmp_path / "p.csv", ["000.jpg,P0,t,1,true", row])
    with pytest.raises(ProductsFileError, match=message) as e:
        update_products(cat, path)
    assert str(e.value).startswith(path + ": ")
    assert Catalogue(cat.folder).products.images == {}  # nothing changed
    done = update_products(cat, path, lenient=True)
    assert done["skipped"] == 1 and done["images"] == 1


def test_a_header_without_the_needed_columns_or_with_a_reserved_field(tmp_path):
    for header, message in [
        ("image,title", "no column 'product'"),
        ("image,product,category", "column 'category' cannot name a field"),
        ("image,product,price tag", "column 'price tag' cannot name a field"),
    ]:
        with pytest.raises(ProductsFileError, match=message):
            read_products_csv(_csv(tmp_path / "h.csv", [], header=header), {"000.jpg"})


def test_removed_products_never_appear_and_come_back_without_embedding(tmp_path):
    cat, products = _shop(tmp_path)
    update_products(cat, products)
    ids = tmp_path / "sold.txt"
    ids.write_text("P0\nP3\n# a comment\n")
    shards = sorted(os.listdir(os.path.join(cat.folder, "shards")))
    done = update_products(cat, remove=str(ids))
    assert done["newly_removed"] == 4
    cat = Catalogue(cat.folder)
    e = cat.entries()
    for same in (True, False):
        found = cat.search(e.embeddings, e.categories, 20, same_category=same)
        assert {m["product"]["id"] for q in found for m in q}.isdisjoint({"P0", "P3"})
    removed_row = next(r for r in range(len(e)) if e.images[e.image[r]] == "000.jpg")
    assert cat.image_path("/shop", removed_row) is None  # not served either
    assert sorted(os.listdir(os.path.join(cat.folder, "shards"))) == shards  # nothing rewritten
    # an unknown id: refused by name, or skipped and counted
    ids.write_text("P404\n")
    with pytest.raises(ProductsFileError, match="product P404 is not in the catalogue"):
        update_products(cat, remove=str(ids))
    assert update_products(cat, remove=str(ids), lenient=True)["skipped"] == 1
    # listed again: back, from the shards as they are
    update_products(cat, products)
    found = Catalogue(cat.folder).search(e.embeddings, e.categories, 20)
    assert {"P0", "P3"} <= {m["product"]["id"] for q in found for m in q}
    # --sync: what the file no longer lists is removed; fields update without embedding
    rows = [f"{i:03d}.jpg,P{i // 2},new {i // 2},{i // 2},true" for i in range(4)]
    update_products(cat, _csv(tmp_path / "p2.csv", rows), sync=True)
    cat = Catalogue(cat.folder)
    found = cat.search(e.embeddings, e.categories, 20, same_category=False)
    assert {m["product"]["id"] for q in found for m in q} == {"P0", "P1"}
    assert {m["product"]["title"] for q in found for m in q} == {"new 0", "new 1"}
    assert len(os.listdir(os.path.join(cat.folder, "products"))) == 1  # the old tables removed


@pytest.mark.slow
def test_a_removal_killed_at_any_moment_leaves_the_catalogue_before_or_after(tmp_path):
    """SIGKILL an updater that removes and restores in a loop, at many moments: the catalogue
    always opens, with the products table whole (before or after an update), and the next
    update cleans what the kill left."""
    cat, products = _shop(tmp_path, images=40)
    update_products(cat, products)
    ids = tmp_path / "sold.txt"
    ids.write_text("\n".join(f"P{i}" for i in range(0, 20, 2)))
    script = (
        "import sys; sys.path.insert(0, 'projects')\n"
        "from deepfashion2.apps.catalogue import update_products\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        f"    update_products({cat.folder!r}, remove={str(ids)!r})\n"
        "    print('removed', flush=True)\n"
        f"    update_products({cat.folder!r}, {products!r})\n"
        "    print('restored', flush=True)\n"
    )

    def start():
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        return proc

    def kill(proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

    # the kills spread over two remove-and-restore cycles, however long one takes on this machine
    proc = start()
    t = time.perf_counter()
    for _ in range(4):
        proc.stdout.readline()
    cycle = (time.perf_counter() - t) / 2
    kill(proc)
    states = set()
    rng = np.random.default_rng(0)
    for attempt in range(30):  # until both moments were hit, at least 6 kills
        if attempt >= 6 and len(states) == 2:
            break
        proc = start()
        time.sleep(float(rng.uniform(0.0, 2 * cycle)))
        kill(proc)
        opened = Catalogue(cat.folder)
        removed = opened.products.removed
        assert removed in (set(), {f"{i:03d}.jpg" for i in range(0, 40) if i // 2 % 2 == 0})
        states.add(len(removed))
        e = opened.entries()
        found = opened.search(e.embeddings[:5], e.categories[:5], 5)
        assert all(m["product"]["id"] for q in found for m in q)
    update_products(cat, products)
    left = [n for n in os.listdir(os.path.join(cat.folder, "products"))]
    assert len(left) == 1, left  # one table; any half-written one removed
    assert len(states) == 2, states  # both moments were hit


def test_the_products_file_the_catalogue_names_is_checked(tmp_path):
    cat, products = _shop(tmp_path)
    update_products(cat, products)
    meta = json.load(open(os.path.join(cat.folder, "catalogue.json")))
    json.dump(
        {**meta, "products": "../../etc"}, open(os.path.join(cat.folder, "catalogue.json"), "w")
    )
    with pytest.raises(Exception, match="products: not a table name"):
        Catalogue(cat.folder).search(cat.entries().embeddings[:1], np.array([3]), 3)
    table = os.path.join(cat.folder, "products", meta["products"], "products.json")
    json.dump({**meta}, open(os.path.join(cat.folder, "catalogue.json"), "w"))
    with open(table, "r+b") as f:
        f.seek(10)
        f.write(b"X")
    with pytest.raises(Exception, match="damaged"):
        assert Catalogue(cat.folder).products is None


def test_faiss_search_with_an_allowed_mask_returns_only_allowed_rows():
    from deepfashion2.evaluation.gallery import GalleryIndex

    rng = np.random.default_rng(0)
    emb = _unit(rng, 3000, 16)
    index = GalleryIndex(emb, "faiss", nlist=8, nprobe=8)  # every cell probed: exact
    allowed = rng.uniform(size=3000) < 0.1
    s, ids = index.search(emb[:5], 10, allowed)
    assert allowed[ids].all()
    exact = GalleryIndex(emb, "exact")
    assert np.array_equal(exact.search(emb[:5], 10, allowed)[1], ids)
