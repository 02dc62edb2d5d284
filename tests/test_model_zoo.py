"""Model-zoo sharing: export a checkpoint, serve it over HTTP on 127.0.0.1, load it by name."""

import functools
import http.server
import importlib.util
import os
import shutil
import threading

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from deepfashion2 import model_zoo
from deepfashion2.model_zoo import ChecksumError

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A release folder served on 127.0.0.1; the model-zoo base URL points at it."""
    folder = tmp_path / "release"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DEEPFASHION2_MODEL_ZOO_URL", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("DEEPFASHION2_CACHE", str(tmp_path / "cache"))
    yield folder
    server.shutdown()


def _model():
    cfg = model_zoo.get_config("DeepFashion2/Mini-CPU")
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def test_export_serve_and_load_by_name(served, tmp_path, monkeypatch):
    torch.manual_seed(0)
    trained = _model()
    ckpt = tmp_path / "model_final.pth"
    torch.save({"model": trained.state_dict(), "iteration": 9, "optimizer": {"x": 1}}, ckpt)
    row = _tool("export_model").main(
        ["--config-file", model_zoo.get_config_file("Mini-CPU"), "--weights", str(ckpt),
         "--name", "Mini-CPU", "--output", str(served)]
    )  # fmt: skip
    exported = torch.load(served / "Mini-CPU.pth", weights_only=True)
    assert set(exported) == {"model", "__author__"}  # no optimizer, no iteration
    digest = (served / "Mini-CPU.pth.sha256").read_text().split()[0]
    assert digest in row and "deepfashion2://Mini-CPU.pth" in row
    assert (served / "Mini-CPU.yaml").exists()

    torch.manual_seed(1)
    fresh = _model()
    DetectionCheckpointer(fresh).load("deepfashion2://Mini-CPU.pth")
    for k, v in trained.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k

    # by name, as a published checkpoint (the sha256 then comes from the model-zoo table)
    monkeypatch.setitem(
        model_zoo.CHECKPOINTS, "DeepFashion2/Mini-CPU", {"file": "Mini-CPU.pth", "sha256": digest}
    )
    assert model_zoo.get_checkpoint_url("Mini-CPU") == "deepfashion2://Mini-CPU.pth"
    by_name = model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")
    key = next(iter(trained.state_dict()))
    assert torch.equal(by_name.state_dict()[key], trained.state_dict()[key])


def test_corrupted_download_is_refused(served, tmp_path):
    torch.save({"model": {"w": torch.ones(3)}}, served / "m.pth")
    good = model_zoo.sha256_of(str(served / "m.pth"))
    (served / "m.pth.sha256").write_text(good + "  m.pth\n")
    with open(served / "m.pth", "r+b") as f:  # flip a byte after publishing
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ChecksumError, match="refusing to use it"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load("deepfashion2://m.pth")
    cached = [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs]
    assert cached == []  # nothing half-verified left behind
    shutil.copy(served / "m.pth", served / "n.pth")  # no .sha256 published at all
    with pytest.raises(ChecksumError, match="no known sha256"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load("deepfashion2://n.pth")


def test_unknown_names():
    with pytest.raises(KeyError, match="not in the DeepFashion2 model zoo"):
        model_zoo.get_config_file("DeepFashion2/nope")
    with pytest.raises(KeyError, match="no published checkpoint"):
        model_zoo.get_checkpoint_url("DeepFashion2/mask_rcnn_landmarks_R_50_FPN_3x")
