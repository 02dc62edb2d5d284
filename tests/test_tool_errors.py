"""
The tools' one rule, as a user meets it: each ordinary mistake run as a real command (a fresh
process, as from a shell) ends with one line on stderr, ``error: ...`` with what helps, exit
status 2, no traceback, and no empty output folder left behind.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow
CPU = "configs/EfficientNet-Lite0-CPU.yaml"
INSTANT = "configs/quick_schedules/Mini-CPU_instant_test.yaml"


def _cases(w) -> list[tuple[str, list[str], str, str | None]]:
    """(name, command, what the line must say, an output folder that must not be left)."""
    py = sys.executable
    bad = str(w / "bad_split")
    return [
        ("train: no config", [py, "tools/train_net.py", "--config-file", "nope.yaml"],
         "nope.yaml: no such config file (the project's are in configs/)", None),
        ("train: unknown key", [py, "tools/train_net.py", "--config-file", INSTANT, "MODEL.FOO",
                                "1"], "Non-existent key: MODEL.FOO", None),
        ("train: missing weights", [py, "tools/train_net.py", "--config-file", INSTANT,
                                    "--eval-only", "OUTPUT_DIR", str(w / "o1"),
                                    "MODEL.WEIGHTS", str(w / "demo" / "model_final.pth")],
         "no such weights file (MODEL.WEIGHTS) (name a .pth file; `make demo` writes", None),
        ("train: untrusted hash", [py, "tools/train_net.py", "--config-file", INSTANT,
                                   "--eval-only", "OUTPUT_DIR", str(w / "o2"),
                                   "MODEL.WEIGHTS", "deepfashion2://Mine.pth"],
         "deepfashion2://Mine.pth: no trusted sha256. Give one in the path", None),
        ("predict: missing photo", [py, "tools/predict.py", "--config-file", CPU, "--input",
                                    "photo.jpg", "--output", str(w / "pred")],
         "photo.jpg: no such image file", str(w / "pred")),
        ("predict: missing weights", [py, "tools/predict.py", "--config-file", INSTANT, "--input",
                                      str(w / "photo.jpg"), "--output", str(w / "pred2"),
                                      "--opts", "MODEL.WEIGHTS", "no.pth"],
         "no.pth: no such weights file", str(w / "pred2")),
        ("index: not a folder", [py, "tools/index_catalogue.py", "--config-file", CPU, "--images",
                                 "shop/", "--output", str(w / "cat")],
         "shop/: not a folder (--images takes", str(w / "cat")),
        ("index: missing weights", [py, "tools/index_catalogue.py", "--config-file", INSTANT,
                                    "--images", str(w), "--output", str(w / "cat2"),
                                    "MODEL.WEIGHTS", "no.pth"],
         "no.pth: No such file or directory", str(w / "cat2")),
        ("search: no catalogue", [py, "tools/search.py", "--catalogue", str(w / "none"),
                                  "--input", str(w / "photo.jpg"), "--output", str(w / "so")],
         "is not a catalogue (no catalogue.json)", str(w / "so")),
        ("serve: no catalogue", [py, "tools/serve.py", "--catalogue", str(w / "none")],
         "is not a catalogue (no catalogue.json)", None),
        ("evaluate: missing results", [py, "tools/evaluate.py", "--results", "boxes.json"],
         "boxes.json: No such file or directory", None),
        ("visualize: malformed item", [py, "tools/visualize_data.py", "--anno-dir",
                                       f"{bad}/annos", "--image-dir", f"{bad}/image",
                                       "--output", str(w / "vis")],
         "(--lenient skips such items, counted (LENIENT=1 for make demo))", str(w / "vis")),
        ("export: missing weights", [py, "tools/release_model.py", "--config-file", CPU,
                                     "--weights", "no.pth", "--name", "x", "--output",
                                     str(w / "rel")],
         "no.pth: no such checkpoint", str(w / "rel")),
        ("demo: not a dataset", [py, "tools/run_demo.py", "--dataset", str(w / "none"),
                                 "--output", str(w / "demo")],
         "no train or validation split", str(w / "demo")),
        ("prepare: malformed item", [py, "datasets/prepare_deepfashion2.py", "--anno-dir",
                                     f"{bad}/annos", "--image-dir", f"{bad}/image", "--no-cache"],
         ": occlusion: 0 is outside 1..3 (--lenient skips such items", None),
    ]  # fmt: skip


def _run(command):
    env = {k: v for k, v in os.environ.items() if k != "DEEPFASHION2_DEBUG"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_each_mistake_is_one_line_with_a_hint_and_status_2(synthetic_split, tmp_path):
    w = tmp_path
    bad = w / "bad_split"
    shutil.copytree(synthetic_split, bad)
    anno = sorted((bad / "annos").glob("*.json"))[0]
    obj = json.loads(anno.read_text())
    obj["item1"]["occlusion"] = 0
    anno.write_text(json.dumps(obj))
    shutil.copy(sorted((bad / "image").glob("*.jpg"))[0], w / "photo.jpg")
    cases = _cases(w)
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(_run, [c[1] for c in cases]))
    failures = []
    for (name, _, words, folder), run in zip(cases, runs):
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        ok = (
            run.returncode == 2 and "Traceback" not in run.stderr + run.stdout
            and last.startswith("error: ") and words in last
            and not (folder and os.path.exists(folder))
        )  # fmt: skip
        if not ok:
            failures.append(f"{name}: exit {run.returncode}\n{run.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
