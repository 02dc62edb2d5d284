"""
Every command the documentation shows (README.md, MODEL_ZOO.md, datasets/README.md, docs/*.md:
its ``bash`` and ``python`` blocks) runs as written, in the order a reader meets them, in a fresh
working directory: a stale command fails here, not for the reader.

What a reader brings is made from a tiny synthetic split: a validation folder (``val/``), the
dataset root (``$DETECTRON2_DATASETS``), shop images, photos, and result files (those
``tools/train_net.py --eval-only`` wrote earlier in the walk, as a reader's would be). Commands that
train or evaluate a model get a short schedule on that split appended (config overrides at the
end, which Detectron2 applies last; ``make demo`` through its ``DEMO_OPTS``), and the server gets a
free port. The walk runs as on a CPU machine (``CUDA_VISIBLE_DEVICES`` empty, whatever this one
has), where the GPU configs must stop with their one-line message, and in a fresh shell: no
virtual environment is active (``.venv`` is there, as after ``make demo``), so a command that says
``python`` where it means ``.venv/bin/python`` fails here as it would for a reader.
What cannot run here is in ``NOT_RUN`` with the reason, and must still be in the documentation.
"""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
from _common import wait_until_serving
from conftest import ROOT
from test_docs import DOCS, _commands

from deepfashion2.compat import free_port

pytestmark = pytest.mark.slow

# appended to every tools/train_net.py command (and make demo's DEMO_OPTS): the tiny split,
# four iterations with a checkpoint every two, small images
SHORT = [
    "DATASETS.TRAIN", '("deepfashion2_train",)',
    "DATASETS.TEST", '("deepfashion2_validation",)',
    "SOLVER.MAX_ITER", "4",
    "SOLVER.STEPS", "(3,)",
    "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.CHECKPOINT_PERIOD", "2",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "30",
    # four iterations score every box low: keep them, so that the result files hold some
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "DEEPFASHION2.RETRIEVAL.MIN_SCORE", "0.0",
]  # fmt: skip

NOT_RUN = {
    "make test": "the suite this test is part of",
    "make test-fast": "a part of the suite this test is part of",
    "from deepfashion2 import model_zoo": "needs a hosted zoo ($DEEPFASHION2_MODEL_ZOO_URL): "
    "tests/test_model_zoo.py serves one on 127.0.0.1 and runs these calls",
    "python tools/index_catalogue.py --config-file configs/EfficientNet-Lite0-CPU.yaml --images "
    "/shared/": "needs two machines and a file system they share: tests/test_catalogue.py runs "
    "two on loopback",
}
GPU_CONFIG = re.compile(r"configs/(lazy/)?mask_rcnn_landmarks_\S+\.(yaml|py)")
# the lazy tool's short run: 4 iterations at one learning rate on the walk's splits
LAZY_SHORT = [
    "train.max_iter=4",
    "train.checkpointer.period=2",
    "dataloader.train.dataset.names=['deepfashion2_train']",
    "dataloader.test.dataset.name=deepfashion2_validation",
    "lr_multiplier.scheduler.values=[1.0]",
    "lr_multiplier.scheduler.milestones=[]",
    "lr_multiplier.scheduler.num_updates=4",
    "lr_multiplier.warmup_length=0.0",
    "model.roi_heads.box_predictor.test_score_thresh=0.0",
    "deepfashion2.RETRIEVAL.MIN_SCORE=0.0",
]
# result files a reader scores with tools/evaluate.py: those the walk's --eval-only wrote
RESULT_FILES = {
    "boxes.json": "deepfashion2_results_bbox.json",
    "masks.json": "deepfashion2_results_segm.json",
    "landmarks.json": "deepfashion2_results_keypoints.json",
    "retrieval.json": "retrieval_submission.json",
}


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _normalised(command: str) -> str:
    return " ".join(command.replace(".venv/bin/python ", "python ").split())


def _walk() -> list[tuple[str, str, str]]:
    """(doc, kind, command) in reading order, each distinct command once."""
    seen, out = set(), []
    for doc in DOCS:
        text = open(os.path.join(ROOT, doc)).read()
        steps = [("bash", c) for c in _commands(text)]
        steps += [("python", b) for b in _python_blocks(text)]
        for kind, command in steps:
            key = _normalised(command)
            if key not in seen:
                seen.add(key)
                out.append((doc, kind, command))
    return out


@pytest.fixture(scope="module")
def world(synthetic_split, tmp_path_factory):
    """The reader's working directory: the repository's scripts and configs, and their data."""
    w = tmp_path_factory.mktemp("reader")
    for name in ("tools", "configs", "datasets", "Makefile", "requirements.txt", "setup.py"):
        os.symlink(os.path.join(ROOT, name), w / name)
    # the reader's .venv is this test's environment; it is not active (see the walk's PATH)
    os.symlink(sys.prefix, w / ".venv")
    shutil.copytree(synthetic_split, w / "val")
    for split in ("train", "validation"):
        shutil.copytree(synthetic_split, w / "d2" / "deepfashion2" / split)
    (w / "shop_images").mkdir()
    user = []
    for anno in sorted(glob.glob(str(w / "val" / "annos" / "*.json"))):
        stem = os.path.basename(anno)[:-5]
        image = w / "val" / "image" / f"{stem}.jpg"
        if json.load(open(anno))["source"] == "shop":
            shutil.copy(image, w / "shop_images")
        else:
            user.append(image)
    shutil.copy(user[0], w / "photo.jpg")
    shutil.copy(user[1], w / "more.jpg")
    # a shop's products file and a list of what sold out (docs/CATALOGUE.md)
    shop = sorted(os.listdir(w / "shop_images"))
    (w / "products.csv").write_text(
        "image,product,title,price,available\n"
        + "".join(f"{n},P{i // 2},item {i // 2},{10 + i // 2},{str(i % 4 < 2).lower()}\n"
                  for i, n in enumerate(shop))  # fmt: skip
    )
    (w / "sold_out.txt").write_text("P0\n")
    return w


def _supply_results(w, command: str) -> None:
    """The result files a command scores: those the walk's last --eval-only wrote."""
    for name, written in RESULT_FILES.items():
        if re.search(rf"(^|\s){re.escape(name)}(\s|$)", command) and not (w / name).exists():
            found = sorted(glob.glob(str(w / "output" / "*" / "inference" / written)))
            assert found, f"{name}: no {written} written by an earlier --eval-only of the walk"
            shutil.copy(found[-1], w / name)


def _serve(words: list[str], w, env) -> str:
    """Start the documented server on a free port, check /healthz, stop it; '' when it worked."""
    port = free_port()
    proc = subprocess.Popen(
        [*words, "--port", str(port)], cwd=w, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        error = wait_until_serving(proc, port)
        if error and proc.poll() is not None:
            error += f": {proc.stdout.read()[-2000:]}"
        return error or ""
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_documented_command_runs_as_written(world):
    w = world
    # a fresh shell: no virtual environment active, whatever runs this test (a documented
    # command must name .venv/bin/python, or activate it, to get torch and the project)
    venv_bin = os.path.realpath(os.path.join(sys.prefix, "bin"))
    path = [p for p in os.environ["PATH"].split(os.pathsep) if os.path.realpath(p) != venv_bin]
    env = {
        **{k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")},  # fmt: skip
        "PATH": os.pathsep.join(path),
        "DETECTRON2_DATASETS": str(w / "d2"),
        "DF2_CACHE_DIR": str(w / "cache"),
        "VENV": sys.prefix,  # make: the environment running this test
        "DEMO_OPTS": shlex.join(SHORT),
        "CUDA_VISIBLE_DEVICES": "",  # a CPU machine: the CPU configs, the GPU ones refused
    }
    walk = _walk()
    listed = {_normalised(c) for _, _, c in walk}
    for prefix in NOT_RUN:  # the list names documented commands only
        assert any(
            c.startswith(prefix) for c in listed
        ), f"NOT_RUN names no documented command: {prefix}"
    failures, ran = [], 0
    for doc, kind, command in walk:
        key = _normalised(command)
        if any(key.startswith(prefix) for prefix in NOT_RUN):
            continue
        if kind == "python":
            code = command.replace("/data/df2", str(w / "d2" / "deepfashion2"))
            run = subprocess.run(
                [sys.executable, "-c", code], cwd=w, env=env, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            ran += 1
            if run.returncode:
                failures.append(f"{doc}: python block\n{command}\n{run.stderr[-2000:]}")
            continue
        if command.startswith("export "):
            name, value = command[len("export ") :].split("=", 1)
            env[name] = str(w / "d2") if value == "/data" else value
            continue
        words = shlex.split(command.replace("$DETECTRON2_DATASETS", env["DETECTRON2_DATASETS"]))
        _supply_results(w, command)
        gpu = GPU_CONFIG.search(command)
        if "tools/train_net.py" in command and not gpu:
            words += SHORT
        if "tools/lazyconfig_train_net.py" in command and not gpu:
            words += LAZY_SHORT
        ran += 1
        if "tools/serve.py" in command:
            error = _serve(words, w, env)
            if error:
                failures.append(f"{doc}: {command}\n{error}")
            continue
        start = time.monotonic()
        run = subprocess.run(words, cwd=w, env=env, capture_output=True, text=True, timeout=900)
        out = run.stdout + run.stderr
        took = time.monotonic() - start
        print(f"{took:5.1f} s  {doc}: {command}")
        if gpu:  # no CUDA here: one line, before any process starts
            last = out.strip().splitlines()[-1] if out.strip() else ""
            if run.returncode == 0 or "Traceback" in out or "no CUDA device" not in last:
                failures.append(
                    f"{doc}: {command}\nexpected the one-line CUDA refusal:\n{out[-2000:]}"
                )
        elif run.returncode:
            failures.append(f"{doc}: {command}\nexit {run.returncode}:\n{out[-3000:]}")
        elif "tools/train_net.py" in command:
            for misleading in ("not built correctly", "No CUDA runtime is found"):
                if misleading in out:
                    failures.append(f"{doc}: {command}\nprints {misleading!r} on a CPU machine")
    assert not failures, "\n\n".join(failures)
    assert ran >= 20, ran  # the walk found the documentation's commands
    # what the walk's commands leave is where the documentation says
    for path in (
        "output/demo/model_final.pth", "output/effnet_lite0_cpu/inference_TTA",
        "catalogue", "search_out/results.json", "release", "gt/query_gt.json", "metrics.json",
        "val_coco.json", "catalogue_milvus.db",
    ):  # fmt: skip
        assert (w / path).exists(), path
