"""tools/train_net.py on the small CPU config: loss, --eval-only, --resume, 2 processes."""

import glob
import importlib.util
import json
import os
import shutil

import pytest
import torch
from conftest import TINY, one_line_error
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from deepfashion2.data import register_deepfashion2

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG = os.path.join(ROOT, "configs", "quick_schedules", "Mini-CPU_instant_test.yaml")
_spec = importlib.util.spec_from_file_location(
    "train_net", os.path.join(ROOT, "tools", "train_net.py")
)
train_net = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_net)

TRAIN = TINY
pytestmark = pytest.mark.usefixtures("tiny_split")


def tiny_opts(out, iters, *extra, test=False):
    """The instant-test config's per-test values (its file holds the tiny schedule and sizes)."""
    return [
        "OUTPUT_DIR", str(out),
        "DATASETS.TRAIN", f"('{TRAIN}',)",
        "DATASETS.TEST", f"('{TRAIN}',)" if test else "()",
        "SOLVER.MAX_ITER", str(iters),
        *extra,
    ]  # fmt: skip


def run(argv):
    args = default_argument_parser().parse_args(["--config-file", CONFIG] + argv)
    return train_net.main(args)


def metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]


@pytest.mark.slow
def test_loss_decreases_and_eval_only_runs(tmp_path):
    run(tiny_opts(tmp_path, 40))
    # the writers log medians over 20-iteration windows: iterations 0-19 vs 20-39
    rows = [m for m in metrics(tmp_path) if "total_loss" in m]
    assert [m["iteration"] for m in rows] == [19, 39]
    # the detector's losses; the matching loss grows with the number of foreground RoIs
    detector = [m["total_loss"] - m["loss_match"] for m in rows]
    assert detector[1] < 0.9 * detector[0], rows
    assert rows[1]["loss_keypoint"] < rows[0]["loss_keypoint"]
    assert rows[1]["loss_mask"] < rows[0]["loss_mask"]
    assert rows[1]["loss_match"] < rows[0]["loss_match"]
    # --eval-only on the saved checkpoint: the DeepFashion2 evaluator, tables saved
    weights = str(tmp_path / "model_final.pth")
    res = run(
        ["--eval-only"] + tiny_opts(tmp_path / "eval", 40, "MODEL.WEIGHTS", weights, test=True)
    )
    assert set(res) == {
        "bbox", "segm", "keypoints", "keypoints_vis", "retrieval", "retrieval_gt_boxes"
    }  # fmt: skip
    assert {k for k in res["retrieval"] if "/" not in k} == {
        "top1",
        "top5",
        "top10",
        "top15",
        "top20",
    }
    assert "top20/occlusion:heavy" in res["retrieval"]  # per attribute of the query items
    assert "AP/occlusion:heavy" in res["keypoints"] and "AP75/viewpoint:frontal" in res["segm"]
    inference = tmp_path / "eval" / "inference"
    md = (inference / "deepfashion2_tables.md").read_text()
    assert "Landmark estimation" in md and "| AP (visible) |" in md
    assert "| top-1 (detected boxes) |" in md and "| top-20 (ground-truth boxes) |" in md
    submission = json.loads((inference / "retrieval_submission.json").read_text())
    assert submission and len(submission[0]["gallery_image_id"]) <= 20
    saved = json.loads((inference / "deepfashion2_metrics.json").read_text())
    assert saved["bbox"]["AP"] == pytest.approx(res["bbox"]["AP"])
    boxes = json.loads((inference / "deepfashion2_results_bbox.json").read_text())
    assert boxes and set(boxes[0]) == {"image_id", "category_id", "bbox", "score"}


def test_resume_continues_at_the_saved_iteration(tmp_path):
    opts = tiny_opts(tmp_path, 6, "SOLVER.CHECKPOINT_PERIOD", "3")
    run(opts)
    saved = torch.load(tmp_path / "model_0000002.pth", weights_only=True)  # safe loading works
    assert saved["iteration"] == 2
    # as if killed after the first checkpoint
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    os.remove(tmp_path / "model_final.pth")
    os.remove(tmp_path / "metrics.json")
    cfg = train_net.setup(
        default_argument_parser().parse_args(["--config-file", CONFIG, "--resume"] + opts)
    )
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 3
    assert trainer.scheduler.last_epoch == saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"]
    assert trainer.scheduler.last_epoch == 3
    state = trainer.optimizer.state_dict()["state"]
    saved_state = saved["trainer"]["_trainer"]["optimizer"]["state"]
    assert len(saved_state) == len(state) > 0
    for k, v in saved_state.items():  # the optimizer's own state (AdamW: step, exp_avg, ...)
        assert state[k].keys() == v.keys()
        assert all(torch.equal(torch.as_tensor(state[k][n]), torch.as_tensor(v[n])) for n in v)
    trainer.train()
    steps = [it for _, it in trainer.storage.history("total_loss").values()]
    assert steps == [3, 4, 5]  # only the remaining iterations ran


@pytest.mark.slow
def test_two_process_cpu_launch_ends_with_identical_weights(tmp_path, synthetic_split):
    from deepfashion2.engine import launch

    out = tmp_path
    ranks = [tmp_path / f"r{r}" for r in range(2)]
    args = default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--num-gpus", "2"]
        + tiny_opts(out, 3, "SOLVER.IMS_PER_BATCH", "4")  # 2 per process: the pair sampler
    )
    launch(_rank_weights, 2, dist_url="auto", args=(args, [str(r) for r in ranks], synthetic_split))
    w0 = torch.load(str(ranks[0]) + ".pth", weights_only=True)
    w1 = torch.load(str(ranks[1]) + ".pth", weights_only=True)
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    init = torch.load(str(ranks[0]) + ".init.pth", weights_only=True)
    assert any(not torch.equal(init[k], w0[k]) for k in w0)  # it did train
    # each CPU process gets its share of the cores (all of them each: ~15x slower)
    threads = [int((tmp_path / f"r{r}.threads").read_text()) for r in range(2)]
    assert threads == [max(1, (os.cpu_count() or 1) // 2)] * 2


def _rank_weights(args, paths, split):
    """Train under DDP, then save this rank's own model weights (not rank 0's checkpoint)."""
    from detectron2.utils import comm

    # a fresh process: register the test split again
    register_deepfashion2(TRAIN, os.path.join(split, "annos"), os.path.join(split, "image"))
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    assert hasattr(trainer.model, "module"), "DDP was not used"
    path = paths[comm.get_rank()]
    with open(path + ".threads", "w") as f:
        f.write(str(torch.get_num_threads()))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path + ".init.pth")
    trainer.train()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path + ".pth")


@pytest.mark.slow
def test_the_config_lenient_flag_reaches_the_data(tmp_path, split_copy):
    from deepfashion2 import model_zoo
    from deepfashion2.data import DeepFashion2FormatError, dataset_dicts

    bad = os.path.join(split_copy, "annos", "000005.json")
    obj = json.load(open(bad))
    obj["item1"]["occlusion"] = 7
    json.dump(obj, open(bad, "w"))
    name = "df2_test_lenient"
    register_deepfashion2(
        name, os.path.join(split_copy, "annos"), os.path.join(split_copy, "image")
    )  # strict by default
    try:
        opts = tiny_opts(tmp_path, 2, "DATASETS.TRAIN", f"('{name}',)")
        with pytest.raises(DeepFashion2FormatError, match="occlusion: 7 is outside 1..3"):
            run(opts)
        run(opts + ["DEEPFASHION2.LENIENT", "True"])  # tools/train_net.py: trains
        assert os.path.exists(tmp_path / "model_final.pth")
        # a model-zoo config carries the key to every place data is built from it
        cfg = model_zoo.get_config("DeepFashion2/Mini-CPU")
        cfg.DEEPFASHION2.LENIENT = True
        dicts = dataset_dicts(name, cfg)
        items = sum(k.startswith("item") for k in obj)
        (five,) = [d for d in dicts if d["image_id"] == 5]
        assert len(dicts) == 24 and len(five["annotations"]) == items - 1  # only the bad item
        assert len(train_net.Trainer.build_test_loader(cfg, name)) == 24
        cfg.DEEPFASHION2.LENIENT = False
        with pytest.raises(DeepFashion2FormatError):
            dataset_dicts(name, cfg)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


ORPHANS = """
import os, sys, time
from deepfashion2.engine import launch

def work(folder):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(300)

if __name__ == "__main__":
    launch(work, 2, dist_url="auto", args=(sys.argv[1],))
"""


@pytest.mark.slow
def test_cpu_processes_end_when_their_launcher_is_killed(tmp_path):
    """Killing only the parent (SIGKILL, as a crashed terminal or an impatient user does) leaves
    no training process behind."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "launcher.py"
    script.write_text(ORPHANS)
    pids = tmp_path / "pids"
    pids.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(pids)])
    try:
        for _ in range(600):
            if len(os.listdir(pids)) == 2:
                break
            time.sleep(0.1)
        children = [int(p) for p in os.listdir(pids)]
        assert len(children) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            alive = [p for p in children if os.path.exists(f"/proc/{p}")
                     and "zombie" not in open(f"/proc/{p}/status").read()]  # fmt: skip
            if not alive:
                break
            time.sleep(0.1)
        assert not alive
    finally:
        parent.kill()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_gpu_config_on_a_machine_without_cuda_says_so_in_one_line(capsys):
    gpu = os.path.join(ROOT, "configs", "mask_rcnn_landmarks_R_50_FPN_1x.yaml")
    args = default_argument_parser().parse_args(["--config-file", gpu])
    line = one_line_error(capsys, train_net.setup, args)
    assert "has no CUDA device (add MODEL.DEVICE cpu" in line


def test_a_split_without_shop_photos_skips_retrieval_saying_so_once(
    synthetic_split, tmp_path, caplog
):
    """A folder of consumer photos: no retrieval evaluator (it could only score zeros after a
    second inference pass), one warning however often the evaluator is built."""
    from deepfashion2.config import load_config
    from deepfashion2.evaluation import DeepFashion2Evaluator

    split = tmp_path / "users"
    shutil.copytree(synthetic_split, split)
    for anno in glob.glob(str(split / "annos" / "*.json")):
        if json.load(open(anno))["source"] == "shop":
            os.remove(anno)
            os.remove(anno.replace("annos", "image").replace(".json", ".jpg"))
    name = "df2_test_users_only"
    register_deepfashion2(name, str(split / "annos"), str(split / "image"))
    try:
        cfg = load_config(CONFIG, ["MODEL.MATCH_ON", "True", "DATASETS.TEST", f"('{name}',)"])
        for _ in range(2):
            evaluator = train_net.Trainer.build_evaluator(cfg, name, str(tmp_path / "out"))
            assert isinstance(evaluator, DeepFashion2Evaluator)
        said = [r for r in caplog.records if "consumer-to-shop retrieval is not" in r.message]
        assert len(said) == 1 and "has no shop photos" in said[0].message
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
