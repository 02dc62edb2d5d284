"""DeepFashion2 for Detectron2: datasets, category-aware landmark head, evaluators, retrieval."""

from . import data, modeling  # noqa: F401  (registers datasets and heads)
from .config import add_deepfashion2_config
from .model_zoo import handler as _handler  # noqa: F401  (registers deepfashion2://)

__version__ = "0.1.0"
__all__ = ["add_deepfashion2_config"]
