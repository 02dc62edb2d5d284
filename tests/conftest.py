import os
import re
import shutil
import sys
import tempfile

import pytest

# Keep caches and the embedded set of a test run out of the user's home and the repository.
_TMP = tempfile.mkdtemp(prefix="df2-tests-")
os.environ.setdefault("DF2_CACHE_DIR", os.path.join(_TMP, "cache"))
os.environ.setdefault("DF2_MINI_ROOT", os.path.join(_TMP, "mini"))

# bench/ holds helpers the tests share with the benchmarks (simulated predictions, the plain
# pycocotools route)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
# the tools' shared first import (tools/_tool.py), for tools loaded as modules
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
SAMPLES = os.path.join(SHARED, "df2_samples")
# facts of the official scheme (slices, sigmas, flip pairs, skeletons), kept as test data
SPEC = os.path.join(os.path.dirname(__file__), "data", "deepfashion2_spec.json")
ROOT = os.path.join(os.path.dirname(__file__), "..")


def require_samples() -> str:
    """
    The real DeepFashion2 samples (``../shared/df2_samples``) that the known-answer tests on real
    files read. Where ``../shared`` is absent those tests are skipped with this reason (``make
    test`` lists skip reasons); in CI (``$CI`` set), which has ``../shared`` beside the clone, its
    absence fails them instead: the strongest checks never pass by being skipped.
    """
    if os.path.isdir(SAMPLES):
        return SAMPLES
    why = f"needs the real DeepFashion2 samples in {os.path.normpath(SAMPLES)} (../shared)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI has ../shared beside the clone, so its absence is an error")
    pytest.skip(why)


@pytest.fixture
def samples() -> str:
    return require_samples()


def script_module(relpath: str):
    """A script of the repository (``tools/search.py``) imported as a module, to call its main()."""
    import importlib.util

    name = os.path.splitext(os.path.basename(relpath))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one_line_error(cap, call, *args) -> str:
    """
    Run ``call(*args)``, which must follow the tools' rule for a user's mistake: exit status 2,
    no traceback, the error as the last line of stderr (``cap``: capsys or capfd). The line.
    """
    with pytest.raises(SystemExit) as e:
        call(*args)
    # logging's own reports of handlers that earlier tests' captures closed are not the tool's
    err = re.sub(
        r"--- Logging error ---\n.*?\nArguments: [^\n]*\n", "", cap.readouterr().err, flags=re.S
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == 2 and lines and "Traceback" not in err, (e.value.code, err[-2000:])
    assert lines[-1].startswith("error: "), err[-2000:]
    return lines[-1]


@pytest.fixture(scope="session")
def synthetic_split(tmp_path_factory):
    """A small synthetic split (image/ + annos/), generated once per test session."""
    from deepfashion2.data.synthetic import generate_split

    root = str(tmp_path_factory.mktemp("synthetic") / "train")
    generate_split(root, 24, seed=7)
    return root


TINY = "df2_test_tiny_train"


@pytest.fixture(scope="module")
def tiny_split(synthetic_split):
    """The synthetic split registered as ``TINY`` for a test module (``usefixtures``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from deepfashion2.data import register_deepfashion2

    register_deepfashion2(
        TINY, os.path.join(synthetic_split, "annos"), os.path.join(synthetic_split, "image")
    )
    yield TINY
    DatasetCatalog.remove(TINY)
    MetadataCatalog.remove(TINY)


@pytest.fixture
def split_copy(synthetic_split, tmp_path):
    """A private copy of the synthetic split that a test may damage."""
    dst = tmp_path / "split"
    shutil.copytree(synthetic_split, dst)
    return str(dst)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TMP, ignore_errors=True)


CATALOGUE_SPLIT = "df2_test_catalogue"


@pytest.fixture(scope="module")
def catalogue_setup(synthetic_split, tmp_path_factory):
    """A (random-weight, deterministic) model's checkpoint, the split, its shop images folder."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.modeling import build_model

    from deepfashion2 import add_deepfashion2_config
    from deepfashion2.data import register_deepfashion2

    tmp = tmp_path_factory.mktemp("catalogue")
    register_deepfashion2(CATALOGUE_SPLIT, synthetic_split + "/annos", synthetic_split + "/image")
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(
        os.path.join(ROOT, "configs", "quick_schedules", "Mini-CPU_instant_test.yaml")
    )
    cfg.DATASETS.TEST = (CATALOGUE_SPLIT,)
    torch.manual_seed(0)
    weights = str(tmp / "model.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    shop = tmp / "shop"
    shop.mkdir()
    users = []
    for d in DatasetCatalog.get(CATALOGUE_SPLIT):
        if d["source"] == "shop":
            shutil.copy(d["file_name"], shop)
        else:
            users.append(d["file_name"])
    yield cfg, str(shop), sorted(users), tmp
    DatasetCatalog.remove(CATALOGUE_SPLIT)
    MetadataCatalog.remove(CATALOGUE_SPLIT)
