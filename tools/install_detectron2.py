#!/usr/bin/env python
"""
Make ``import detectron2`` work in the current environment, without a compiler or a network
other than the package index.

Route (see README, "Install route"):

1. If ``detectron2`` is already importable (e.g. an official build from source), do nothing.
2. Else, if a wheel built earlier is in the cache (``$DF2_WHEEL_CACHE``, default
   ``~/.cache/deepfashion2/wheels``), install it.
3. Else download the index's sdist ``pb1-detectron2==0.6`` (pinned by sha256; its Python sources
   are byte-identical to the official v0.6 release, its C++ sources are missing), apply the
   compatibility step below, build a pure-Python wheel named ``detectron2``, cache and install it.

Compatibility step (each change mirrors what Detectron2's main branch did upstream):

- ``from detectron2 import _C`` in layers/deform_conv.py, layers/rotated_boxes.py and
  layers/roi_align_rotated.py becomes optional (only deformable conv and rotated boxes need it);
  evaluation/coco_evaluation.py falls back to pycocotools' COCOeval when fast_eval_api (which
  needs ``_C``) is unavailable.
- ``np.bool/np.int/np.float/np.object`` become the builtins (removed in numpy 1.24).
- ``Image.LINEAR`` becomes ``Image.BILINEAR`` (removed in Pillow 10).
- ``pkg_resources`` (model_zoo) is kept: the environment pins setuptools < 81.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
WHEEL_NAME = "detectron2-0.6-py3-none-any.whl"

# Runtime requirements of Detectron2 v0.6 (its setup.py), less the pins that clash with a
# modern environment (black==21.4b2 is only used for pretty-printing LazyConfig).
INSTALL_REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

OPTIONAL_C = (
    "try:\n    from detectron2 import _C\n"
    "except ImportError:  # no compiled ops in this build\n    _C = None\n"
)
OPTIONAL_FAST_EVAL = (
    "try:\n    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
    "except ImportError:  # fast_eval_api needs the compiled _C\n    COCOeval_opt = COCOeval\n"
)

SETUP_PY = """
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="0.6",
    description="Detectron2 v0.6 Python sources (from the pb1-detectron2 sdist), pure-Python build",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},
    include_package_data=False,
    python_requires=">=3.7",
    install_requires=%r,
)
"""


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def pip(*args: str) -> None:
    """pip, quiet (its errors still print)."""
    subprocess.check_call([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def patch_file(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    if text.count(old) != count:
        raise RuntimeError(f"{path}: expected {count} occurrence(s) of {old!r} to patch")
    path.write_text(text.replace(old, new))


def apply_compat(src: Path) -> None:
    d2 = src / "detectron2"
    for rel in ("layers/deform_conv.py", "layers/rotated_boxes.py", "layers/roi_align_rotated.py"):
        patch_file(d2 / rel, "from detectron2 import _C\n", OPTIONAL_C)
    patch_file(
        d2 / "evaluation/coco_evaluation.py",
        "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
        OPTIONAL_FAST_EVAL,
    )
    removed = re.compile(r"\bnp\.(bool|int|float|object)\b(?!_)")
    for py in d2.rglob("*.py"):
        text = py.read_text()
        new = removed.sub(r"\1", text).replace("Image.LINEAR", "Image.BILINEAR")
        if new != text:
            py.write_text(new)


def build_wheel(cache: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log(f"downloading {SDIST} (sdist)")
        # its setup.py imports torch to report metadata: no build isolation
        pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            SDIST,
            "-d",
            str(tmp),
        )
        (archive,) = glob.glob(str(tmp / "pb1-detectron2-0.6.tar.gz"))
        digest = sha256(Path(archive))
        if digest != SDIST_SHA256:
            raise SystemExit(f"{archive}: sha256 {digest} != pinned {SDIST_SHA256}; refusing")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / "pb1-detectron2-0.6"
        apply_compat(src)
        (src / "setup.py").write_text(SETUP_PY % (INSTALL_REQUIRES,))
        for stale in ("setup.cfg", "pb1_detectron2.egg-info"):
            p = src / stale
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(cache), str(src))
    wheel = cache / WHEEL_NAME
    if not wheel.is_file():
        raise SystemExit(f"wheel build did not produce {wheel}")
    log(f"built {wheel}")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached wheel")
    args = parser.parse_args()
    if importlib.util.find_spec("detectron2") is not None and not args.rebuild:
        log("detectron2 already importable; nothing to do")
        return
    cache = Path(os.environ.get("DF2_WHEEL_CACHE", "~/.cache/deepfashion2/wheels")).expanduser()
    wheel = cache / WHEEL_NAME
    if args.rebuild or not wheel.is_file():
        wheel = build_wheel(cache)
    else:
        log(f"using cached {wheel}")
    pip("install", "--force-reinstall", "--no-deps", str(wheel))
    pip("install", *INSTALL_REQUIRES)


if __name__ == "__main__":
    main()
