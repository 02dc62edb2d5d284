"""DeepFashion2 benchmarks: one scoring core (numpy + pycocotools) and Detectron2 evaluators."""

from . import tables
from .detections import Detections, ResultFormatError
from .evaluator import DeepFashion2Evaluator, instances_to_detections
from .groundtruth import GroundTruth
from .scoring import TASKS, evaluate, evaluate_task, match_task, subsets

__all__ = [
    "DeepFashion2Evaluator",
    "tables",
    "instances_to_detections",
    "Detections",
    "GroundTruth",
    "ResultFormatError",
    "TASKS",
    "evaluate",
    "evaluate_task",
    "match_task",
    "subsets",
]
