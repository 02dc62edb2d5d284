"""tools/check_gpu.py, the small CPU version: every step that can run on a CPU runs, the others
say why they did not, and the report is written."""

import json

import pytest
from conftest import script_module


@pytest.mark.slow
def test_the_gpu_check_runs_on_cpu_and_says_what_it_could_not_run(tmp_path):
    out = tmp_path / "check.json"
    report = script_module("tools/check_gpu.py").main(["--device", "cpu", "--output", str(out)])
    assert json.loads(out.read_text())["device"] == "cpu"
    steps = report["steps"]
    for name in ("train", "evaluate", "tta", "catalogue", "landmark_head", "lazy"):
        assert steps[name]["status"] == "ok", (name, steps[name].get("error"))
    assert steps["train_amp"] == {**steps["train_amp"], "status": "skipped",
                                  "reason": "SOLVER.AMP needs CUDA"}  # fmt: skip
    assert steps["launch"]["status"] == "skipped" and "needs 2 GPUs" in steps["launch"]["reason"]
    assert set(steps["evaluate"]["result"]) >= {"bbox", "segm", "keypoints", "retrieval"}
    assert set(steps["tta"]["result"]) >= {"bbox_TTA", "keypoints_TTA", "retrieval_TTA"}
    assert steps["landmark_head"]["result"]["time_ratio_ours_to_stock"] > 0
    assert {"bbox", "segm", "keypoints", "retrieval"} <= set(steps["lazy"]["result"]["benchmarks"])
