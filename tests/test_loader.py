import glob
import json
import os
import shutil
import time

import numpy as np
import pytest
from conftest import SAMPLES
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from deepfashion2 import landmarks as L
from deepfashion2.data import load_deepfashion2, load_image_folder, register_deepfashion2
from deepfashion2.data.loader import load_split_store
from deepfashion2.data.parse import ITEM_ATTRIBUTES


def _items(obj):
    """(item number, item) in the file's key order (item2 may precede item1 in real files)."""
    return [(int(k[4:]), v) for k, v in obj.items() if k.startswith("item")]


def assert_dicts_match_files(dicts, anno_dir):
    """Every field of every file, as read by our loader, equals the file's own value."""
    for d in dicts:
        stem = os.path.basename(d["file_name"])[:-4]
        raw = json.load(open(os.path.join(anno_dir, stem + ".json")))
        assert d["image_id"] == int(stem)
        assert d["source"] == raw["source"] and d["pair_id"] == raw["pair_id"]
        items = _items(raw)
        assert len(d["annotations"]) == len(items)
        for a, (n, it) in zip(d["annotations"], items):
            assert a["item_id"] == n
            assert a["category_id"] == it["category_id"] - 1
            assert L.CATEGORY_NAMES[a["category_id"]] == it["category_name"]
            assert a["bbox"] == it["bounding_box"] and a["bbox_mode"] == BoxMode.XYXY_ABS
            for attr in ("style",) + ITEM_ATTRIBUTES:
                assert a[attr] == it[attr]
            assert [p.tolist() for p in a["segmentation"]] == it["segmentation"]  # exact floats
            lm = np.array(it["landmarks"], dtype=np.float64).reshape(-1, 3)
            shift = np.where(lm[:, 2:] > 0, 0.5, 0.0)  # Detectron2 convention, labelled only
            assert a["landmarks"].shape == (L.CATEGORIES[a["category_id"]].num_landmarks, 3)
            assert (a["landmarks"][:, :2] == lm[:, :2] + shift).all()
            assert (a["landmarks"][:, 2] == lm[:, 2]).all()


def test_synthetic_split_loads_every_field(synthetic_split, tmp_path):
    annos, images = os.path.join(synthetic_split, "annos"), os.path.join(synthetic_split, "image")
    dicts = load_deepfashion2(annos, images, cache_dir=str(tmp_path))
    assert len(dicts) == 24
    assert_dicts_match_files(dicts, annos)
    from PIL import Image

    for d in dicts:
        assert Image.open(d["file_name"]).size == (d["width"], d["height"])


def test_synthetic_generator_covers_the_format(synthetic_split):

    dicts = load_deepfashion2(
        os.path.join(synthetic_split, "annos"),
        os.path.join(synthetic_split, "image"),
        use_cache=False,
    )
    assert {d["source"] for d in dicts} == {"user", "shop"}
    annos = [a for d in dicts for a in d["annotations"]]
    assert {a["landmarks"][i, 2] for a in annos for i in range(len(a["landmarks"]))} == {0, 1, 2}
    # paired styles occur in both sources
    key = {
        (d["pair_id"], a["style"], d["source"])
        for d in dicts
        for a in d["annotations"]
        if a["style"] > 0
    }
    assert any((p, s, "shop") in key for p, s, src in key if src == "user")


def test_generator_is_deterministic_and_covers_all_categories(tmp_path):
    from deepfashion2.data.synthetic import generate_split

    generate_split(str(tmp_path / "a"), 150, seed=3)
    generate_split(str(tmp_path / "b"), 150, seed=3)
    for f in ("annos/000007.json", "image/000007.jpg"):
        assert open(tmp_path / "a" / f, "rb").read() == open(tmp_path / "b" / f, "rb").read()
    dicts = load_deepfashion2(str(tmp_path / "a/annos"), str(tmp_path / "a/image"), use_cache=False)
    annos = [a for d in dicts for a in d["annotations"]]
    assert {a["category_id"] for a in annos} == set(range(13))
    for attr in ITEM_ATTRIBUTES:
        assert {a[attr] for a in annos} == {1, 2, 3}, attr


def test_real_samples_are_read_exactly(tmp_path, samples):
    # The 27 real annotation files that come with their image, copied under numeric names.
    annos, images = tmp_path / "annos", tmp_path / "image"
    annos.mkdir(), images.mkdir()
    for img in glob.glob(os.path.join(SAMPLES, "image", "[0-9]*.jpg")):
        stem = os.path.basename(img)[:-4]
        src = os.path.join(SAMPLES, "annos", stem + ".json")
        if os.path.exists(src):
            shutil.copy(src, annos), os.symlink(img, images / (stem + ".jpg"))
    dicts = load_deepfashion2(str(annos), str(images), use_cache=False)
    assert len(dicts) == 27
    assert_dicts_match_files(dicts, str(annos))


def test_real_example_file_via_parse_annotation(samples):
    from deepfashion2.data import parse_annotation

    im = parse_annotation(
        os.path.join(SAMPLES, "annos", "ann_example.json"),
        os.path.join(SAMPLES, "image", "example.jpg"),
        image_id=0,
    )
    assert (im.width, im.height) == (468, 624) and im.source == 0
    # the file lists item2 (trousers) before item1 (short sleeve top): the key order is kept
    assert [(it.item_id, it.category_id) for it in im.items] == [(2, 7), (1, 0)]


def test_parallel_parse_equals_serial(synthetic_split):
    annos, images = os.path.join(synthetic_split, "annos"), os.path.join(synthetic_split, "image")
    from deepfashion2.data import loader

    old = loader._CHUNK
    loader._CHUNK = 5  # several chunks across 2 workers
    try:
        par = load_split_store(annos, images, use_cache=False, num_workers=2)
    finally:
        loader._CHUNK = old
    ser = load_split_store(annos, images, use_cache=False, num_workers=1)
    for k, v in ser.arrays().items():
        assert np.array_equal(v, par.arrays()[k]), k


def test_cache_is_used_and_invalidated(split_copy, tmp_path, monkeypatch):
    from deepfashion2.data import loader

    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    cache = str(tmp_path / "cache")
    calls = []
    real = loader.parse_split
    monkeypatch.setattr(loader, "parse_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load_deepfashion2(annos, images, cache_dir=cache)
    assert len(calls) == 1 and len(os.listdir(cache)) == 1
    assert (
        load_deepfashion2(annos, images, cache_dir=cache)[0]["file_name"] == first[0]["file_name"]
    )
    assert len(calls) == 1  # served from the cache
    # an edited annotation file invalidates it
    f = os.path.join(annos, "000003.json")
    obj = json.load(open(f))
    obj["pair_id"] = 9999
    time.sleep(0.01)
    json.dump(obj, open(f, "w"))
    again = load_deepfashion2(annos, images, cache_dir=cache)
    assert len(calls) == 2 and again[2]["pair_id"] == 9999
    # a removed annotation file too
    os.remove(os.path.join(annos, "000024.json"))
    assert len(load_deepfashion2(annos, images, cache_dir=cache)) == 23 and len(calls) == 3
    # an image replaced in place by one of another size: its own size, mtime and ctime change
    from PIL import Image

    img = os.path.join(images, "000023.jpg")
    Image.new("RGB", (377, 255)).save(img)
    d = {x["image_id"]: x for x in load_deepfashion2(annos, images, cache_dir=cache)}
    assert len(calls) == 4 and (d[23]["width"], d[23]["height"]) == (377, 255)
    load_deepfashion2(annos, images, cache_dir=cache)
    assert len(calls) == 4
    # an annotation edited to the same size, its mtime restored: the ctime still changes
    f = os.path.join(annos, "000005.json")
    st = os.stat(f)
    text = open(f).read()
    pair = json.loads(text)["pair_id"]
    changed = pair + 1 if pair % 10 != 9 else pair - 1  # same number of digits
    edited = text.replace(f'"pair_id":{pair}', f'"pair_id":{changed}', 1)
    assert len(edited) == len(text)
    time.sleep(0.01)
    open(f, "w").write(edited)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.path.getsize(f) == st.st_size
    d = {x["image_id"]: x for x in load_deepfashion2(annos, images, cache_dir=cache)}
    assert len(calls) == 5 and d[5]["pair_id"] == changed


def test_the_cache_never_stops_a_load(split_copy, tmp_path, monkeypatch, caplog):
    from deepfashion2.data import loader
    from deepfashion2.utils import checked

    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    calls = []
    real = loader.parse_split
    monkeypatch.setattr(loader, "parse_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference = load_deepfashion2(annos, images, use_cache=False)
    # a cache path that is a file: a warning, and the load goes on
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert load_deepfashion2(annos, images, cache_dir=str(blocked))[0]["file_name"] == (
        reference[0]["file_name"]
    )
    assert "Not caching" in caplog.text
    # a folder nobody may write (not even root)
    assert len(load_deepfashion2(annos, images, cache_dir="/proc/self/df2-cache")) == 24
    # a disk that fills up halfway through the write: no temporary folder is left behind
    import errno

    full = tmp_path / "full"
    real_save = np.save
    written = []

    def save(file, arr, **kw):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(file)
        return real_save(file, arr, **kw)

    monkeypatch.setattr(checked.np, "save", save)  # the checked folder writes the arrays
    assert len(load_deepfashion2(annos, images, cache_dir=str(full))) == 24
    assert os.listdir(full) == [] and "No space left" in caplog.text


def test_a_damaged_cache_is_detected_and_rebuilt(split_copy, tmp_path, monkeypatch, caplog):
    from deepfashion2.data import loader

    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    cache = tmp_path / "cache"
    calls = []
    real = loader.parse_split
    monkeypatch.setattr(loader, "parse_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    reference = load_split_store(annos, images, cache_dir=str(cache))
    (folder,) = [cache / n for n in os.listdir(cache)]

    def damage(how):
        f = folder / "coords.npy"
        if how == "missing":
            os.remove(f)
        elif how == "truncated":
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2])
        else:  # one flipped bit: same size
            data = bytearray(f.read_bytes())
            data[-3] ^= 0x10
            f.write_bytes(bytes(data))

    for n, how in enumerate(("bitflip", "truncated", "missing"), start=2):
        damage(how)
        store = load_split_store(annos, images, cache_dir=str(cache))
        assert len(calls) == n, how  # detected: parsed again ...
        assert np.array_equal(store.coords, reference.coords)  # ... never served damaged
        assert "Damaged cache" in caplog.text
        load_split_store(annos, images, cache_dir=str(cache))
        assert len(calls) == n  # ... and repaired


def test_temporary_folders_of_killed_loads_are_removed(split_copy, tmp_path):
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    cache = tmp_path / "cache"
    cache.mkdir()
    # a load killed while writing (its pid is gone), and one still running (this process)
    dead = cache / ".tmp-999999999-abc"
    dead.mkdir()
    (dead / "coords.npy").write_bytes(b"x" * 100)
    alive = cache / f".tmp-{os.getpid()}-def"
    alive.mkdir()
    load_split_store(annos, images, cache_dir=str(cache))
    assert not dead.exists() and alive.exists()


def test_the_cache_switch(split_copy, tmp_path, monkeypatch):
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    monkeypatch.setenv("DF2_CACHE", "0")
    load_split_store(annos, images, cache_dir=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_registration_and_metadata(synthetic_split):
    name = "df2_test_registration"
    register_deepfashion2(
        name, os.path.join(synthetic_split, "annos"), os.path.join(synthetic_split, "image")
    )
    try:
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 24
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == L.CATEGORY_NAMES
        assert len(meta.keypoint_names) == 294 and len(meta.keypoint_oks_sigmas) == 294
        assert len(meta.keypoint_flip_map) == sum(len(c.flip_pairs) for c in L.CATEGORIES)
        assert meta.landmark_slices[12] == (275, 19)
        assert meta.evaluator_type == "deepfashion2"
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtin_names_point_at_the_documented_folders(tmp_path, monkeypatch):
    """$DETECTRON2_DATASETS/deepfashion2/<split>/{annos,image}, with the DeepFashion2 metadata."""
    from deepfashion2.data.builtin import register_all_deepfashion2

    monkeypatch.setattr(DatasetCatalog, "register", lambda name, fn: registered.append(name))
    registered = []
    root = str(tmp_path)
    names = ["deepfashion2_train", "deepfashion2_validation", "deepfashion2_test"]
    for n in names + ["deepfashion2_mini_train", "deepfashion2_mini_validation"]:
        MetadataCatalog.remove(n)
    register_all_deepfashion2(root)
    assert registered == names + ["deepfashion2_mini_train", "deepfashion2_mini_validation"]
    for split in ("train", "validation"):
        meta = MetadataCatalog.get(f"deepfashion2_{split}")
        assert meta.anno_dir == f"{root}/deepfashion2/{split}/annos"
        assert meta.image_dir == f"{root}/deepfashion2/{split}/image"
        assert len(meta.keypoint_names) == 294 and meta.evaluator_type == "deepfashion2"
    test = MetadataCatalog.get("deepfashion2_test")
    assert test.anno_dir is None and test.image_dir == f"{root}/deepfashion2/test/image"
    # the import-time metadata back for the other tests (DatasetCatalog was never touched)
    for n in names + ["deepfashion2_mini_train", "deepfashion2_mini_validation"]:
        MetadataCatalog.remove(n)
    register_all_deepfashion2(os.getenv("DETECTRON2_DATASETS", "datasets"))


def test_image_folder_for_the_test_split(synthetic_split):
    dicts = load_image_folder(os.path.join(synthetic_split, "image"))
    assert len(dicts) == 24 and "annotations" not in dicts[0]
    assert dicts[0]["image_id"] == 1 and dicts[0]["height"] > 0


WORKERS = """
import os, sys, threading, time, multiprocessing
from deepfashion2.data import loader

def slow(*args):
    time.sleep(120)  # a long parse

loader._parse_chunk = slow
loader._CHUNK = 1

def report():
    while len(multiprocessing.active_children()) < 2:
        time.sleep(0.05)
    with open(sys.argv[3] + ".tmp", "w") as f:
        f.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
    os.rename(sys.argv[3] + ".tmp", sys.argv[3])

threading.Thread(target=report, daemon=True).start()
loader.load_split_store(sys.argv[1], sys.argv[2], use_cache=False, num_workers=2)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_parse_workers_die_with_a_killed_loader(synthetic_split, tmp_path):
    import signal
    import subprocess
    import sys

    script, pids = tmp_path / "load.py", tmp_path / "pids"
    script.write_text(WORKERS)
    annos, images = os.path.join(synthetic_split, "annos"), os.path.join(synthetic_split, "image")
    proc = subprocess.Popen([sys.executable, str(script), annos, images, str(pids)])
    try:
        deadline = time.time() + 120
        while not pids.exists() and time.time() < deadline:
            time.sleep(0.1)
        workers = [int(p) for p in pids.read_text().split()]
        assert len(workers) == 2 and all(_running(p) for p in workers)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 20
    while any(_running(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers)


def _generate(root):
    from deepfashion2.data.synthetic import ensure_mini_split

    return ensure_mini_split("validation", root=root)


@pytest.mark.slow
def test_processes_generating_the_embedded_set_at_once_agree(tmp_path):
    import multiprocessing

    root = str(tmp_path / "mini")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outs = pool.map(_generate, [root, root])
    assert outs[0] == outs[1]
    assert len(os.listdir(os.path.join(outs[0], "image"))) == 120
    assert len(os.listdir(os.path.join(outs[0], "annos"))) == 120
    assert sorted(n for n in os.listdir(root) if not n.startswith(".")) == ["validation"]
    assert len(load_deepfashion2(outs[0] + "/annos", outs[0] + "/image", use_cache=False)) == 120
