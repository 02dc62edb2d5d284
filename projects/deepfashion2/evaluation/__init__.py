"""DeepFashion2 benchmarks: one scoring core (numpy + pycocotools) and Detectron2 evaluators."""

from . import tables
from .detections import Detections, ResultFormatError
from .evaluator import DeepFashion2Evaluator, instances_to_detections
from .gallery import GalleryIndex
from .groundtruth import GroundTruth
from .retrieval import RetrievalGroundTruth, Submission, rank, score_submission
from .retrieval_evaluator import GroundTruthBoxInference, RetrievalEvaluator
from .scoring import TASKS, evaluate, evaluate_task, match_task, subsets

__all__ = [
    "GalleryIndex",
    "GroundTruthBoxInference",
    "RetrievalEvaluator",
    "RetrievalGroundTruth",
    "Submission",
    "rank",
    "score_submission",
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
