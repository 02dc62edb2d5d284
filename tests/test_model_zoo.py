"""Model-zoo sharing: export a checkpoint, serve it over HTTP on 127.0.0.1, load it by name."""

import functools
import http.server
import importlib.util
import os
import threading
import time

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from deepfashion2 import model_zoo
from deepfashion2.model_zoo import ChecksumError, ModelZooError

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
    row = _tool("release_model").main(
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
    # the user gives the hash they trust in the path
    DetectionCheckpointer(fresh).load(f"deepfashion2://Mini-CPU.pth#sha256={digest}")
    for k, v in trained.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k

    # by name, as a published checkpoint: the sha256 is pinned in the model-zoo table
    monkeypatch.setitem(
        model_zoo.CHECKPOINTS, "DeepFashion2/Mini-CPU", {"file": "Mini-CPU.pth", "sha256": digest}
    )
    assert model_zoo.get_checkpoint_url("Mini-CPU") == "deepfashion2://Mini-CPU.pth"
    by_name = model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")
    key = next(iter(trained.state_dict()))
    assert torch.equal(by_name.state_dict()[key], trained.state_dict()[key])

    # offline: the verified file in the cache is used without the server
    monkeypatch.setenv("DEEPFASHION2_MODEL_ZOO_URL", "http://127.0.0.1:9/")  # nothing listens
    again = model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")
    assert torch.equal(again.state_dict()[key], trained.state_dict()[key])
    # ... but a cached file changed since is not: checked again, fetched again (and here the
    # server is gone, so it fails instead of returning the tampered file)
    (cached,) = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "cache") for f in fs]
    with open(cached, "r+b") as f:
        f.seek(100)
        f.write(b"tampered")
    with pytest.raises(ModelZooError, match="cannot download http://127.0.0.1:9/Mini-CPU.pth"):
        model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")


def _publish(folder, name, data):
    torch.save(data, folder / name)
    digest = model_zoo.sha256_of(str(folder / name))
    (folder / (name + ".sha256")).write_text(digest + "  " + name + "\n")
    return digest


def test_corrupted_download_is_refused(served, tmp_path):
    good = _publish(served, "m.pth", {"model": {"w": torch.ones(3)}})
    with open(served / "m.pth", "r+b") as f:  # flip a byte after publishing
        f.seek(10)
        b = f.read(1)
        f.seek(10)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ChecksumError, match="refusing to use it"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load(f"deepfashion2://m.pth#sha256={good}")
    cached = [f for _, _, fs in os.walk(tmp_path / "cache") for f in fs]
    assert cached == []  # nothing half-verified left behind


def test_a_hash_from_the_server_is_never_trusted(served, tmp_path, monkeypatch):
    # the file and its matching .sha256 both come from the server: that proves nothing
    _publish(served, "m.pth", {"model": {"w": torch.ones(3)}})
    with pytest.raises(ChecksumError, match="no trusted sha256"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load("deepfashion2://m.pth")
    # a hash the user lists in a trusted file is
    listing = tmp_path / "trusted.txt"
    listing.write_text((served / "m.pth.sha256").read_text())
    monkeypatch.setenv("DEEPFASHION2_TRUSTED_SHA256", str(listing))
    model = torch.nn.Linear(3, 1)
    DetectionCheckpointer(model).load("deepfashion2://m.pth")


class _Evil:
    """Unpickling this runs code: it creates the file named by the environment variable."""

    def __reduce__(self):
        return (open, (os.environ["DF2_TEST_MARKER"], "w"))


def test_pickle_formats_are_refused_and_run_nothing(served, tmp_path, monkeypatch):
    import pickle

    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("DF2_TEST_MARKER", str(marker))
    (served / "evil.pkl").write_bytes(pickle.dumps({"model": _Evil(), "__author__": "x"}))
    digest = model_zoo.sha256_of(str(served / "evil.pkl"))
    (served / "evil.pkl.sha256").write_text(digest + "  evil.pkl\n")
    for path in ("deepfashion2://evil.pkl", f"deepfashion2://evil.pkl#sha256={digest}"):
        with pytest.raises(ValueError, match="refused"):
            DetectionCheckpointer(torch.nn.Linear(3, 1)).load(path)
    assert not marker.exists()


def test_nothing_a_path_says_leaves_the_cache(served, tmp_path):
    outside = tmp_path / "outside"
    for path in (
        "deepfashion2://m.pth#sha256=" + str(outside).ljust(64, "x")[:64],
        "deepfashion2://../m.pth#sha256=" + "0" * 64,
        "deepfashion2:///etc/passwd",
        "deepfashion2://m.pth#sha256=" + "0" * 64 + "&x=1",
        "deepfashion2://m.pth?sha256=" + "0" * 64,  # the query form: not ours
    ):
        # Detectron2 main rewrites the path first (urlparse: "deepfashion2:/etc/passwd", no
        # query): then fvcore finds no such file, or this handler finds no trusted hash
        with pytest.raises((ValueError, AssertionError, ChecksumError)):
            DetectionCheckpointer(torch.nn.Linear(3, 1)).load(path)
    assert not outside.exists()
    assert not (tmp_path / "cache").exists()


def test_no_made_up_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPFASHION2_MODEL_ZOO_URL", raising=False)
    monkeypatch.setenv("DEEPFASHION2_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="set \\$DEEPFASHION2_MODEL_ZOO_URL"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load("deepfashion2://m.pth#sha256=" + "0" * 64)


def test_unknown_names():
    with pytest.raises(KeyError, match="not in the DeepFashion2 model zoo"):
        model_zoo.get_config_file("DeepFashion2/nope")
    with pytest.raises(KeyError, match="no published checkpoint"):
        model_zoo.get_checkpoint_url("DeepFashion2/mask_rcnn_landmarks_R_50_FPN_3x")


def test_the_published_name_loads_only_the_published_file(served):
    pinned = model_zoo.CHECKPOINTS["DeepFashion2/Mini-CPU"]
    assert len(pinned["sha256"]) == 64 and int(pinned["sha256"], 16) >= 0
    assert model_zoo.get_checkpoint_url("Mini-CPU") == "deepfashion2://" + pinned["file"]
    # a server offering another file under the published name (with its own matching .sha256)
    _publish(served, pinned["file"], {"model": {"w": torch.ones(3)}})
    with pytest.raises(ChecksumError, match="refusing to use it"):
        model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")


def test_your_own_export_is_trusted_under_a_published_name_when_you_list_it(
    served, tmp_path, monkeypatch
):
    """make demo's export never matches the pinned hash; listing its hash makes it loadable."""
    mine = _publish(served, "Mini-CPU.pth", {"model": _model().state_dict()})
    with pytest.raises(ChecksumError) as e:
        model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")
    msg = str(e.value)
    pinned = model_zoo.CHECKPOINTS["DeepFashion2/Mini-CPU"]["sha256"]
    assert f"has sha256 {mine}" in msg and pinned in msg and "tampered" not in msg
    assert f"deepfashion2://Mini-CPU.pth#sha256={mine}" in msg and "\n" not in msg
    listing = tmp_path / "trusted.txt"
    listing.write_text(f"{mine}  Mini-CPU.pth\n")
    monkeypatch.setenv("DEEPFASHION2_TRUSTED_SHA256", str(listing))
    model_zoo.get("DeepFashion2/Mini-CPU", trained=True, device="cpu")


def test_an_unreachable_zoo_is_one_line_naming_the_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFASHION2_MODEL_ZOO_URL", "http://127.0.0.1:9/zoo/")
    monkeypatch.setenv("DEEPFASHION2_CACHE", str(tmp_path))
    with pytest.raises(ModelZooError) as e:
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load("deepfashion2://m.pth#sha256=" + "0" * 64)
    assert str(e.value).startswith("cannot download http://127.0.0.1:9/zoo/m.pth: ")
    assert "\n" not in str(e.value)


class _Hostile(http.server.BaseHTTPRequestHandler):
    """/endless: bytes forever; /trickle: one byte every 0.2 s (a slow-loris download)."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        if "slowhead" in self.path or "slowchunk" in self.path:
            return self._trickle()
        self.send_response(200)
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(100_000):
                if self.path.endswith("endless.pth"):
                    self.wfile.write(chunk)
                else:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self):
        """The status line and headers (slowhead), or a chunk-size line (slowchunk), a byte
        every 0.2 s: each read gets a byte long before any per-read timeout."""
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        slow = head + b"0" * 10_000 if "slowhead" in self.path else b"0" * 10_000
        try:
            if "slowchunk" in self.path:
                self.wfile.write(head + b"1\r\nx\r\n")
            for byte in slow:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DEEPFASHION2_MODEL_ZOO_URL", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("DEEPFASHION2_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "checkpoints"
    server.shutdown()


def test_an_endless_body_stops_at_the_size_cap(hostile, monkeypatch):
    monkeypatch.setenv("DEEPFASHION2_MAX_DOWNLOAD_BYTES", str(1 << 20))
    t0 = time.monotonic()
    with pytest.raises(ModelZooError, match="more than the 1,048,576 bytes allowed"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load(
            "deepfashion2://endless.pth#sha256=" + "0" * 64
        )
    assert time.monotonic() - t0 < 30
    assert os.listdir(hostile) == []  # no .part left


@pytest.mark.parametrize("name", ["trickle", "slowhead", "slowchunk"])
def test_a_trickling_server_stops_at_the_deadline(hostile, monkeypatch, name):
    """Body, status line and headers, or chunk framing: one deadline for the whole exchange."""
    monkeypatch.setenv("DEEPFASHION2_DOWNLOAD_DEADLINE", "1.5")
    t0 = time.monotonic()
    with pytest.raises(ModelZooError, match="not downloaded within the 1.5 s deadline"):
        DetectionCheckpointer(torch.nn.Linear(3, 1)).load(
            f"deepfashion2://{name}.pth#sha256=" + "0" * 64
        )
    assert time.monotonic() - t0 < 10
    assert os.listdir(hostile) == []


def test_dead_parts_are_removed_and_what_loads_is_what_was_hashed(served, tmp_path):
    import subprocess
    import sys

    digest = _publish(
        served, "m.pth", {"model": {"weight": torch.ones(1, 3), "bias": torch.ones(1)}}
    )
    cache = tmp_path / "cache" / "checkpoints"
    cache.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (cache / f".tmp-{dead}-abc.part").write_bytes(b"half")  # a download killed midway
    (cache / f".tmp-{os.getpid()}-live.part").write_bytes(b"")  # one in progress: kept
    from detectron2.utils.file_io import PathManager

    path = PathManager.get_local_path(f"deepfashion2://m.pth#sha256={digest}")
    assert sorted(os.listdir(cache)) == [f".tmp-{os.getpid()}-live.part", digest[:16]]
    # the path handed to the loader is a private copy of the hashed bytes: replacing the cached
    # file after the check does not change what loads
    assert not path.startswith(str(cache)) and model_zoo.sha256_of(path) == digest
    cached = cache / digest[:16] / "m.pth"
    torch.save({"model": {"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}}, cached)
    assert model_zoo.sha256_of(path) == digest
    model = torch.nn.Linear(3, 1)
    DetectionCheckpointer(model).load(path)
    assert model.weight.sum().item() == 3
