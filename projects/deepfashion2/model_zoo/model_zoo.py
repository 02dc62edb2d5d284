"""Names -> configs and checkpoints (see MODEL_ZOO.md)."""

from __future__ import annotations

import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

from ..config import add_deepfashion2_config

# name -> published checkpoint: file under the base URL and its sha256 (tools/release_model.py
# prints both). The sha256 is what makes a download trusted: only the file exported from the
# published run loads under its name (MODEL_ZOO.md: where it was trained, and its spread).
CHECKPOINTS: dict[str, dict[str, str]] = {
    "DeepFashion2/Mini-CPU": {
        "file": "Mini-CPU.pth",
        "sha256": "9dcf6e3a242ba8b515cedc40f5b3ee457b2e1abe110aba7575f51b286e723f37",
    },
    "DeepFashion2/EfficientNet-Lite0-CPU": {
        "file": "EfficientNet-Lite0-CPU.pth",
        "sha256": "129b1d65d37ca4920280d2bba6b5fc877730958b6afa4f0c499e99770e0c85ee",
    },
}

CONFIGS = {
    "DeepFashion2/Mini-CPU": "Mini-CPU.yaml",
    "DeepFashion2/EfficientNet-Lite0-CPU": "EfficientNet-Lite0-CPU.yaml",
    "DeepFashion2/mask_rcnn_landmarks_R_50_FPN_1x": "mask_rcnn_landmarks_R_50_FPN_1x.yaml",
    "DeepFashion2/mask_rcnn_landmarks_R_50_FPN_3x": "mask_rcnn_landmarks_R_50_FPN_3x.yaml",
    "DeepFashion2/mask_rcnn_landmarks_effnet_lite0_FPN_1x": (
        "mask_rcnn_landmarks_effnet_lite0_FPN_1x.yaml"
    ),
    # LazyConfigs (tools/lazyconfig_train_net.py): Detectron2's new baselines for the real data,
    # and the CPU demo recipe
    "DeepFashion2/lazy/EfficientNet_Lite0_CPU": "lazy/EfficientNet_Lite0_CPU.py",
    "DeepFashion2/lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ": (
        "lazy/mask_rcnn_landmarks_R_50_FPN_100ep_LSJ.py"
    ),
    "DeepFashion2/lazy/mask_rcnn_landmarks_R_50_FPN_400ep_LSJ": (
        "lazy/mask_rcnn_landmarks_R_50_FPN_400ep_LSJ.py"
    ),
    "DeepFashion2/lazy/mask_rcnn_landmarks_effnet_lite0_FPN_100ep_LSJ": (
        "lazy/mask_rcnn_landmarks_effnet_lite0_FPN_100ep_LSJ.py"
    ),
}
# the lazy form of a published model's recipe: its checkpoint loads into either
LAZY_CHECKPOINTS = {
    "DeepFashion2/lazy/EfficientNet_Lite0_CPU": "DeepFashion2/EfficientNet-Lite0-CPU"
}


def _config_dirs() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        os.path.join(here, "configs"),  # installed package (setup.py links configs/ here)
        os.path.normpath(os.path.join(here, "..", "..", "..", "configs")),  # source checkout
    ]


def _name(name: str) -> str:
    for ext in (".yaml", ".py"):
        name = name[: -len(ext)] if name.endswith(ext) else name
    return name if name.startswith("DeepFashion2/") else "DeepFashion2/" + name


def get_config_file(name: str) -> str:
    """Path of a model-zoo config, e.g. ``DeepFashion2/mask_rcnn_landmarks_R_50_FPN_1x``."""
    key = _name(name)
    if key not in CONFIGS:
        raise KeyError(f"{name!r} is not in the DeepFashion2 model zoo; known: {sorted(CONFIGS)}")
    for d in _config_dirs():
        path = os.path.join(d, CONFIGS[key])
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"config {CONFIGS[key]} not found in {_config_dirs()}")


def get_checkpoint_url(name: str) -> str:
    """``deepfashion2://<file>`` of a published checkpoint."""
    key = LAZY_CHECKPOINTS.get(_name(name), _name(name))
    if key not in CHECKPOINTS:
        published = sorted(CHECKPOINTS) or "none yet"
        raise KeyError(f"no published checkpoint for {name!r} (published: {published})")
    return "deepfashion2://" + CHECKPOINTS[key]["file"]


def get_config(name: str, trained: bool = False) -> CfgNode:
    """
    The config (with the DeepFashion2 keys); ``trained=True`` sets ``MODEL.WEIGHTS``. A lazy
    name (``lazy/...``) gives its LazyConfig (``trained``: ``train.init_checkpoint``), as
    ``detectron2.model_zoo.get_config`` does for ``.py`` configs.
    """
    path = get_config_file(name)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        lazy = LazyConfig.load(path)
        if trained:
            lazy.train.init_checkpoint = get_checkpoint_url(name)
        return lazy
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.merge_from_file(path)
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(name)
    return cfg


def get(name: str, trained: bool = False, device: str | None = None) -> torch.nn.Module:
    """A model built from the model-zoo config, with its published weights if ``trained``."""
    cfg = get_config(name, trained)
    if device is not None:
        cfg.MODEL.DEVICE = device
    elif not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return model
