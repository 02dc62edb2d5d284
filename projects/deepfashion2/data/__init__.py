from . import builtin  # noqa: F401  (registers the builtin splits)
from .builtin import dataset_dicts, deepfashion2_metadata, register_deepfashion2
from .loader import load_deepfashion2, load_image_folder, load_split_store
from .mapper import DeepFashion2Mapper
from .parse import DeepFashion2FormatError, parse_annotation

__all__ = [
    "dataset_dicts",
    "DeepFashion2Mapper",
    "DeepFashion2FormatError",
    "deepfashion2_metadata",
    "load_deepfashion2",
    "load_image_folder",
    "load_split_store",
    "parse_annotation",
    "register_deepfashion2",
]
