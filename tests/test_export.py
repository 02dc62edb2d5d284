"""
The model outside the lab (deepfashion2.export, deepfashion2_runtime): the instant-test model
exported to TorchScript and ONNX gives, through the runtime's numpy post-processing, what the
eager Detectron2 model gives on synthetic and real photos, and the ONNX runtime runs in a process
where torch and Detectron2 cannot be imported.
"""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, require_samples
from PIL import Image

from deepfashion2 import landmarks as L

INSTANT = os.path.join(
    ROOT, "configs", "quick_schedules", "EfficientNet-Lite0-CPU_instant_test.yaml"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_split):
    from detectron2.modeling import build_model

    from deepfashion2.config import load_config
    from deepfashion2.export import export

    torch.manual_seed(0)
    cfg = load_config(INSTANT, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    model = build_model(cfg).eval()
    # a score threshold inside the random-weight model's scores: each image keeps another number
    # of detections than the image the export was traced on (a trace that froze one fails)
    scores = []
    for photo in _photos(synthetic_split):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        with torch.no_grad():
            scores += model([{"image": chw}])[0]["instances"].scores.tolist()
    threshold = float(np.quantile(scores, 0.4))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    model.roi_heads.box_predictor.test_score_thresh = threshold
    out = tmp_path_factory.mktemp("export")
    files = {ext: export(model, cfg, str(out / f"model{ext}")) for ext in (".ts", ".onnx")}
    return cfg, model, files


def _photos(synthetic_split) -> list[str]:
    photos = sorted(glob.glob(os.path.join(synthetic_split, "image", "*.jpg")))[:3]
    return photos + sorted(glob.glob(os.path.join(require_samples(), "image", "[0-9]*.jpg")))[:2]


def _shop_and_users(synthetic_split, tmp_path) -> tuple:
    """The first 12 images of the split: its shop photos copied into a folder, and the paths of
    its consumer photos."""
    import json
    import shutil

    shop, users = tmp_path / "shop", []
    shop.mkdir()
    for anno in sorted(glob.glob(os.path.join(synthetic_split, "annos", "*.json")))[:12]:
        image = anno.replace("annos", "image").replace(".json", ".jpg")
        if json.load(open(anno))["source"] == "shop":
            shutil.copy(image, shop)
        else:
            users.append(image)
    return shop, users


def _eager(model, chw: np.ndarray, h: int, w: int) -> dict:
    with torch.no_grad():
        inst = model([{"image": torch.from_numpy(chw), "height": h, "width": w}])[0]["instances"]
    return {
        "boxes": inst.pred_boxes.tensor.numpy(),
        "scores": inst.scores.numpy(),
        "categories": inst.pred_classes.numpy() + 1,
        "masks": inst.pred_masks.numpy(),
        "landmarks": inst.pred_keypoints.numpy(),
        "embeddings": inst.pred_embeddings.numpy(),
    }


@pytest.mark.parametrize("ext", [".ts", ".onnx"])
def test_the_exported_model_answers_as_the_eager_one(exported, synthetic_split, ext):
    from deepfashion2_runtime import ExportedModel

    cfg, model, files = exported
    runtime = ExportedModel(files[ext])
    counts = set()
    for photo in _photos(synthetic_split):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        chw = runtime.preprocess(rgb)
        want, got = _eager(model, chw, *rgb.shape[:2]), runtime(rgb)
        assert len(got["boxes"]) == len(want["boxes"]) > 0, photo
        assert (got["categories"] == want["categories"]).all()
        assert np.abs(got["boxes"] - want["boxes"]).max() <= 0.5
        assert np.abs(got["scores"] - want["scores"]).max() <= 1e-3
        inter = (got["masks"] & want["masks"]).sum((1, 2))
        union = (got["masks"] | want["masks"]).sum((1, 2))
        assert (inter[union > 0] / union[union > 0]).min() >= 0.99, photo
        confident = want["landmarks"][:, :, 2] > 0.05
        diff = np.abs(got["landmarks"][..., :2] - want["landmarks"][..., :2]).max(-1)
        assert (diff[confident] <= 1.0).all(), (photo, diff[confident].max())
        assert ((want["landmarks"] == 0) == (got["landmarks"] == 0)).all()  # same slots empty
        cos = (got["embeddings"] * want["embeddings"]).sum(1)
        assert cos.min() >= 0.999
        counts.add(len(got["boxes"]))
    assert len(counts) > 1  # other numbers of detections than the traced example's


def test_the_runtime_resizes_as_the_test_mapper_does(exported, synthetic_split):
    from deepfashion2_runtime import ExportedModel

    from deepfashion2.data import DeepFashion2Mapper

    cfg, _, files = exported
    runtime = ExportedModel(files[".onnx"])
    for photo in _photos(synthetic_split):
        mapped = DeepFashion2Mapper(cfg, is_train=False)({"file_name": photo, "image_id": 0})
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        assert np.array_equal(runtime.preprocess(rgb), mapped["image"].numpy().astype(np.float32))


BLOCKED = """
import sys
for name in ("torch", "detectron2", "deepfashion2"):
    sys.modules[name] = None  # importing them now fails
import numpy as np
from PIL import Image
from deepfashion2_runtime import ExportedModel
model = ExportedModel(sys.argv[1])
found = model(np.asarray(Image.open(sys.argv[2]).convert("RGB")))
print(len(found["boxes"]), found["landmarks"].shape[1], found["masks"].dtype)
"""


def test_the_onnx_runtime_needs_neither_torch_nor_detectron2(exported, synthetic_split):
    _, _, files = exported
    photo = _photos(synthetic_split)[0]
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "projects")}
    run = subprocess.run([sys.executable, "-c", BLOCKED, files[".onnx"], photo], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    count, slots, dtype = run.stdout.split()
    assert int(count) > 0 and slots == "294" and dtype == "bool"


def test_predict_with_an_exported_model_writes_what_the_eager_one_does(
    exported, synthetic_split, tmp_path, capsys
):
    """tools/predict.py --model (the exported file) and --config-file + weights: the same
    predictions in --json (boxes, categories, landmarks of the category, RLE masks)."""
    import json

    from conftest import script_module

    cfg, model, files = exported
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    photos = _photos(synthetic_split)[:2]
    tool = script_module("tools/predict.py")
    threshold = str(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)  # what the export keeps
    common = ["--input", *photos, "--confidence-threshold", threshold]
    tool.main([*common, "--model", files[".onnx"], "--output", str(tmp_path / "a"),
               "--json", str(tmp_path / "a.json")])  # fmt: skip
    tool.main([*common, "--config-file", INSTANT, "--output", str(tmp_path / "b"), "--json",
               str(tmp_path / "b.json"), "--opts", "MODEL.WEIGHTS", str(weights)])  # fmt: skip
    assert "predictions: " in capsys.readouterr().out
    a, b = json.load(open(tmp_path / "a.json")), json.load(open(tmp_path / "b.json"))
    assert [e["image"] for e in a] == photos == [e["image"] for e in b]
    for ea, eb in zip(a, b):
        assert len(ea["instances"]) == len(eb["instances"]) > 0
        for x, y in zip(ea["instances"], eb["instances"]):
            assert x["category"] == y["category"] and set(x) == set(y)
            assert np.abs(np.array(x["box"]) - y["box"]).max() <= 0.5
            k = len(x["landmarks"])
            assert k == L.CATEGORY_BY_ID[x["category"]].num_landmarks
            assert x["mask"]["size"] == y["mask"]["size"]
    assert len(os.listdir(tmp_path / "a")) == 2


def test_a_catalogue_indexed_and_searched_with_the_exported_model(
    exported, synthetic_split, tmp_path, capsys
):
    """index_images / search_photos with the ONNX file give the eager model's catalogue and
    answers; a catalogue of one form of the model is refused to the other, in one line."""

    from conftest import one_line_error, script_module

    from deepfashion2.apps.catalogue import index_images, search_photos

    cfg, model, files = exported
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = str(weights)
    shop, users = _shop_and_users(synthetic_split, tmp_path)
    eager = index_images(cfg, str(shop), str(tmp_path / "eager"), progress=False)
    onnx = index_images(None, str(shop), str(tmp_path / "onnx"), progress=False,
                        model=files[".onnx"])  # fmt: skip
    a, b = eager.entries(), onnx.entries()
    assert a.images == b.images and (a.categories == b.categories).all() and len(a) > 0
    assert np.abs(a.boxes - b.boxes).max() <= 0.5
    assert (a.embeddings * b.embeddings).sum(1).min() >= 0.999
    policy = {"min_score": 0.0, "max_garments": 3, "top_k": 5}
    want = search_photos(str(tmp_path / "eager"), users[:2], **policy)["results"]
    got = search_photos(str(tmp_path / "onnx"), users[:2], model=files[".onnx"], **policy)
    for w, g in zip(want, got["results"]):
        assert [[m["item"] for m in x["matches"]] for x in w["garments"]] == [
            [m["item"] for m in x["matches"]] for x in g["garments"]
        ]
    tool = script_module("tools/search.py")
    line = one_line_error(capsys, tool.main, ["--catalogue", str(tmp_path / "onnx"), "--input",
                                              users[0]])  # fmt: skip
    assert "indexed with an exported model" in line and "--model FILE" in line
    line = one_line_error(capsys, tool.main, ["--catalogue", str(tmp_path / "eager"), "--input",
                                              users[0], "--model", files[".onnx"]])  # fmt: skip
    assert "was built with weights" in line


@pytest.mark.usefixtures("tiny_split")
def test_the_four_benchmarks_from_the_exported_model_equal_the_eager_ones(exported, tmp_path):
    """Trainer.test scores the ONNX model's outputs (ExportedAsModel) as the eager model's: box,
    mask and landmark AP within 0.3, retrieval top-k within one query."""
    from conftest import TINY
    from deepfashion2_runtime import ExportedModel

    from deepfashion2.engine import Trainer
    from deepfashion2.evaluation import RetrievalGroundTruth
    from deepfashion2.evaluation.groundtruth import split_ground_truth
    from deepfashion2.export import ExportedAsModel

    cfg, model, files = exported
    cfg = cfg.clone()
    cfg.DATASETS.TEST = (TINY,)
    cfg.DEEPFASHION2.RETRIEVAL.GT_BOXES = False  # the exported graph detects; no given boxes
    cfg.OUTPUT_DIR = str(tmp_path / "eager")
    want = Trainer.test(cfg, model)
    cfg.OUTPUT_DIR = str(tmp_path / "onnx")
    got = Trainer.test(cfg, ExportedAsModel(ExportedModel(files[".onnx"])))
    for task in ("bbox", "segm", "keypoints", "keypoints_vis"):
        assert abs(got[task]["AP"] - want[task]["AP"]) <= 0.3, task
    rgt = RetrievalGroundTruth.from_groundtruth(split_ground_truth(TINY, cfg))
    one_query = 100 / rgt.num_queries
    for k in ("top1", "top5", "top10", "top20"):
        assert abs(got["retrieval"][k] - want["retrieval"][k]) <= one_query + 1e-9, k


def test_int8_quantisation_runs_in_the_runtime_and_says_what_stays_float(
    exported, synthetic_split, tmp_path
):
    from deepfashion2_runtime import ExportedModel

    from deepfashion2.export import quantize_int8

    _, _, files = exported
    runtime = ExportedModel(files[".onnx"])
    photos = _photos(synthetic_split)
    rgbs = [np.asarray(Image.open(p).convert("RGB")) for p in photos]
    int8 = str(tmp_path / "model_int8.onnx")
    calibration = [runtime.preprocess(x) for x in rgbs[:3]]
    whole = str(tmp_path / "whole_int8.onnx")
    quantize_int8(files[".onnx"], whole, calibration, keep_float=())
    assert os.path.getsize(whole) < 0.5 * os.path.getsize(files[".onnx"])  # int8 weights
    floats = quantize_int8(files[".onnx"], int8, calibration)  # the default: backbone float
    assert "RoiAlign" in floats and "NonMaxSuppression" in floats and "Conv" not in floats
    kept = floats["kept float"]
    assert kept["/backbone/bottom_up/"] > 10 and kept["/roi_heads/box_predictor/"] == 2
    assert os.path.getsize(whole) < os.path.getsize(int8) < os.path.getsize(files[".onnx"])
    quantized = ExportedModel(int8)
    assert quantized.meta == runtime.meta  # what the runtime needs came along
    found = quantized(rgbs[0])
    assert set(found) == {"boxes", "scores", "categories", "masks", "landmarks", "embeddings"}
    assert np.isfinite(found["embeddings"]).all() and found["landmarks"].shape[1:] == (294, 3)


def test_the_service_serves_the_exported_model_with_parallel_sessions(
    exported, synthetic_split, tmp_path
):
    """tools/serve.py's app on the ONNX file: the page, and concurrent searches on two ONNX
    Runtime sessions answered as the command line answers; --parallel with PyTorch: one line."""
    import http.client
    import json
    import threading
    import time

    import uvicorn
    from _common import multipart

    from deepfashion2 import compat
    from deepfashion2.apps.catalogue import index_images, search_photos
    from deepfashion2.apps.serve import create_app
    from deepfashion2.apps.serve.app import inference_slots
    from deepfashion2.errors import DeepFashion2Error

    _, _, files = exported
    shop, users = _shop_and_users(synthetic_split, tmp_path)
    cat = str(tmp_path / "onnx")
    index_images(None, str(shop), cat, progress=False, model=files[".onnx"])
    policy = {"min_score": 0.0, "max_garments": 3, "top_k": 5}
    want = search_photos(cat, users[:4], model=files[".onnx"], **policy)["results"]
    app = create_app(cat, model=files[".onnx"], parallel=2)
    assert app.state.service.parallel == 2
    port = compat.free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    answers: dict = {}

    def post(i):
        body, headers = multipart("image", open(users[i], "rb").read())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/search?min_score=0&max_garments=3&top_k=5", body, headers)
        answers[i] = json.loads(conn.getresponse().read())

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"Shop the look" in page.read()
        clients = [threading.Thread(target=post, args=(i % 4,)) for i in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
    for i, w in enumerate(want):
        assert [[m["item"] for m in g["matches"]] for g in answers[i]["garments"]] == [
            [m["item"] for m in g["matches"]] for g in w["garments"]
        ]
    with pytest.raises(DeepFashion2Error, match="--parallel needs an exported ONNX model"):
        inference_slots(None, 2)
    assert inference_slots(files[".onnx"], None) == (os.cpu_count(), 1)
