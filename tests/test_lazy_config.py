"""
The LazyConfigs (configs/lazy/) and tools/lazyconfig_train_net.py: the CPU recipe's lazy form is
the YAML recipe's model (parameter for parameter, output for output), optimizer and schedule;
every lazy config instantiates on CPU and trains one step with finite losses and a gradient for
every trainable parameter; the tool trains 4 iterations and evaluates the four benchmarks on the
instant-test split, resumes, and says a mistake in one line.
"""

import glob
import json
import os

import pytest
import torch
from conftest import ROOT, TINY, one_line_error, script_module
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from test_gpu_configs import _image

from deepfashion2.config import load_config
from deepfashion2.engine import Trainer

LAZY = os.path.join(ROOT, "configs", "lazy")
CPU = os.path.join(LAZY, "EfficientNet_Lite0_CPU.py")
INSTANT = os.path.join(LAZY, "quick_schedules", "EfficientNet_Lite0_CPU_instant_test.py")
LAZY_CONFIGS = sorted(
    os.path.relpath(p, LAZY) for p in glob.glob(os.path.join(LAZY, "**", "*.py"), recursive=True)
    if "common" not in p
)  # fmt: skip


def test_the_lazy_cpu_recipe_is_the_yaml_one():
    lazy_cfg = LazyConfig.load(CPU)
    yaml_cfg = load_config(os.path.join(ROOT, "configs", "EfficientNet-Lite0-CPU.yaml"), [])
    torch.manual_seed(0)
    lazy = instantiate(lazy_cfg.model).eval()
    torch.manual_seed(1)
    yaml = build_model(yaml_cfg).eval()
    assert {n: p.shape for n, p in lazy.state_dict().items()} == {
        n: p.shape for n, p in yaml.state_dict().items()
    }
    trainable = [n for n, p in yaml.named_parameters() if p.requires_grad]
    assert [n for n, p in lazy.named_parameters() if p.requires_grad] == trainable
    lazy.load_state_dict(yaml.state_dict())
    import numpy as np
    from conftest import require_samples
    from PIL import Image

    photo = np.asarray(Image.open(os.path.join(require_samples(), "image", "000001.jpg")))
    image = torch.from_numpy(photo.transpose(2, 0, 1).copy()).float()
    inputs = [{"image": torch.rand(3, 150, 200) * 255}, {"image": image[:, ::3, ::3]}]
    with torch.no_grad():
        a, b = lazy(inputs), yaml(inputs)
    for x, y in zip(a, b):
        x, y = x["instances"], y["instances"]
        assert len(x) == len(y) > 0
        for field in ("pred_boxes", "scores", "pred_classes", "pred_masks", "pred_keypoints",
                      "pred_embeddings"):  # fmt: skip
            u, v = x.get(field), y.get(field)
            u, v = getattr(u, "tensor", u), getattr(v, "tensor", v)
            assert torch.equal(u, v), field
    # the optimizer's groups and the learning rate at every step of the schedule
    lazy_cfg.optimizer.params.model = lazy
    opt_lazy, opt_yaml = instantiate(lazy_cfg.optimizer), Trainer.build_optimizer(yaml_cfg, yaml)
    assert type(opt_lazy) is type(opt_yaml)
    strip = lambda g: {k: v for k, v in g.items() if k != "params"}  # noqa: E731
    assert [strip(g) for g in opt_lazy.param_groups] == [strip(g) for g in opt_yaml.param_groups]
    sched_lazy = instantiate(lazy_cfg.lr_multiplier)
    sched_yaml = Trainer.build_lr_scheduler(yaml_cfg, opt_yaml)
    for it in (0, 50, 99, 100, 999, 1000, 1199):
        assert sched_lazy(it / 1200) * lazy_cfg.optimizer.lr == pytest.approx(
            sched_yaml._multiplier(it / 1200) * yaml_cfg.SOLVER.BASE_LR
        ), it


def test_the_lazy_r50_model_is_the_yaml_gpu_one():
    lazy = instantiate(LazyConfig.load(os.path.join(LAZY, "common", "models",
                                                    "deepfashion2_rcnn_fpn.py")).model)  # fmt: skip
    yaml_cfg = load_config(
        os.path.join(ROOT, "configs", "mask_rcnn_landmarks_R_50_FPN_1x.yaml"),
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""],
    )
    yaml = build_model(yaml_cfg)
    assert {n: p.shape for n, p in lazy.state_dict().items()} == {
        n: p.shape for n, p in yaml.state_dict().items()
    }
    assert [n for n, p in lazy.named_parameters() if p.requires_grad] == [
        n for n, p in yaml.named_parameters() if p.requires_grad
    ]


@pytest.mark.parametrize("name", LAZY_CONFIGS)
def test_every_lazy_config_trains_one_step_on_cpu(name):
    cfg = LazyConfig.load(os.path.join(LAZY, name))
    bottom_up = cfg.model.backbone.bottom_up
    if "weights" in bottom_up:
        bottom_up.weights = ""  # what is measured here is the step, not the ImageNet start
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batch = [_image(0, 1, 7001), _image(1, 1, 7001)]
    with EventStorage():
        losses = model(batch)
    assert {"loss_cls", "loss_mask", "loss_keypoint", "loss_match"} <= set(losses)
    for k, v in losses.items():
        assert torch.isfinite(v), (name, k)
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:10]
    optimizer.step()
    assert cfg.dataloader.evaluator._target_.__name__ == "evaluators"
    assert len(cfg.dataloader.evaluator.kpt_oks_sigmas) == 294


@pytest.mark.usefixtures("tiny_split")
def test_the_lazy_tool_trains_evaluates_and_resumes(tmp_path, capsys):
    tool = script_module("tools/lazyconfig_train_net.py")
    out = str(tmp_path / "out")
    overrides = [
        f"train.output_dir={out}", f"dataloader.train.dataset.names=['{TINY}']",
        f"dataloader.test.dataset.name={TINY}", "train.max_iter=4", "train.checkpointer.period=2",
        "model.backbone.bottom_up.weights=''",
        # four iterations score every box low: keep them, so that the result files hold some
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        "deepfashion2.RETRIEVAL.MIN_SCORE=0.0",
    ]  # fmt: skip
    tool.cli(["--config-file", INSTANT, *overrides])
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    inference = os.path.join(out, "inference")
    for name in ("deepfashion2_results_bbox.json", "deepfashion2_results_keypoints.json",
                 "retrieval_submission.json", "deepfashion2_tables.md"):  # fmt: skip
        assert os.path.isfile(os.path.join(inference, name)), name
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in metrics if "total_loss" in m)
    from detectron2.engine import default_argument_parser

    final = f"train.init_checkpoint={out}/model_final.pth"
    argv = ["--config-file", INSTANT, "--eval-only", *overrides, final]
    args = default_argument_parser().parse_args(argv)
    res = tool.main(args)
    assert {"bbox", "segm", "keypoints", "retrieval"} <= set(res)
    # --resume with nothing left to do: the final checkpoint is where the run ended
    tool.cli(["--config-file", INSTANT, "--resume", *overrides])
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config-file", "configs/lazy/nope.py"], "no such config file"),
        (["--config-file", INSTANT, "train.max_iters=600"], "train has no 'max_iters'"),
        (["--config-file", INSTANT, "model.roi_heads.box_head.no_arg=1"], "has no 'no_arg'"),
        (["--config-file", INSTANT, "train.nothing.x=1"], "no 'train.nothing' to set"),
        (["--config-file", CPU, "train.device=cuda"], "has no CUDA device"),
    ],
)
def test_a_mistake_is_one_line(argv, message, capsys):
    if "cuda" in message.lower() and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tool = script_module("tools/lazyconfig_train_net.py")
    line = one_line_error(capsys, tool.cli, argv)
    assert message in line


def test_the_model_zoo_knows_the_lazy_configs():
    from deepfashion2 import model_zoo

    for name in model_zoo.model_zoo.CONFIGS:
        assert os.path.isfile(model_zoo.get_config_file(name)), name
    lazy = model_zoo.get_config("lazy/EfficientNet_Lite0_CPU", trained=True)
    assert lazy.train.init_checkpoint == "deepfashion2://EfficientNet-Lite0-CPU.pth"
    assert model_zoo.get_config_file("DeepFashion2/lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ.py")
    assert LazyConfig.load(model_zoo.get_config_file("lazy/mask_rcnn_landmarks_R_50_FPN_400ep_LSJ")
                           ).train.max_iter == round(400 * 191_961 / 64)  # fmt: skip
