"""
Model-zoo style access to DeepFashion2 configs and trained weights, like ``detectron2.model_zoo``:

    from deepfashion2 import model_zoo
    cfg = model_zoo.get_config("DeepFashion2/Mini-CPU", trained=True)
    model = model_zoo.get("DeepFashion2/Mini-CPU", trained=True)

Checkpoints are named ``deepfashion2://<file>``; the prefix resolves against
``$DEEPFASHION2_MODEL_ZOO_URL`` and the file is verified against a trusted sha256 (pinned in the
table below, or given by the user) every time it is used (see :mod:`.handler`).
"""

from .handler import ChecksumError, DeepFashion2Handler, ModelZooError, sha256_of
from .model_zoo import (
    CHECKPOINTS,
    get,
    get_checkpoint_url,
    get_config,
    get_config_file,
)

__all__ = [
    "CHECKPOINTS",
    "ChecksumError",
    "DeepFashion2Handler",
    "ModelZooError",
    "get",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "sha256_of",
]
