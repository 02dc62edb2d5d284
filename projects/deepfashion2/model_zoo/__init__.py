"""
Model-zoo style access to DeepFashion2 configs and trained weights, like ``detectron2.model_zoo``:

    from deepfashion2 import model_zoo
    cfg = model_zoo.get_config("DeepFashion2/Mini-CPU", trained=True)
    model = model_zoo.get("DeepFashion2/Mini-CPU", trained=True)

Checkpoints are named ``deepfashion2://<file>``; the prefix resolves against
``$DEEPFASHION2_MODEL_ZOO_URL`` (default: the project's release location) and the download is
verified against its sha256 before use (see :mod:`.handler`).
"""

from .handler import DEFAULT_BASE_URL, ChecksumError, DeepFashion2Handler, sha256_of
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
    "DEFAULT_BASE_URL",
    "DeepFashion2Handler",
    "get",
    "get_checkpoint_url",
    "get_config",
    "get_config_file",
    "sha256_of",
]
