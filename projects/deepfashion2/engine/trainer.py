"""``DefaultTrainer`` with the DeepFashion2 mapper and evaluators."""

from __future__ import annotations

import functools
import itertools
import logging
import os

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data.build import (
    check_metadata_consistency,
    filter_images_with_only_crowd_annotations,
    load_proposals_into_dataset,
    print_instances_class_histogram,
)
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.utils import comm

from .. import compat
from ..data import dataset_dicts
from ..data.mapper import DeepFashion2Mapper
from ..data.samplers import PairTrainingSampler
from ..evaluation import (
    DeepFashion2Evaluator,
    GroundTruthBoxInference,
    RetrievalEvaluator,
    tables,
)
from ..evaluation.groundtruth import split_ground_truth
from ..evaluation.tasks import model_tasks
from ..modeling import DeepFashion2RCNNWithTTA
from .checkpoint import DeepFashion2Checkpointer
from .optim import build_adamw


def build_train_dataset_dicts(cfg) -> list[dict]:
    """
    ``get_detection_dataset_dicts`` as the stock loader calls it, with two differences: each
    DeepFashion2 split is loaded with the config's options (:func:`dataset_dicts`:
    ``DEEPFASHION2.LENIENT``, ``CACHE``), and the minimum-landmarks filter counts the compact
    ``landmarks`` (the stock one counts ``keypoints`` and would drop every image).
    """
    names = cfg.DATASETS.TRAIN
    per_name = [dataset_dicts(n, cfg) for n in names]
    for name, dicts in zip(names, per_name):
        if not dicts:
            raise ValueError(f"Dataset '{name}' is empty!")
    if cfg.MODEL.LOAD_PROPOSALS:
        per_name = [
            load_proposals_into_dataset(d, f)
            for d, f in zip(per_name, cfg.DATASETS.PROPOSAL_FILES_TRAIN)
        ]
    dicts = list(itertools.chain.from_iterable(per_name))
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    min_landmarks = (
        cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
    )
    if min_landmarks > 0:
        before = len(dicts)
        dicts = [d for d in dicts if labelled_landmarks(d) >= min_landmarks]
        logging.getLogger(__name__).info(
            f"Removed {before - len(dicts)} images with fewer than {min_landmarks} landmarks."
        )
    thing_classes = MetadataCatalog.get(names[0]).get("thing_classes")
    if thing_classes is not None:
        check_metadata_consistency("thing_classes", names)
        print_instances_class_histogram(dicts, thing_classes)
    if not dicts:
        raise ValueError(f"No valid data found in {','.join(names)}.")
    return dicts


_SAID: set[str] = set()  # splits whose skipped retrieval this process has already reported


def retrieval_possible(dataset_name: str, cfg) -> bool:
    """
    Consumer-to-shop retrieval needs consumer and shop photos: a split without one or the other
    (a folder of consumer photos) skips it, saying so once, instead of scoring zeros after a
    second inference pass. A split without sources (the test split) keeps it (a submission).
    """
    sources = {d.get("source") for d in dataset_dicts(dataset_name, cfg)}
    missing = [s for s in ("user", "shop") if s not in sources]
    if None in sources or not missing:
        return True
    if dataset_name not in _SAID:
        _SAID.add(dataset_name)
        logging.getLogger(__name__).warning(
            f"{dataset_name} has no {' or '.join(missing)} photos: consumer-to-shop retrieval is "
            "not evaluated on it"
        )
    return False


def labelled_landmarks(record: dict) -> int:
    return int(sum((a["landmarks"][:, 2] > 0).sum() for a in record.get("annotations", ())))


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` with the DeepFashion2 mapper, training set, pair sampler and evaluators, and
    the Detectron2 back-ports of :mod:`deepfashion2.compat` (applied here, where training starts).
    """

    def __init__(self, cfg):
        compat.apply_backports()
        with compat.cpu_ddp():
            super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ creates a DetectionCheckpointer just before this call; the hooks
        # (periodic checkpoints) and resume_or_load use ours: atomic writes, safe --resume
        old = self.checkpointer
        self.checkpointer = DeepFashion2Checkpointer(old.model, old.save_dir, **old.checkpointables)
        built = super().build_hooks()
        keep = self.cfg.SOLVER.CHECKPOINTS_TO_KEEP
        # fvcore's checkpointer removes the older periodic files (model_final stays)
        for h in built:
            if isinstance(h, hooks.PeriodicCheckpointer) and keep > 0:
                h.max_to_keep = keep
        return built

    # Detectron2 v0.6 checkpoints only the iteration and the scheduler: the optimizer state (SGD
    # momentum) is lost on --resume. Save and restore the inner trainer's state as the main
    # branch's DefaultTrainer does (``"_trainer"``).
    def state_dict(self):
        ret = super().state_dict()
        ret.setdefault("_trainer", self._trainer.state_dict())
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict and not compat.trainer_saves_optimizer():
            self._trainer.load_state_dict(state_dict["_trainer"])

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD, or AdamW (``SOLVER.OPTIMIZER``) with the same parameter groups."""
        if cfg.SOLVER.OPTIMIZER == "SGD":
            return super().build_optimizer(cfg, model)
        if cfg.SOLVER.OPTIMIZER != "AdamW":
            raise ValueError(f"SOLVER.OPTIMIZER: {cfg.SOLVER.OPTIMIZER!r} (SGD or AdamW)")
        return build_adamw(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = DeepFashion2Mapper(cfg, is_train=True)
        dicts = build_train_dataset_dicts(cfg)
        if not (cfg.MODEL.MATCH_ON and cfg.DEEPFASHION2.PAIR_SAMPLER):
            return build_detection_train_loader(cfg, mapper=mapper, dataset=dicts)
        # the matching loss needs consumer/shop pairs inside each process's batch: blocks of
        # the pair sampler are batches, so no aspect-ratio regrouping
        per_process = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        sampler = PairTrainingSampler(dicts, per_process)
        logging.getLogger(__name__).info(
            f"Pair sampling: {sampler.num_pairable_images} of {len(dicts)} images have a "
            "consumer/shop partner."
        )
        return build_detection_train_loader(
            dataset=dicts,
            mapper=mapper,
            sampler=sampler,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            dataset=dataset_dicts(dataset_name, cfg),
            mapper=DeepFashion2Mapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        meta = MetadataCatalog.get(dataset_name)
        if meta.get("evaluator_type") == "deepfashion2":
            tasks = model_tasks(cfg.MODEL.MASK_ON, cfg.MODEL.KEYPOINT_ON)
            load = {"load_dicts": functools.partial(dataset_dicts, dataset_name, cfg)}
            if meta.get("annotated"):  # one ground truth per split, shared (split_ground_truth)
                load = {"load_gt": functools.partial(split_ground_truth, dataset_name, cfg)}
            evaluator = DeepFashion2Evaluator(
                dataset_name,
                output_folder,
                tasks=tasks,
                kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
                **load,
            )
            if not cfg.MODEL.MATCH_ON or not retrieval_possible(dataset_name, cfg):
                return evaluator
            retrieval = RetrievalEvaluator.from_config(cfg, dataset_name, output_folder, **load)
            return DatasetEvaluators([evaluator, retrieval])
        # other datasets: the stock evaluator, given the config's OKS sigmas (the stock tool
        # does not pass them)
        return COCOEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
        )

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """
        :meth:`test` again with test-time augmentation (``TEST.AUG``: flips and scales, every
        task, :class:`DeepFashion2RCNNWithTTA`); tables and result files go to
        ``<OUTPUT_DIR>/inference_TTA``, and every result key gains ``_TTA`` (``bbox_TTA``, ...).
        """
        logging.getLogger(__name__).info("Running inference with test-time augmentation ...")
        tta = DeepFashion2RCNNWithTTA(cfg, model)
        res = cls.test(cfg, tta, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
        if len(cfg.DATASETS.TEST) > 1:
            return {n: {k + "_TTA": v for k, v in r.items()} for n, r in res.items()}
        return {k + "_TTA": v for k, v in res.items()}

    @classmethod
    def test(
        cls,
        cfg,
        model,
        evaluators=None,
        output_folder: str | None = None,
        built: list | None = None,
    ):
        """
        The stock test, plus (matching head on, builtin evaluators) the ground-truth-box retrieval
        variant, and all tables of a split saved together as ``deepfashion2_tables.md`` in
        ``output_folder`` (default ``<OUTPUT_DIR>/inference``). ``built``: receives the builtin
        evaluators, whose state (the retrieval ranking) a caller may use after.
        """
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        builtin = evaluators is None
        if builtin:
            evaluators = [cls.build_evaluator(cfg, n, output_folder) for n in cfg.DATASETS.TEST]
            if built is not None:
                for e in evaluators:  # DatasetEvaluators holds a list of them
                    built.extend(getattr(e, "_evaluators", [e]))
        results = super().test(cfg, model, evaluators)
        if not builtin or not cfg.DATASETS.TEST:
            return results
        per_dataset = results if len(cfg.DATASETS.TEST) > 1 else {cfg.DATASETS.TEST[0]: results}
        for name in cfg.DATASETS.TEST:
            if MetadataCatalog.get(name).get("evaluator_type") != "deepfashion2":
                continue
            res = per_dataset.get(name)
            if res is None:
                continue
            annotated = MetadataCatalog.get(name).annotated  # set by every registration of ours
            gt_boxes = cfg.MODEL.MATCH_ON and cfg.DEEPFASHION2.RETRIEVAL.GT_BOXES and annotated
            if gt_boxes and retrieval_possible(name, cfg):
                load = functools.partial(split_ground_truth, name, cfg)
                evaluator = RetrievalEvaluator.from_config(
                    cfg, name, output_folder, gt_boxes=True, load_gt=load
                )
                res.update(
                    inference_on_dataset(
                        GroundTruthBoxInference(model, name, load()),
                        cls.build_test_loader(cfg, name),
                        evaluator,
                    )
                )
            if comm.is_main_process() and res:  # each evaluator has printed its own table
                tables.save(res, output_folder)
        return results
