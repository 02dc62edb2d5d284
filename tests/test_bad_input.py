"""Every kind of malformed input gets an error naming file, item and field (strict), or is
skipped and counted per reason (lenient); nothing is dropped silently."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import one_line_error

from deepfashion2.data import DeepFashion2FormatError, load_deepfashion2
from deepfashion2.data.loader import load_split_store

FILE = "000005.json"


def _edit_item(fn):
    def edit(obj):
        fn(obj["item1"])
        return obj

    return edit


def _set(field, value):
    return _edit_item(lambda it: it.__setitem__(field, value))


def _del(field):
    return _edit_item(lambda it: it.pop(field))


# (case id, edit of the parsed JSON object (or raw bytes), item, field, lenient skip reason)
CASES = [
    ("missing_style", _del("style"), "item1", "style", "style: missing"),
    ("missing_landmarks", _del("landmarks"), "item1", "landmarks", "landmarks: missing"),
    (
        "category_id_type",
        _set("category_id", "3"),
        "item1",
        "category_id",
        "category_id: wrong type",
    ),
    (
        "unknown_category",
        _set("category_id", 14),
        "item1",
        "category_id",
        "category_id: out of range",
    ),
    (
        "name_mismatch",
        _set("category_name", "kilt"),
        "item1",
        "category_name",
        "category_name: mismatch",
    ),
    (
        "landmark_count",
        _edit_item(lambda it: it["landmarks"].extend([1, 1, 2])),
        "item1",
        "landmarks",
        "landmarks: wrong count for category",
    ),
    (
        "landmark_visibility",
        _edit_item(lambda it: it["landmarks"].__setitem__(2, 3)),
        "item1",
        "landmarks",
        "landmarks: bad visibility",
    ),
    (
        "box_outside",
        _edit_item(lambda it: it["bounding_box"].__setitem__(2, 10_000)),
        "item1",
        "bounding_box",
        "bounding_box: outside image",
    ),
    (
        "box_inverted",
        _edit_item(
            lambda it: it.__setitem__(
                "bounding_box",
                [
                    it["bounding_box"][2],
                    it["bounding_box"][1],
                    it["bounding_box"][0],
                    it["bounding_box"][3],
                ],
            )
        ),
        "item1",
        "bounding_box",
        "bounding_box: inverted",
    ),
    (
        "box_length",
        _set("bounding_box", [1, 2, 3]),
        "item1",
        "bounding_box",
        "bounding_box: wrong length",
    ),
    (
        "polygon_two_points",
        _set("segmentation", [[1.0, 2.0, 3.0, 4.0]]),
        "item1",
        "segmentation",
        "segmentation: fewer than 3 points",
    ),
    (
        "polygon_odd",
        _set("segmentation", [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]),
        "item1",
        "segmentation",
        "segmentation: odd coordinate count",
    ),
    (
        "polygon_type",
        _set("segmentation", [[1.0, "2", 3.0, 4.0, 5.0, 6.0]]),
        "item1",
        "segmentation",
        "segmentation: wrong type",
    ),
    (
        "nan_landmark",
        _edit_item(lambda it: it["landmarks"].__setitem__(0, math.nan)),
        "item1",
        "landmarks",
        "landmarks: NaN or infinite",
    ),
    (
        "nan_polygon",
        _edit_item(lambda it: it["segmentation"][0].__setitem__(1, math.nan)),
        "item1",
        "segmentation",
        "segmentation: NaN or infinite",
    ),
    (
        "landmark_far_outside",
        _edit_item(lambda it: it["landmarks"].__setitem__(slice(0, 3), [10_000, 5, 2])),
        "item1",
        "landmarks",
        "landmarks: outside image",
    ),
    ("scale_range", _set("scale", 4), "item1", "scale", "scale: out of range"),
    ("viewpoint_missing", _del("viewpoint"), "item1", "viewpoint", "viewpoint: missing"),
    ("item_not_object", lambda o: {**o, "item1": [1, 2]}, "item1", "item", "item: wrong type"),
]
FILE_CASES = [
    ("invalid_json", b'{"source": "user", ', "json", "json: invalid"),
    (
        "missing_source",
        lambda o: {k: v for k, v in o.items() if k != "source"},
        "source",
        "source: missing",
    ),
    ("bad_source", lambda o: {**o, "source": "street"}, "source", "source: invalid"),
    ("pair_id_type", lambda o: {**o, "pair_id": "7"}, "pair_id", "pair_id: invalid"),
    # deeper than Python's json can recurse (orjson stops at 1024 levels, json overflows)
    ("nesting_1500", b'{"source": "user", "pair_id": 1, "x": ' + b"[" * 1500 + b"]" * 1500
     + b"}", "json", "json: invalid"),
    ("non_ascii_digits", lambda o: {**o, "item\u0661": o["item1"]}, "item key",
     "item key: invalid"),
    ("huge_item_number", lambda o: {**o, "item99999999999": o["item1"]}, "item key",
     "item key: invalid"),
    ("item01_beside_item1", lambda o: {**o, "item01": o["item1"]}, "item key",
     "item key: duplicate"),
    # a file of 10^6 items ran for minutes: refused at the bound, before any item is parsed
    ("items_over_the_bound", lambda o: {**o, **{f"item{i}": 0 for i in range(2, 1100)}}, "items",
     "items: too many"),
    ("file_over_the_bound", b'{"source": "user", "pair_id": 1, "pad": "' + b"x" * (17 << 20)
     + b'"}', "file", "file: too large"),
]  # fmt: skip


def _damage(split, edit):
    path = os.path.join(split, "annos", FILE)
    if isinstance(edit, bytes):
        open(path, "wb").write(edit)
    else:
        json.dump(edit(json.load(open(path))), open(path, "w"))
    return path


def _load(split, **kw):
    return load_deepfashion2(
        os.path.join(split, "annos"),
        os.path.join(split, "image"),
        use_cache=False,
        num_workers=1,
        **kw,
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_item_errors(split_copy, case):
    _, edit, item, field, reason = case
    n_items = sum(len(d["annotations"]) for d in _load(split_copy))
    path = _damage(split_copy, edit)
    with pytest.raises(DeepFashion2FormatError) as e:
        _load(split_copy)
    assert (e.value.file, e.value.item, e.value.field) == (path, item, field)
    assert str(e.value).startswith(f"{path}: {item}: {field}: ")
    # lenient: only that item goes, and it is counted under its reason
    from deepfashion2.data.loader import parse_split

    names = sorted(os.listdir(os.path.join(split_copy, "annos")))
    store, skips = parse_split(
        os.path.join(split_copy, "annos"),
        os.path.join(split_copy, "image"),
        names,
        lenient=True,
        num_workers=1,
    )
    assert skips == {reason: 1}
    assert store.num_items == n_items - 1 and store.num_images == 24


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_file_errors(split_copy, case):
    _, edit, field, reason = case
    path = _damage(split_copy, edit)
    with pytest.raises(DeepFashion2FormatError) as e:
        _load(split_copy)
    assert e.value.file == path and e.value.field == field
    assert e.value.item is None or e.value.item.startswith("item")
    assert len(_load(split_copy, lenient=True)) == 23


@pytest.mark.parametrize("problem", ["missing", "unreadable"])
def test_image_errors(split_copy, problem, caplog):
    img = os.path.join(split_copy, "image", FILE.replace(".json", ".jpg"))
    if problem == "missing":
        os.remove(img)
    else:
        open(img, "wb").write(b"not an image at all")
    with pytest.raises(DeepFashion2FormatError, match=f"{FILE}: image: {problem}"):
        _load(split_copy)
    with caplog.at_level("WARNING"):
        assert len(_load(split_copy, lenient=True)) == 23
    assert f"image: {problem}: 1" in caplog.text  # the lenient summary


def test_errors_cross_process_boundaries(split_copy):
    """A worker's error reaches the caller intact (file, item, field)."""
    from deepfashion2.data import loader

    path = _damage(split_copy, _set("scale", 9))
    old, loader._CHUNK = loader._CHUNK, 4
    try:
        with pytest.raises(DeepFashion2FormatError) as e:
            load_split_store(
                os.path.join(split_copy, "annos"),
                os.path.join(split_copy, "image"),
                use_cache=False,
                num_workers=2,
            )
    finally:
        loader._CHUNK = old
    assert (e.value.file, e.value.item, e.value.field) == (path, "item1", "scale")


def _prepare(capsys, *argv: str) -> tuple[int, str, str]:
    """datasets/prepare_deepfashion2.py in this process: (exit status, stdout, stderr)."""
    from conftest import script_module

    mod = script_module("datasets/prepare_deepfashion2.py")
    capsys.readouterr()
    code = mod.main(list(argv))  # what `sys.exit(main())` exits with
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_script_exit_status(split_copy, tmp_path, capsys, caplog):
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    args = ["--anno-dir", annos, "--image-dir", images, "--cache-dir", str(tmp_path)]
    code, _, err = _prepare(capsys, *args)
    assert code == 0, err
    path = _damage(split_copy, _set("occlusion", 0))
    code, _, err = _prepare(capsys, *args)
    assert code == 2
    assert f"{path}: item1: occlusion: 0 is outside 1..3" in err and "--lenient" in err
    assert "Traceback" not in err
    code, _, err = _prepare(capsys, *args, "--lenient")
    assert code == 0 and "occlusion: out of range: 1" in caplog.text  # the script's log


def test_messages_show_numbers_as_the_file_writes_them(split_copy):
    _damage(split_copy, _edit_item(lambda it: it["landmarks"].__setitem__(2, 5)))
    with pytest.raises(
        DeepFashion2FormatError, match=r"visibility of landmark 1 is 5 \(0, 1 or 2\)"
    ):
        _load(split_copy)
    _damage(
        split_copy, _edit_item(lambda it: it["landmarks"].__setitem__(slice(0, 3), [-50.5, 3, 1]))
    )
    with pytest.raises(DeepFashion2FormatError, match=r"landmark 1 at \(-50.5, 3\) is outside the"):
        _load(split_copy)


def test_prepare_refuses_a_folder_without_annotations_and_reports_skips(
    split_copy, tmp_path, capsys
):
    root = os.path.dirname(os.path.join(split_copy, "annos"))
    for anno_dir in (root, str(tmp_path)):  # the split root, an empty folder
        code, out, err = _prepare(capsys, "--anno-dir", anno_dir, "--image-dir", root + "/image")
        assert code == 2 and "holds no annotation files" in err
        assert "OK" not in out and "Traceback" not in err
    _damage(split_copy, _set("occlusion", 0))
    code, out, _ = _prepare(
        capsys, "--anno-dir", root + "/annos", "--image-dir", root + "/image", "--lenient",
        "--no-cache",
    )  # fmt: skip
    assert code == 0 and "skipped 1 (occlusion: out of range: 1)" in out
    assert "OK" not in out


def test_a_truncated_image_is_named_when_training(split_copy):
    """The header is intact (registration reads only headers); decoding fails at first use."""
    from detectron2.config import get_cfg

    from deepfashion2 import add_deepfashion2_config
    from deepfashion2.data import DeepFashion2Mapper

    img = os.path.join(split_copy, "image", FILE.replace(".json", ".jpg"))
    data = open(img, "rb").read()
    open(img, "wb").write(data[: len(data) // 3])
    (d,) = [x for x in _load(split_copy) if x["file_name"] == img]  # registers fine
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(
        os.path.join(
            os.path.dirname(__file__),
            "..",
            "configs",
            "quick_schedules",
            "Mini-CPU_instant_test.yaml",
        )
    )
    with pytest.raises(DeepFashion2FormatError, match=f"{img}: image: cannot decode"):
        DeepFashion2Mapper(cfg, is_train=True)(d)


def _evaluate(*argv):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "tools", "evaluate.py")
    spec = importlib.util.spec_from_file_location("evaluate_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main(list(argv))


@pytest.mark.parametrize(
    "content, message",
    [
        (b'[{"image_id": 5, "category_id": 1, "bbox": [1, 2', "invalid JSON"),
        (b"", "empty file"),
        (b'[{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": NaN}]', "NaN and In"),
        (b"[]", "holds no results"),
        (b'[{"image_id": 1e20, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]',
         "entry 0, field 'image_id': expected an integer"),
        (b'[{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3], "score": 1}]',
         "entry 0, field 'bbox'"),
        (b'[{"image_id": 5, "category_id": 1, "bbox": [true, 2, 3, 4], "score": 1}]',
         "entry 0, field 'bbox': true/false where a number is expected"),
        (b'[{"image_id": 5, "category_id": 1, "segmentation": [[' + b"1, " * 30_000 + b'1]],'
         b' "score": 1}]', "entry 0, field 'segmentation': polygons of more than 20000 numbers"),
    ],
)  # fmt: skip
def test_evaluate_tool_names_the_bad_file_in_one_line(
    split_copy, tmp_path, capsys, content, message
):
    good = tmp_path / "good.json"
    good.write_text('[{"image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 1}]')
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    argv = ["--anno-dir", annos, "--image-dir", images, "--results", str(good), str(bad)]
    text = one_line_error(capsys, _evaluate, *argv)
    assert text.startswith(f"error: {bad}") and message in text


@pytest.mark.slow  # a whole process (imports torch and Detectron2); the in-process check is above
def test_evaluate_command_exits_2_with_one_line(split_copy, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[]")
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    script = os.path.join(os.path.dirname(__file__), "..", "tools", "evaluate.py")
    run = subprocess.run(
        [sys.executable, script, "--anno-dir", annos, "--image-dir", images, "--results",
         str(bad)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {bad}")


def test_special_files_are_refused_by_name_not_waited_on(split_copy, caplog):
    """A FIFO where an image or an annotation file should be would block the reader forever."""
    img = os.path.join(split_copy, "image", FILE.replace(".json", ".jpg"))
    original = open(img, "rb").read()
    os.remove(img)
    os.mkfifo(img)
    with pytest.raises(DeepFashion2FormatError, match=f"{FILE}: image: {img} is not a plain file"):
        _load(split_copy)
    with caplog.at_level("WARNING"):
        assert len(_load(split_copy, lenient=True)) == 23
    assert "image: not a plain file: 1" in caplog.text
    os.remove(img)
    open(img, "wb").write(original)
    anno = os.path.join(split_copy, "annos", "000999.json")
    os.mkfifo(anno)
    with pytest.raises(DeepFashion2FormatError, match="000999.json: file: .* is not a plain file"):
        _load(split_copy, lenient=False)


@pytest.mark.parametrize(
    "name, message",
    [
        ("0000005.json", "file name: image id 5 again (already 0000005.json)"),  # sorted first
        ("99999999999.json", "file name: must be a number of ASCII digits up to 2147483647"),
    ],
)
def test_file_names_that_would_collide_or_overflow_are_refused(split_copy, name, message):
    shutil.copy(os.path.join(split_copy, "annos", FILE), os.path.join(split_copy, "annos", name))
    shutil.copy(
        os.path.join(split_copy, "image", FILE.replace(".json", ".jpg")),
        os.path.join(split_copy, "image", name.replace(".json", ".jpg")),
    )
    with pytest.raises(DeepFashion2FormatError, match=re.escape(message)) as e:
        _load(split_copy)
    assert e.value.file.endswith(("/" + name, "/" + FILE))
    assert len(_load(split_copy, lenient=True)) == 24  # the extra file only is skipped


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [4, 4], "counts": "\u00ff!!"}, "not a COCO-compressed string"),
        ({"size": [4, 4], "counts": [3, 2]}, "the runs cover 5 pixels, the size 4 x 4 = 16"),
        ({"size": [4, 4], "counts": [20, -4]}, "counts must be non-negative integers"),
        ({"size": [True, 4], "counts": [4]}, "is not two integers"),
        ({"size": [10**9, 10**9], "counts": [1]}, "outside 0..100000"),
    ],
)
def test_malformed_rle_is_named_not_a_traceback(
    split_copy, tmp_path, capsys, segmentation, message
):
    bad = tmp_path / "segm.json"
    entry = {"image_id": 5, "category_id": 1, "segmentation": segmentation, "score": 1}
    bad.write_text(json.dumps([entry]))
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    text = one_line_error(capsys, _evaluate, "--anno-dir", annos, "--image-dir", images,
                          "--results", str(bad))  # fmt: skip
    assert text.startswith(f"error: {bad}") and "malformed RLE" in text and message in text


def test_prepare_script_honours_the_cache_switch(split_copy, tmp_path, capsys, monkeypatch):
    """DF2_CACHE=0 turns the cache off at this entry point too (it was ignored here)."""
    annos, images = os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    cache = tmp_path / "cache"
    monkeypatch.setenv("DF2_CACHE", "0")
    code, _, err = _prepare(capsys, "--anno-dir", annos, "--image-dir", images,
                            "--cache-dir", str(cache))  # fmt: skip
    assert code == 0, err
    assert not cache.exists() or not os.listdir(cache)
    monkeypatch.setenv("DF2_CACHE", "1")
    _prepare(capsys, "--anno-dir", annos, "--image-dir", images, "--cache-dir", str(cache))
    assert os.listdir(cache)
