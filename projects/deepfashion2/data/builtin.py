"""
DatasetCatalog / MetadataCatalog registration of DeepFashion2 splits.

Builtin names (registered on ``import deepfashion2``):

- ``deepfashion2_{train,validation}``: ``$DETECTRON2_DATASETS/deepfashion2/<split>/{annos,image}``
- ``deepfashion2_test``: ``$DETECTRON2_DATASETS/deepfashion2/test/image`` (images only)
- ``deepfashion2_mini_{train,validation}``: the embedded synthetic set, generated on first use
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .. import landmarks as L
from .loader import load_deepfashion2, load_image_folder
from .synthetic import MINI_SPLITS, ensure_mini_split

EVALUATOR_TYPE = "deepfashion2"
_LENIENT = {"value": False}


def set_lenient(value: bool) -> None:
    """Lenient loading for the builtin real splits (``DEEPFASHION2.LENIENT``)."""
    _LENIENT["value"] = bool(value)


def deepfashion2_metadata() -> dict:
    """Metadata shared by every DeepFashion2 split (all read from the one landmark scheme)."""
    return {
        "thing_classes": list(L.CATEGORY_NAMES),
        "thing_dataset_id_to_contiguous_id": {c.id: c.contiguous_id for c in L.CATEGORIES},
        "keypoint_names": L.keypoint_names(),
        "keypoint_flip_map": L.keypoint_flip_map(),
        "keypoint_connection_rules": L.keypoint_connection_rules(),
        "keypoint_oks_sigmas": L.OKS_SIGMAS.tolist(),
        "landmark_slices": [(c.start, c.num_landmarks) for c in L.CATEGORIES],
        "evaluator_type": EVALUATOR_TYPE,
    }


def register_deepfashion2(
    name: str,
    anno_dir: str | None,
    image_dir: str,
    *,
    lenient: bool | None = None,
    cache_dir: str | None = None,
    **loader_kwargs,
) -> None:
    """
    Register a split under ``name``. ``anno_dir=None`` registers images only (the test split).
    The files are read lazily, when ``DatasetCatalog.get(name)`` is first called.
    ``lenient=None`` follows :func:`set_lenient` (the config's ``DEEPFASHION2.LENIENT``).
    """
    if anno_dir is None:
        DatasetCatalog.register(name, lambda: load_image_folder(image_dir))
    else:
        DatasetCatalog.register(
            name,
            lambda: load_deepfashion2(
                anno_dir,
                image_dir,
                lenient=_LENIENT["value"] if lenient is None else lenient,
                cache_dir=cache_dir,
                **loader_kwargs,
            ),
        )
    MetadataCatalog.get(name).set(anno_dir=anno_dir, image_dir=image_dir, **deepfashion2_metadata())


def _register_mini(name: str, split: str) -> None:
    def load() -> list[dict]:
        root = ensure_mini_split(split)
        return load_deepfashion2(os.path.join(root, "annos"), os.path.join(root, "image"))

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(synthetic=True, **deepfashion2_metadata())


def register_all_deepfashion2(root: str) -> None:
    for split in ("train", "validation"):
        d = os.path.join(root, "deepfashion2", split)
        register_deepfashion2(
            f"deepfashion2_{split}", os.path.join(d, "annos"), os.path.join(d, "image")
        )
    register_deepfashion2(
        "deepfashion2_test", None, os.path.join(root, "deepfashion2", "test", "image")
    )
    for split in MINI_SPLITS:
        _register_mini(f"deepfashion2_mini_{split}", split)


if "deepfashion2_train" not in DatasetCatalog.list():
    register_all_deepfashion2(os.getenv("DETECTRON2_DATASETS", "datasets"))
