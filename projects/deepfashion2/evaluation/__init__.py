"""DeepFashion2 benchmarks: one scoring core (numpy + pycocotools) and Detectron2 evaluators."""

from .detections import Detections, ResultFormatError
from .groundtruth import GroundTruth
from .scoring import TASKS, evaluate, evaluate_task, match_task, subsets

__all__ = [
    "Detections",
    "GroundTruth",
    "ResultFormatError",
    "TASKS",
    "evaluate",
    "evaluate_task",
    "match_task",
    "subsets",
]
