"""
A catalogue folder is data from someone else: it never runs code, a damaged file is refused by
name (never answered from), and what indexing writes is exclusive to one model and one folder.
Catalogues here are written directly (no model needed) except where search itself is exercised.
"""

import errno
import io
import json
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest

from deepfashion2.retrieval import Catalogue, CatalogueError, CatalogueMismatchError
from deepfashion2.retrieval import catalogue as C
from deepfashion2.utils import checked

IDENT = {"config": "x", "weights_sha256": "w" * 64, "embed_dim": 8, "policy": {}}


def _unit(rng, n, dim=8):
    v = rng.normal(size=(n, dim)).astype("f4")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _catalogue(folder, policy=None, images=6, per_image=3, seed=0) -> Catalogue:
    """A catalogue of ``images`` images with ``per_image`` garments each (categories 3 and 5)."""
    rng = np.random.default_rng(seed)
    cat = Catalogue.create(str(folder), {**IDENT, "policy": policy or {}}, images_root="/shop")
    names = [f"{i:03d}.jpg" for i in range(images)]
    dets = [
        (rng.uniform(0, 50, (per_image, 4)), np.array([3, 5, 3][:per_image]),
         rng.uniform(0.5, 1, per_image), _unit(rng, per_image))
        for _ in names
    ]  # fmt: skip
    half = images // 2
    cat.add(names[:half], dets[:half])
    cat.add(names[half:], dets[half:])
    return Catalogue(str(folder))


def _shard(folder) -> str:
    shards = os.path.join(folder, "shards")
    return os.path.join(shards, sorted(os.listdir(shards))[0])


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _reforge_manifest(folder):
    """What a hostile folder does: a manifest that matches whatever the files now hold."""
    path = os.path.join(folder, "manifest.json")
    manifest = json.load(open(path))
    for name in manifest["files"]:
        manifest["files"][name] = checked.write_bytes(
            os.path.join(folder, name), open(os.path.join(folder, name), "rb").read()
        )
    checked.write_bytes(path, json.dumps(manifest).encode())


def _flip_bit(path, offset_from_end=3, bit=6):
    data = bytearray(open(path, "rb").read())
    data[-offset_from_end] ^= 1 << bit
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: _flip_bit(os.path.join(s, "embeddings.npy")), "embeddings.npy: damaged"),
        (lambda s: _flip_bit(os.path.join(s, "categories.npy"), 8, 4), "categories.npy: damaged"),
        (lambda s: open(os.path.join(s, "images.json"), "w").write("[]"), "images.json: damaged"),
        (lambda s: os.remove(os.path.join(s, "scores.npy")), "scores.npy: missing"),
        (lambda s: os.remove(os.path.join(s, "manifest.json")), "manifest.json: missing"),
    ],
)
def test_a_damaged_shard_is_refused_by_name(tmp_path, damage, message, caplog):
    folder = tmp_path / "cat"
    good = _catalogue(folder).search(_unit(np.random.default_rng(1), 2), np.array([3, 5]), 4)
    shard = _shard(folder)
    damage(shard)
    cat = Catalogue(str(folder))
    with pytest.raises(CatalogueError, match=message) as e:
        cat.search(_unit(np.random.default_rng(1), 2), np.array([3, 5]), 4)
    assert shard in str(e.value)
    # lenient: the damaged shard is left out with a warning, never used
    lenient = Catalogue(str(folder), lenient=True)
    found = lenient.search(_unit(np.random.default_rng(1), 2), np.array([3, 5]), 4)
    assert "skipped a damaged shard" in caplog.text
    assert {m["image"] for q in found for m in q} <= {f"{i:03d}.jpg" for i in range(3, 6)}
    assert found != good


def test_consistent_but_invalid_contents_are_refused(tmp_path):
    """A shard rewritten with a matching manifest is still validated: category 29, NaN."""
    folder = tmp_path / "cat"
    _catalogue(folder)
    shard = _shard(folder)
    manifest = json.load(open(os.path.join(shard, "manifest.json")))

    def rewrite(name, array):
        manifest["files"][name] = checked.write_bytes(os.path.join(shard, name), _npy(array))
        checked.write_bytes(os.path.join(shard, "manifest.json"), json.dumps(manifest).encode())

    cats = np.load(os.path.join(shard, "categories.npy"))
    rewrite("categories.npy", np.where(np.arange(len(cats)) == 0, 29, cats))
    with pytest.raises(CatalogueError, match=r"categories.npy: a category outside 1\.\.13"):
        len(Catalogue(str(folder)))
    rewrite("categories.npy", cats)
    emb = np.load(os.path.join(shard, "embeddings.npy"))
    emb[0, 0] = np.nan
    rewrite("embeddings.npy", emb)
    with pytest.raises(CatalogueError, match="embeddings.npy: a value that is not finite"):
        len(Catalogue(str(folder)))
    emb[0] = 3e35
    rewrite("embeddings.npy", emb)
    with pytest.raises(CatalogueError, match="not finite|not unit length"):
        len(Catalogue(str(folder)))


def test_a_shard_replaced_by_a_link_is_refused(tmp_path):
    folder = tmp_path / "cat"
    _catalogue(folder)
    shard = _shard(folder)
    moved = tmp_path / "elsewhere"
    shutil.move(shard, moved)
    os.symlink(moved, shard)
    with pytest.raises(CatalogueError, match="not a plain folder"):
        len(Catalogue(str(folder)))


def test_similarities_stay_within_one_and_the_output_is_json(tmp_path):
    cat = _catalogue(tmp_path / "cat")
    e = cat.entries()
    found = cat.search(e.embeddings[:3], e.categories[:3], 5)  # each finds itself first
    for q in found:
        assert all(-1 <= m["similarity"] <= 1 for m in q)
        assert q[0]["similarity"] == pytest.approx(1, abs=1e-6)
    json.dumps(found, allow_nan=False)
    with pytest.raises(ValueError, match="non-finite embedding"):
        cat.search(np.full((1, 8), np.nan, "f4"), np.array([3]), 5)
    for k in (0, -1, 10**12, 2.5):
        with pytest.raises(ValueError, match="top-k must be an integer from 1 to 1000"):
            cat.search(e.embeddings[:1], e.categories[:1], k)


def test_a_swapped_faiss_file_is_rebuilt_not_used(tmp_path, caplog):
    """Categories 3 and 5 hold the same number of items: their FAISS files fit each other."""
    folder = tmp_path / "cat"
    cat = _catalogue(folder, policy={"index": "faiss"}, per_image=2)
    e = cat.entries()
    assert (e.categories == 3).sum() == (e.categories == 5).sum()
    want = cat.search(e.embeddings, e.categories, 5)
    (index,) = [os.path.join(folder, "index", n) for n in os.listdir(folder / "index")]
    a, b = os.path.join(index, "3.faiss"), os.path.join(index, "5.faiss")
    os.rename(a, a + ".x"), os.rename(b, a), os.rename(a + ".x", b)
    # a hostile folder fixes the manifest too: the probe still finds the swap
    _reforge_manifest(index)
    again = Catalogue(str(folder))
    assert again.search(e.embeddings, e.categories, 5) == want
    assert "saved index not used, rebuilt" in caplog.text
    assert "does not hold its own items" in caplog.text


def test_the_index_is_keyed_by_content_not_shard_names(tmp_path):
    folder = tmp_path / "cat"
    cat = _catalogue(folder, policy={"index": "faiss"})
    cat.search(cat.entries().embeddings[:1], np.array([3]), 3)
    before = os.listdir(folder / "index")
    shard = _shard(folder)
    other = _catalogue(tmp_path / "other", seed=5)  # same names, other content
    shutil.rmtree(shard)
    shutil.copytree(_shard(tmp_path / "other"), shard)
    assert len(other) == len(cat)
    cat = Catalogue(str(folder))
    cat.search(cat.entries().embeddings[:1], np.array([3]), 3)
    assert os.listdir(folder / "index") != before


def test_a_read_only_catalogue_searches_with_an_index_in_memory(tmp_path, monkeypatch):
    cat = _catalogue(tmp_path / "cat")

    def read_only(parent):
        raise OSError(errno.EROFS, "Read-only file system", parent)

    monkeypatch.setattr(checked, "temporary_folder", read_only)
    e = cat.entries()
    found = cat.search(e.embeddings[:2], e.categories[:2], 3, same_category=False)
    assert found[0][0]["item"] == 0
    assert not os.listdir(tmp_path / "cat" / "index")  # nothing could be saved


def test_two_indexers_with_other_weights_cannot_mix_one_catalogue(tmp_path, monkeypatch):
    """The second waits for the first's creation and is refused; nothing of it is written."""
    folder = str(tmp_path / "cat")
    stock = C.write_json_atomic
    creating = threading.Event()

    def slow(path, obj):  # widen the window between the check and the creation
        creating.set()  # the first holds the lock now
        time.sleep(0.5)
        stock(path, obj)

    monkeypatch.setattr(C, "write_json_atomic", slow)
    errors = []

    def create(sha, yaml_text):
        try:
            Catalogue.create(folder, {**IDENT, "weights_sha256": sha}, yaml_text, "/shop")
        except CatalogueMismatchError as e:
            errors.append(e)

    first = threading.Thread(target=create, args=("a" * 64, "A: 1\n"))
    first.start()
    assert creating.wait(timeout=60)
    create("b" * 64, "B: 2\n")
    first.join()
    assert len(errors) == 1 and "weights" in str(errors[0])
    assert Catalogue(folder).meta["weights_sha256"] == "a" * 64
    assert open(os.path.join(folder, "config.yaml")).read() == "A: 1\n"


def test_another_image_folder_is_refused(tmp_path):
    folder = str(tmp_path / "cat")
    Catalogue.create(folder, IDENT, images_root="/shop")
    Catalogue.create(folder, IDENT, images_root="/shop")  # the same folder: fine
    with pytest.raises(CatalogueMismatchError, match="indexes the images of /shop, not /other"):
        Catalogue.create(folder, IDENT, images_root="/other")


def test_a_full_disk_is_reported_with_the_path():
    with pytest.raises(OSError, match="no space left on the device writing /dev/full"):
        checked.write_bytes("/dev/full", b"x" * 100_000)


def test_pictures_of_photos_with_one_base_name_do_not_overwrite_each_other():
    from deepfashion2.apps.catalogue.search import picture_names

    assert picture_names(["a/x.jpg", "b/x.jpg", "y.png", "c/x.jpeg"]) == [
        "x.png", "x-2.png", "y.png", "x-3.png"
    ]  # fmt: skip


def test_an_old_format_catalogue_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "catalogue.json").write_text(json.dumps({"format": 1, **IDENT}))
    with pytest.raises(CatalogueError, match="format 1, expected 3: index the images again"):
        Catalogue(str(folder))


# -- a received catalogue reaches nothing outside itself (second adversarial pass) ------------


@pytest.mark.parametrize("name", ["index", "shards", "catalogue.json", "config.yaml", ".lock"])
def test_a_link_out_of_the_catalogue_is_refused_before_anything_is_touched(tmp_path, name):
    """index/ linked to a user's folder: nothing there is deleted or written (it was, before)."""
    folder = tmp_path / "cat"
    cat = _catalogue(folder, policy={"index": "faiss"})
    cat.search(cat.entries().embeddings[:1], np.array([3]), 3)  # saves an index
    victim = tmp_path / "users_folder"
    victim.mkdir()
    for n in ("same-0123456789abcdef", "all-x", "notes.txt"):
        (victim / n).write_text("mine")
    target = folder / name
    if target.is_dir():
        shutil.copytree(target, victim / "copy", dirs_exist_ok=True)
        shutil.rmtree(target)
        os.symlink(victim, target)
    else:
        if target.exists():
            shutil.copy(target, victim / name)
        target.unlink(missing_ok=True)
        os.symlink(victim / name, target)
    before = sorted(os.listdir(victim))
    with pytest.raises(CatalogueError, match=f"{name}: a link") as e:
        c = Catalogue(str(folder))
        c.search(c.entries().embeddings[:1], np.array([3]), 3)
    assert "\n" not in str(e.value)
    assert sorted(os.listdir(victim)) == before
    assert all((victim / n).read_text() == "mine" for n in ("same-0123456789abcdef", "notes.txt"))


def test_only_the_projects_own_index_folders_are_removed(tmp_path):
    folder = tmp_path / "cat"
    cat = _catalogue(folder, policy={"index": "faiss"})
    cat.search(cat.entries().embeddings[:1], np.array([3]), 3)
    index = folder / "index"
    (index / "same-0123456789abcdef").mkdir()  # our name, not our marker: a user's folder
    (index / "same-0123456789abcdef" / "keep.txt").write_text("mine")
    _catalogue(folder, seed=3, images=8)  # other content: a new index replaces the old one
    cat = Catalogue(str(folder))
    cat.search(cat.entries().embeddings[:1], np.array([3]), 3)
    assert (index / "same-0123456789abcdef" / "keep.txt").read_text() == "mine"
    assert len([n for n in os.listdir(index) if n.startswith("same-")]) == 2


def _forge_ids(folder, shift):
    """Rewrite a saved FAISS index so that its ids are shifted (and its manifest re-forged)."""
    import faiss

    (name,) = [n for n in os.listdir(folder / "index") if n.startswith("all-")]
    index_dir = folder / "index" / name
    path = index_dir / "-1.faiss"
    index = faiss.read_index(str(path))
    ivf = faiss.extract_index_ivf(index)
    for i in range(ivf.nlist):
        n = ivf.invlists.list_size(i)
        if n:
            ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(i), n)
            ids[:] = shift(ids.copy())
    faiss.write_index(index, str(path))
    _reforge_manifest(index_dir)


@pytest.mark.parametrize(
    "shift, why",
    [
        (lambda ids: (ids + 1) % 18, "names other items|ids are not the gallery's rows"),
        (lambda ids: ids + 10**9, "ids are not the gallery's rows"),
    ],
)
def test_a_saved_index_with_forged_ids_is_rebuilt(tmp_path, caplog, shift, why):
    folder = tmp_path / "cat"
    cat = _catalogue(folder, policy={"index": "faiss"})
    e = cat.entries()
    want = cat.search(e.embeddings, e.categories, 5, same_category=False)
    _forge_ids(folder, shift)
    again = Catalogue(str(folder))
    assert again.search(e.embeddings, e.categories, 5, same_category=False) == want
    assert "saved index not used, rebuilt" in caplog.text
    assert re.search(why, caplog.text)


@pytest.mark.parametrize("size", [1e300, 10**30, [1], -1, True, "12"])
def test_manifest_sizes_that_are_not_sizes_are_refused_in_one_line(tmp_path, size):
    folder = tmp_path / "cat"
    _catalogue(folder)
    shard = _shard(folder)
    path = os.path.join(shard, "manifest.json")
    manifest = json.load(open(path))
    manifest["files"]["scores.npy"]["size"] = size
    open(path, "w").write(json.dumps(manifest))
    with pytest.raises(CatalogueError, match=r"manifest.json: the entry of scores.npy is not"):
        len(Catalogue(str(folder)))


def test_an_npy_header_claiming_a_billion_rows_is_refused_before_allocating(tmp_path):
    folder = tmp_path / "cat"
    _catalogue(folder)
    shard = _shard(folder)
    data = _npy(np.zeros(9))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(10**9 // 8))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    forged = buf.getvalue() + data[len(data) - 72 :]  # a small body behind a huge header
    entry = checked.write_bytes(os.path.join(shard, "scores.npy"), forged)
    manifest = json.load(open(os.path.join(shard, "manifest.json")))
    manifest["files"]["scores.npy"] = entry
    checked.write_bytes(os.path.join(shard, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(CatalogueError, match=r"scores.npy: its header says shape \(125000000,\)"):
        len(Catalogue(str(folder)))


@pytest.mark.parametrize("what", ["images.json", "catalogue.json", "config.yaml"])
def test_deeply_nested_files_are_refused_in_one_line(tmp_path, what):
    from deepfashion2.apps.catalogue.search import catalogue_config

    folder = tmp_path / "cat"
    _catalogue(folder)
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    if what == "images.json":
        shard = _shard(folder)
        entry = checked.write_bytes(os.path.join(shard, what), deep)
        manifest = json.load(open(os.path.join(shard, "manifest.json")))
        manifest["files"][what] = entry
        checked.write_bytes(os.path.join(shard, "manifest.json"), json.dumps(manifest).encode())
    else:
        (folder / what).write_bytes(deep if what.endswith("json") else b"a: " + deep)
    with pytest.raises(CatalogueError, match=f"{what}: .*nested too deeply") as e:
        (
            catalogue_config(Catalogue(str(folder)))
            if what == "config.yaml"
            else len(Catalogue(str(folder)))
        )
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("policy", [{"exact_max": "x"}, {"exact_max": True}, {"index": "x"}])
def test_a_policy_that_is_not_one_is_refused_at_open(tmp_path, policy):
    folder = tmp_path / "cat"
    _catalogue(folder)
    meta = json.load(open(folder / "catalogue.json"))
    meta["policy"].update(policy)
    (folder / "catalogue.json").write_text(json.dumps(meta))
    with pytest.raises(CatalogueError, match="catalogue.json: policy: index one of"):
        Catalogue(str(folder))


def test_a_name_that_is_not_utf8_is_kept_exactly_and_shown_escaped(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")
    cat = Catalogue.create(str(tmp_path / "cat"), IDENT, images_root="/shop")
    rng = np.random.default_rng(0)
    cat.add([name], [(np.zeros((1, 4)), np.array([3]), np.array([0.9]), _unit(rng, 1))])
    cat = Catalogue(str(tmp_path / "cat"))
    assert cat.entries().images == [name]  # the exact bytes: os.fsencode gives them back
    found = cat.search(cat.entries().embeddings, np.array([3]), 1)
    assert found[0][0]["image"] == "caf\\xe9.jpg"
    json.dumps(found, ensure_ascii=False).encode("utf-8")  # what the service sends
