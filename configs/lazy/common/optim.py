"""Optimizers of the DeepFashion2 LazyConfigs: Detectron2's SGD, and AdamW with per-parameter
gradient-norm clipping (the CPU recipe's ``SOLVER.OPTIMIZER: AdamW``, ``CLIP_GRADIENTS``)."""

from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver.build import get_default_optimizer_params

from deepfashion2.engine.optim import AdamWPerParameterClip

SGD = get_config("common/optim.py").SGD

AdamW = L(AdamWPerParameterClip)(
    # params.model is set to the model by tools/lazyconfig_train_net.py
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.001,
    weight_decay=1e-4,
    clip_value=5.0,
    norm_type=2.0,
    fused=True,
)
