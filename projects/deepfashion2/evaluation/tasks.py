"""
The benchmarks' tasks and their metrics, defined once: the evaluators, the tables, the trainer,
and the demo's report, figures and chance levels all read them here. Adding a metric is adding
its name to its task's ``metrics`` (and computing it where the task is scored); adding a task is
one :class:`Task` below plus its scoring (``docs/DESIGN.md`` shows the change a metric takes).
"""

from __future__ import annotations

from dataclasses import dataclass

AP_METRICS = ("AP", "AP50", "AP75")
TOPK = (1, 5, 10, 15, 20)
TOPK_METRICS = tuple(f"top{k}" for k in TOPK)
RETRIEVAL_TABLE = "Consumer-to-shop clothes retrieval"


@dataclass(frozen=True)
class Task:
    key: str  # the results key (Detectron2's "bbox", "segm", ...)
    label: str  # its headline in the demo's summary and tables
    short: str  # its name in a figure's legend
    table: str  # the dataset README's table it belongs to
    row: str  # what its rows say in that table: "(visible)", "detected boxes", ...
    metrics: tuple[str, ...]
    headline: tuple[str, ...]  # the metrics of the summary line
    max_dets: int = 0  # detections per image scored (pycocotools' maxDets); AP tasks only


# in the order of the dataset README's tables
TASKS = {
    t.key: t
    for t in (
        Task("bbox", "box AP", "detection", "Clothes detection", "", AP_METRICS, ("AP",), 100),
        Task("keypoints_vis", "landmark AP (visible)", "landmarks (visible)",
             "Landmark estimation", "(visible)", AP_METRICS, ("AP",), 20),
        Task("keypoints", "landmark AP (visible + occluded)", "landmarks (vis. + occ.)",
             "Landmark estimation", "(visible + occluded)", AP_METRICS, ("AP",), 20),
        Task("segm", "mask AP", "segmentation", "Clothes segmentation", "", AP_METRICS, ("AP",),
             100),
        Task("retrieval", "retrieval top-1 / top-20 (detected boxes)", "retrieval",
             RETRIEVAL_TABLE, "detected boxes", TOPK_METRICS, ("top1", "top20")),
        Task("retrieval_gt_boxes", "retrieval top-1 / top-20 (ground-truth boxes)",
             "retrieval (gt boxes)", RETRIEVAL_TABLE, "ground-truth boxes", TOPK_METRICS,
             ("top1", "top20")),
    )
}  # fmt: skip
# the tasks scored by AP (DeepFashion2Evaluator), in the order they are computed
AP_TASKS = ("bbox", "segm", "keypoints", "keypoints_vis")
RETRIEVAL_TASKS = tuple(k for k, t in TASKS.items() if t.table == RETRIEVAL_TABLE)


def model_tasks(mask_on: bool, keypoint_on: bool) -> tuple[str, ...]:
    """The AP tasks a model with these heads is scored in."""
    return (
        ("bbox",)
        + (("segm",) if mask_on else ())
        + (("keypoints", "keypoints_vis") if keypoint_on else ())
    )
