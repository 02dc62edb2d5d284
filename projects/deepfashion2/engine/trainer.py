"""``DefaultTrainer`` with the DeepFashion2 mapper and evaluators."""

from __future__ import annotations

import logging
import os

import orjson
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..data.coco_export import dicts_to_coco
from ..data.mapper import DeepFashion2Mapper
from . import launch as _launch  # noqa: F401  (CPU-safe create_ddp_model)


def ensure_coco_json(dataset_name: str, output_dir: str) -> str:
    """
    The split's ground truth as COCO-style JSON (official converter conventions), written once and
    recorded as ``json_file`` in its metadata, for evaluators built on pycocotools.
    """
    meta = MetadataCatalog.get(dataset_name)
    if hasattr(meta, "json_file"):
        return meta.json_file
    path = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(dicts_to_coco(DatasetCatalog.get(dataset_name))))
        os.replace(tmp, path)
    comm.synchronize()
    meta.set(json_file=path)
    return path


def build_train_dataset_dicts(cfg) -> list[dict]:
    """
    ``get_detection_dataset_dicts`` as the stock loader calls it, except the minimum-keypoints
    filter, which counts the stock ``keypoints`` field and would drop every image with compact
    ``landmarks``; it is applied here on the compact landmarks instead.
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    min_landmarks = (
        cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
    )
    if min_landmarks > 0:
        before = len(dicts)
        dicts = [d for d in dicts if labelled_landmarks(d) >= min_landmarks]
        logging.getLogger(__name__).info(
            f"Removed {before - len(dicts)} images with fewer than {min_landmarks} landmarks."
        )
    return dicts


def labelled_landmarks(record: dict) -> int:
    return int(sum((a["landmarks"][:, 2] > 0).sum() for a in record.get("annotations", ())))


class Trainer(DefaultTrainer):
    # Detectron2 v0.6 checkpoints only the iteration and the scheduler: the optimizer state (SGD
    # momentum) is lost on --resume. Save and restore the inner trainer's state like Detectron2's
    # main branch does (DefaultTrainer.state_dict / load_state_dict with "_trainer").
    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(
            cfg,
            mapper=DeepFashion2Mapper(cfg, is_train=True),
            dataset=build_train_dataset_dicts(cfg),
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=DeepFashion2Mapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        ensure_coco_json(dataset_name, output_folder)
        # The stock tool passes no OKS sigmas, and COCOeval's 17 COCO sigmas cannot score 294
        # landmarks: use the config's, else the dataset's own (the official DeepFashion2 ones).
        sigmas = cfg.TEST.KEYPOINT_OKS_SIGMAS or MetadataCatalog.get(dataset_name).get(
            "keypoint_oks_sigmas", ()
        )
        tasks = ("bbox",) + (("segm",) if cfg.MODEL.MASK_ON else ())
        tasks += ("keypoints",) if cfg.MODEL.KEYPOINT_ON else ()
        return COCOEvaluator(
            dataset_name,
            tasks=tasks,
            distributed=True,
            output_dir=output_folder,
            kpt_oks_sigmas=sigmas,
        )
