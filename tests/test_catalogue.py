"""
Shop the look: a catalogue indexed from a split's shop images and searched with its consumer
photos ranks exactly as the retrieval evaluator does; indexing survives SIGKILL; other models are
refused.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import CATALOGUE_SPLIT as NAME
from detectron2.evaluation import inference_on_dataset
from test_training import CONFIG

from deepfashion2.apps.catalogue import GarmentEmbedder, index_images, search_photos
from deepfashion2.engine import Trainer
from deepfashion2.evaluation import RetrievalEvaluator
from deepfashion2.retrieval import Catalogue, CatalogueMismatchError
from deepfashion2.retrieval.shards import KIND
from deepfashion2.utils import checked

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.fixture(scope="module")
def setup(catalogue_setup):
    return catalogue_setup


@pytest.mark.slow
def test_search_ranks_exactly_as_the_retrieval_evaluator(setup):
    cfg, shop, users, tmp = setup
    # the benchmark: the evaluator's submission (queries: consumer photos, gallery: shop photos)
    model = GarmentEmbedder(cfg).model  # the checkpoint's weights, in eval mode
    evaluator = RetrievalEvaluator.from_config(cfg, NAME, str(tmp / "eval"), distributed=False)
    inference_on_dataset(model, Trainer.build_test_loader(cfg, NAME), evaluator)
    submission = json.loads((tmp / "eval" / "retrieval_submission.json").read_text())
    # the catalogue: the same model and gallery policy, batched
    cat_dir = str(tmp / "cat")
    cat = index_images(cfg, shop, cat_dir, batch_size=3, images_per_shard=2, progress=False)
    assert len(cat.entries().images) == len(os.listdir(shop))
    found = search_photos(cat_dir, users, top_k=20)["results"]
    searched = []
    for entry in found:
        image_id = int(os.path.basename(entry["photo"])[:-4])
        for g in entry["garments"]:
            searched.append(
                (image_id, g["box"], [int(m["image"][:-4]) for m in g["matches"]],
                 [m["box"] for m in g["matches"]])
            )  # fmt: skip
    expected = [
        (e["query_image_id"], e["query_bbox"], e["gallery_image_id"], e["gallery_bbox"])
        for e in submission
    ]
    assert len(expected) > 10
    # both list an image's queries best score first; batched inference rounds boxes differently
    # in the last float bits (1e-6 px), so boxes compare to 1e-3 px, rankings exactly
    assert len(searched) == len(expected)
    for got, want in zip(
        sorted(searched, key=lambda t: t[0]), sorted(expected, key=lambda t: t[0])
    ):
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], atol=1e-3)
        assert got[2] == want[2]  # the same shop images in the same order
        np.testing.assert_allclose(
            np.reshape(got[3], (-1, 4)), np.reshape(want[3], (-1, 4)), atol=1e-3
        )


KILL = """
import os, signal, sys
from deepfashion2.retrieval import catalogue as C

added = []
stock = C.Catalogue.add

def add(self, images, detections, **kw):
    if len(added) == 2:  # the third shard: killed in the middle of writing it
        import numpy as np
        real = np.save
        def save(*a, **k):
            real(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        np.save = save
    added.append(images)
    return stock(self, images, detections, **kw)

C.Catalogue.add = add
import torch
from detectron2.config import get_cfg
from deepfashion2 import add_deepfashion2_config
from deepfashion2.apps.catalogue import index_images
cfg = get_cfg(); add_deepfashion2_config(cfg); cfg.merge_from_file(sys.argv[1])
cfg.MODEL.WEIGHTS = sys.argv[2]
index_images(cfg, sys.argv[3], sys.argv[4], batch_size=2, images_per_shard=2, progress=False)
"""


@pytest.mark.slow
def test_indexing_killed_midway_resumes_with_one_entry_per_garment(setup):
    cfg, shop, _, tmp = setup
    cat_dir = tmp / "killed"
    script = tmp / "kill.py"
    script.write_text(KILL)
    run = subprocess.run(
        [sys.executable, str(script), CONFIG, cfg.MODEL.WEIGHTS, shop, str(cat_dir)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    partial = Catalogue(str(cat_dir))
    assert len(partial.indexed_images()) == 4  # two complete shards, the third lost
    assert any(n.startswith(".tmp-") for n in os.listdir(cat_dir / "shards"))
    resumed = index_images(cfg, shop, str(cat_dir), batch_size=2, images_per_shard=2,
                           progress=False)  # fmt: skip
    assert not any(n.startswith(".tmp-") for n in os.listdir(cat_dir / "shards"))
    whole = index_images(cfg, shop, str(tmp / "whole"), batch_size=2, progress=False)
    a, b = resumed.entries(), whole.entries()
    assert a.images == b.images == sorted(os.listdir(shop))  # every image exactly once
    rows = [(a.images[i], tuple(box)) for i, box in zip(a.image.tolist(), a.boxes.tolist())]
    assert len(rows) == len(set(rows)) == len(b)  # every garment exactly once
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)  # batches differ
    # a rerun on an indexed folder has nothing to do
    assert len(index_images(cfg, shop, str(cat_dir), progress=False)) == len(a)


@pytest.mark.slow
def test_another_model_is_refused(setup):
    cfg, shop, users, tmp = setup
    cat_dir = str(tmp / "refuse")
    index_images(cfg, shop, cat_dir, progress=False)
    other = tmp / "other.pth"
    state = torch.load(cfg.MODEL.WEIGHTS, weights_only=True)
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key] + 1
    torch.save(state, other)
    with pytest.raises(CatalogueMismatchError, match="weights"):
        search_photos(cat_dir, users[:1], opts=["MODEL.WEIGHTS", str(other)])
    extending = cfg.clone()
    extending.MODEL.WEIGHTS = str(other)
    with pytest.raises(CatalogueMismatchError, match="weights"):
        index_images(extending, shop, cat_dir, progress=False)
    with pytest.raises(CatalogueMismatchError, match="embedding size"):
        Catalogue(cat_dir).check_model({**Catalogue(cat_dir).identity, "embed_dim": 7})


@pytest.mark.slow
def test_search_tool_prints_json_and_draws(setup, capsys):
    import importlib.util

    cfg, shop, users, tmp = setup
    cat_dir = str(tmp / "tool")
    index_images(cfg, shop, cat_dir, progress=False)
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "search.py")
    spec = importlib.util.spec_from_file_location("search_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp / "search_out"
    args = ["--catalogue", cat_dir, "--input", *users[:2], "--top-k", "3", "--output", str(out)]
    # the benchmark's garments (a random-weight model scores nothing above 0.5)
    tool.main(args + ["--benchmark-policy", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert [r["photo"] for r in printed] == users[:2]
    for r in printed:
        for g in r["garments"]:
            assert len(g["matches"]) <= 3
            sims = [m["similarity"] for m in g["matches"]]
            assert sims == sorted(sims, reverse=True)
            assert all(m["category"] == g["category"] for m in g["matches"])  # within category
            assert all(m["category_name"] for m in g["matches"]) and g["category_name"]
    assert (out / "results.json").exists()
    drawn = [r for r in printed if r["garments"]]
    assert len([f for f in os.listdir(out) if f.endswith(".png")]) == len(drawn)
    # the default: a short summary for people, the full JSON in the file
    tool.main(args + ["--min-score", "0.0", "--max-garments", "2"])
    text = capsys.readouterr().out
    assert text.count(": ") >= 2 and "full results:" in text and "{" not in text
    assert json.loads((out / "results.json").read_text())["results"][0]["photo"] == users[0]


def test_entries_are_ordered_by_image_and_held_once(tmp_path):
    """However the work was split into shards, and if an image was indexed twice."""
    ident = {"config": "x", "weights_sha256": "w", "embed_dim": 2, "policy": {}}
    cat = Catalogue.create(str(tmp_path / "c"), ident)

    def det(n, v):
        unit = np.tile(np.array([[0.6, 0.8]], "f4"), (n, 1))
        return (np.full((n, 4), v), np.full(n, 3), np.full(n, v / 10), unit)

    cat.add(["b.jpg", "d.jpg"], [det(2, 1.0), det(0, 0.0)])
    cat.add(["a.jpg", "b.jpg"], [det(1, 2.0), det(1, 9.0)])  # b.jpg again: the first one stays
    cat.add([], [])
    e = Catalogue(str(tmp_path / "c")).entries()
    assert e.images == ["a.jpg", "b.jpg", "d.jpg"]  # d.jpg: indexed, without garments
    assert e.image.tolist() == [0, 1, 1] and e.boxes[:, 0].tolist() == [2.0, 1.0, 1.0]
    assert Catalogue(str(tmp_path / "c")).indexed_images() == {"a.jpg", "b.jpg", "d.jpg"}
    with pytest.raises(CatalogueMismatchError, match="embedding size"):
        Catalogue.create(str(tmp_path / "c"), {**ident, "embed_dim": 3})


class _Payload:
    def __reduce__(self):
        return (open, (os.environ["DF2_TEST_MARKER"], "w"))


@pytest.mark.slow
def test_a_catalogue_folder_never_runs_code(setup, tmp_path, monkeypatch, capsys):
    """A tag in its config.yaml, or weights it names as a pickle or a URL, are refused."""
    import pickle

    from conftest import one_line_error, script_module

    cfg, shop, users, tmp = setup
    cat_dir = tmp_path / "cat"
    index_images(cfg, shop, str(cat_dir), progress=False)
    config = cat_dir / "config.yaml"
    plain = config.read_text()
    marker = tmp_path / "ran"
    monkeypatch.setenv("DF2_TEST_MARKER", str(marker))
    config.write_text(plain + f"X: !!python/object/apply:os.system ['touch {marker}']\n")
    tool = script_module("tools/search.py")
    line = one_line_error(capsys, tool.main, ["--catalogue", str(cat_dir), "--input", users[0]])
    assert f"{config}: refused: not plain YAML data" in line
    assert not marker.exists()
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": _Payload(), "__author__": "x"}))
    for weights, why in [
        (str(evil), "only .pth weights"),
        ("http://127.0.0.1:9/model.pth", "from a http:// URL are refused"),
        ("detectron2://ImageNetPretrained/MSRA/R-50.pkl", "from a detectron2:// URL"),
        ("deepfashion2://Mini-CPU.pth#sha256=" + "0" * 64, "hash given beside the weights"),
    ]:
        config.write_text(plain.replace(f"WEIGHTS: {cfg.MODEL.WEIGHTS}", f"WEIGHTS: {weights}"))
        line = one_line_error(capsys, tool.main, ["--catalogue", str(cat_dir), "--input", users[0]])
        assert "MODEL.WEIGHTS" in line and why in line, weights
    assert not marker.exists()
    # the published model by its pinned name, with no zoo to fetch it from (or an unreachable
    # one): one line saying so, not a traceback
    config.write_text(plain.replace(f"WEIGHTS: {cfg.MODEL.WEIGHTS}",
                                    "WEIGHTS: deepfashion2://Mini-CPU.pth"))  # fmt: skip
    monkeypatch.setenv("DEEPFASHION2_CACHE", str(tmp_path / "zoo_cache"))
    monkeypatch.delenv("DEEPFASHION2_MODEL_ZOO_URL", raising=False)
    line = one_line_error(capsys, tool.main, ["--catalogue", str(cat_dir), "--input", users[0]])
    assert "no model-zoo location" in line
    monkeypatch.setenv("DEEPFASHION2_MODEL_ZOO_URL", "http://127.0.0.1:9/")
    line = one_line_error(capsys, tool.main, ["--catalogue", str(cat_dir), "--input", users[0]])
    assert "cannot download http://127.0.0.1:9/Mini-CPU.pth" in line
    # the user's own weights are the user's choice (and checked against the catalogue's)
    result = tool.main(
        ["--catalogue", str(cat_dir), "--input", users[0], "MODEL.WEIGHTS", cfg.MODEL.WEIGHTS]
    )
    assert result["results"][0]["photo"] == users[0]
    for k in ("0", "-1", "1000000000000", "x"):
        with pytest.raises(SystemExit):  # argparse: exit status 2 with the usage
            tool.main(["--catalogue", str(cat_dir), "--input", users[0], "--top-k", k])


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + (chunk(b"IEND", b""))
    )


@pytest.mark.slow
def test_unreadable_images_are_skipped_named_and_not_retried(setup, tmp_path, caplog):
    cfg, shop, _, tmp = setup
    images = tmp_path / "images"
    shutil.copytree(shop, images)
    good = sorted(os.listdir(images))
    jpeg = (images / good[0]).read_bytes()
    (images / "empty.jpg").write_bytes(b"")
    (images / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (images / "text.jpg").write_text("not an image")
    (images / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    os.mkfifo(images / "fifo.jpg")
    os.symlink("loop.jpg", images / "loop.jpg")  # a link to itself
    os.symlink(".", images / "again")  # a folder loop
    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.copy(images / good[1], extra / "linked.jpg")
    os.symlink(extra, images / "sub")  # a symlinked sub-folder: followed
    cat = index_images(cfg, str(images), str(tmp_path / "cat"), progress=False)
    bad = {"empty.jpg", "truncated.jpg", "text.jpg", "bomb.png", "fifo.jpg", "loop.jpg"}
    assert set(cat.skipped_images()) == bad
    assert set(cat.entries().images) == set(good) | {"sub/linked.jpg"}
    reasons = cat.skipped_images()
    assert "empty file" in reasons["empty.jpg"] and "not a plain file" in reasons["fifo.jpg"]
    assert "more than the 50,000,000 pixels accepted" in reasons["bomb.png"]
    assert "cannot decode" in reasons["truncated.jpg"]
    assert f"{len(bad)} of {len(good) + 1 + len(bad)} images could not be read" in caplog.text
    assert "already read as" in caplog.text  # the folder loop, said once per visit
    # a rerun tries nothing again; --retry-skipped does
    shards = os.listdir(tmp_path / "cat" / "shards")
    again = index_images(cfg, str(images), str(tmp_path / "cat"), progress=False)
    assert os.listdir(tmp_path / "cat" / "shards") == shards and len(again) == len(cat)
    retried = index_images(cfg, str(images), str(tmp_path / "cat"), progress=False,
                           retry_skipped=True)  # fmt: skip
    assert set(retried.skipped_images()) == bad


@pytest.mark.slow
def test_two_machines_index_one_catalogue_as_one_process_does(setup):
    """tools/index_catalogue.py on two "machines" (1 process each, loopback, Detectron2's
    launcher): each writes its own shards into the one catalogue, which equals a one-process
    indexing of the same folder."""
    from deepfashion2 import compat

    cfg, shop, _, tmp = setup
    url = f"tcp://127.0.0.1:{compat.free_port()}"
    cat_dir = str(tmp / "two_machines")
    tool = os.path.join(ROOT, "tools", "index_catalogue.py")
    machines = [
        subprocess.Popen(
            [sys.executable, tool, "--config-file", CONFIG, "--images", shop, "--output", cat_dir,
             "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", url,
             "MODEL.WEIGHTS", cfg.MODEL.WEIGHTS],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    for m in machines:
        out, _ = m.communicate(timeout=600)
        assert m.returncode == 0, out[-3000:]
    two = Catalogue(cat_dir)
    shards = [checked.read_manifest(os.path.join(cat_dir, "shards", n), KIND)
              for n in os.listdir(os.path.join(cat_dir, "shards"))]  # fmt: skip
    assert len(shards) >= 2  # each machine wrote its own
    one = index_images(cfg, shop, str(tmp / "one_process"), progress=False)
    a, b = two.entries(), one.entries()
    assert a.images == b.images == sorted(os.listdir(shop))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.categories, b.categories)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)
