"""
DatasetCatalog / MetadataCatalog registration of DeepFashion2 splits.

Builtin names (registered on ``import deepfashion2``):

- ``deepfashion2_{train,validation}``: ``$DETECTRON2_DATASETS/deepfashion2/<split>/{annos,image}``
- ``deepfashion2_test``: ``$DETECTRON2_DATASETS/deepfashion2/test/image`` (images only)
- ``deepfashion2_mini_{train,validation}``: the embedded synthetic set, generated on first use
"""

from __future__ import annotations

import os
from typing import Callable

from detectron2.data import DatasetCatalog, MetadataCatalog

from .. import landmarks as L
from .loader import load_image_folder, load_split_store
from .store import SplitStore
from .synthetic import MINI_SPLITS, ensure_mini_split

EVALUATOR_TYPE = "deepfashion2"


def deepfashion2_metadata() -> dict:
    """Metadata shared by every DeepFashion2 split (all read from the one landmark scheme)."""
    return {**L.detectron2_metadata(), "evaluator_type": EVALUATOR_TYPE}


class SplitLoader:
    """
    The callable registered in ``DatasetCatalog`` for a DeepFashion2 split: the registration's
    options by default (what ``DatasetCatalog.get`` gives); :func:`dataset_dicts` passes a
    config's options instead. ``anno_dir`` may be a callable giving the split folder (generated
    on first use). A split is read once per process and options (:meth:`loaded`): a registration
    is a promise that its folder does not change while it is in use.
    """

    def __init__(
        self, anno_dir: str | Callable[[], str], image_dir: str | None, lenient: bool, **kwargs
    ):
        self.anno_dir, self.image_dir, self.lenient = anno_dir, image_dir, lenient
        self.kwargs = kwargs
        self._loaded: dict[tuple, Loaded] = {}

    def __call__(self, *, lenient: bool | None = None, use_cache: bool | None = None) -> list[dict]:
        return list(self.loaded(lenient=lenient, use_cache=use_cache).dicts)

    def loaded(self, *, lenient: bool | None = None, use_cache: bool | None = None) -> "Loaded":
        """The split with these options: its store, dicts and derived data, made once."""
        lenient = self.lenient if lenient is None else lenient
        key = (lenient, use_cache)
        if key not in self._loaded:
            if callable(self.anno_dir):
                root = self.anno_dir()
                annos, images = os.path.join(root, "annos"), os.path.join(root, "image")
            else:
                annos, images = self.anno_dir, self.image_dir
            store = load_split_store(
                annos, images, lenient=lenient, use_cache=use_cache, **self.kwargs
            )
            self._loaded[key] = Loaded(store, images, self.kwargs.get("image_ext", ".jpg"))
        return self._loaded[key]


class Loaded:
    """A loaded split: its columnar store, its dicts (made on first use), derived data by name
    (``derived``: the evaluation's ground truth, ...)."""

    def __init__(self, store: SplitStore, image_dir: str, image_ext: str):
        self.store, self._image_dir, self._image_ext = store, image_dir, image_ext
        self._dicts: list[dict] | None = None
        self.derived: dict = {}

    @property
    def dicts(self) -> list[dict]:
        if self._dicts is None:
            self._dicts = self.store.to_dicts(self._image_dir, self._image_ext)
        return self._dicts


def split_loaded(name: str, cfg=None) -> Loaded:
    """
    A registered DeepFashion2 split as :func:`dataset_dicts` loads it (the config's options, or
    the registration's): its store, dicts and derived data, made once per process.
    """
    func = DatasetCatalog[name] if name in DatasetCatalog.list() else None
    if not isinstance(func, SplitLoader):
        raise KeyError(f"{name} is not a registered DeepFashion2 split with annotations")
    if cfg is None:
        return func.loaded()
    d2 = cfg.DEEPFASHION2
    return func.loaded(lenient=d2.LENIENT, use_cache=None if d2.CACHE else False)


def dataset_dicts(name: str, cfg=None) -> list[dict]:
    """
    The dicts of a registered dataset. A DeepFashion2 split is loaded with the config's options
    (``DEEPFASHION2.LENIENT``, ``DEEPFASHION2.CACHE``: off, or on unless ``$DF2_CACHE=0``); other
    datasets come from ``DatasetCatalog`` as registered. Every entry point that builds data from a
    config (trainer, evaluators, demo) loads through here. The list is new; its dicts are the
    split's, shared (Detectron2's loaders copy what they change).
    """
    func = DatasetCatalog[name] if name in DatasetCatalog.list() else None
    if cfg is not None and isinstance(func, SplitLoader):
        return list(split_loaded(name, cfg).dicts)
    return DatasetCatalog.get(name)


def register_deepfashion2(
    name: str,
    anno_dir: str | None,
    image_dir: str,
    *,
    lenient: bool = False,
    cache_dir: str | None = None,
    **loader_kwargs,
) -> None:
    """
    Register a split under ``name``. ``anno_dir=None`` registers images only (the test split).
    The files are read lazily, when the dicts are first asked for; ``lenient`` is the default of
    ``DatasetCatalog.get(name)``, and a config's ``DEEPFASHION2.LENIENT`` overrides it wherever the
    data is built from the config (:func:`dataset_dicts`).
    """
    if anno_dir is None:
        DatasetCatalog.register(name, lambda: load_image_folder(image_dir))
    else:
        DatasetCatalog.register(
            name, SplitLoader(anno_dir, image_dir, lenient, cache_dir=cache_dir, **loader_kwargs)
        )
    MetadataCatalog.get(name).set(
        anno_dir=anno_dir,
        image_dir=image_dir,
        annotated=anno_dir is not None,
        **deepfashion2_metadata(),
    )


def _register_mini(name: str, split: str) -> None:
    DatasetCatalog.register(name, SplitLoader(lambda: ensure_mini_split(split), None, False))
    MetadataCatalog.get(name).set(synthetic=True, annotated=True, **deepfashion2_metadata())


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
