"""The demo's figures: per-subset AP bars, prediction drawings, a retrieval strip."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ...evaluation.tables import columns
from ...evaluation.tasks import AP_METRICS, TASKS
from ...utils.visualizer import draw_prediction, stack_rows

AP_TASKS_DRAWN = [k for k, t in TASKS.items() if t.metrics == AP_METRICS]


def plot_subset_ap(results: dict, path: str, chance: dict | None = None) -> None:
    """Grouped bars of AP (0-1) per column (12 subsets + overall), one colour per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = columns()
    tasks = [t for t in AP_TASKS_DRAWN if t in results]
    fig, ax = plt.subplots(figsize=(13, 4.2), dpi=100)
    width = 0.8 / max(len(tasks), 1)
    x = np.arange(len(cols))
    for i, t in enumerate(tasks):
        vals = [results[t].get("AP" + suffix) for _, suffix in cols]
        vals = [np.nan if v is None else v / 100 for v in vals]
        ax.bar(x + (i - (len(tasks) - 1) / 2) * width, vals, width, label=TASKS[t].short)
        if chance and t in chance and chance[t]["AP"] > 0.005:  # a line at 0 hides in the axis
            ax.axhline(chance[t]["AP"], color=f"C{i}", lw=0.8, ls=":")
    ax.set_xticks(x, [h.replace(" ", "\n", 1) for h, _ in cols], fontsize=8)
    ax.set_ylabel("AP")
    ax.set_ylim(0, 1)
    zero = chance and all(chance[t]["AP"] <= 0.005 for t in tasks if t in chance)
    ax.set_title("AP per subset" + (" (chance: ~0)" if zero else " (dotted: chance)"))
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def retrieval_strip_figure(submission, gt, files: dict[int, str], path: str, top: int = 5) -> bool:
    """
    The query with the most informative ranking (a hit within ``top`` if there is one) and its
    top ``top`` shop results, hits framed green. Returns False when nothing could be drawn.
    """
    from ...evaluation.retrieval import RetrievalGroundTruth, assign_representatives, gallery_hits
    from ...utils.visualizer import retrieval_strip

    sub = submission  # a Submission, as RetrievalEvaluator ranked it
    if not len(sub.query_image):
        return False
    rgt = RetrievalGroundTruth.from_groundtruth(gt)
    best, best_hits = None, -1
    # the entries that represent a query under the official protocol, and their results
    for q, s in enumerate(assign_representatives(sub, rgt).tolist()):
        if s < 0:
            continue
        found = gallery_hits(sub, rgt, s, q, top)
        hits = [bool(h) if sub.gallery_image[s, r] >= 0 else None for r, h in enumerate(found)]
        score = sum(bool(h) for h in hits) + (2 if hits[0] else 0)
        if score > best_hits:
            best, best_hits = (s, hits), score
    if best is None:
        return False
    s, hits = best
    results = [
        (Image.open(files[int(sub.gallery_image[s, r])]), sub.gallery_box[s, r], bool(hits[r]))
        for r in range(top)
        if hits[r] is not None
    ]
    query = Image.open(files[int(sub.query_image[s])])
    retrieval_strip(query, sub.query_box[s], results, legend=True).save(path)
    return True


def draw_predictions(
    cfg, dicts: list, out_dir: str, num: int = 4, scale: float = 3.0, score_thresh: float = 0.3
) -> list:
    """
    Drawings of the predictions of ``cfg`` (``MODEL.WEIGHTS`` set) on ``num`` images: detections
    above ``score_thresh``, one per place (class-agnostic NMS at IoU 0.5, so a weak model's
    competing categories for one garment do not pile up).
    """
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from torchvision.ops import nms

    os.makedirs(out_dir, exist_ok=True)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_thresh
    predictor = DefaultPredictor(cfg)
    paths = []
    for d in [d for d in dicts if d.get("annotations")][:num]:
        image = read_image(d["file_name"], format="BGR")
        inst = predictor(image)["instances"].to("cpu")
        inst = inst[nms(inst.pred_boxes.tensor, inst.scores, 0.5)]
        name = os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png"
        draw_prediction(image, inst, scale).save(os.path.join(out_dir, name))
        paths.append(os.path.join(out_dir, name))
    return paths


def draw_all(
    cfg, results: dict, chance: dict, dicts: list, output_dir: str, num: int, gt, submission
) -> dict:
    """Every figure of the demo; returns their paths relative to ``output_dir``. ``gt``: the
    split's ground truth, ``submission``: the retrieval evaluator's ranking (both in memory)."""
    ap01 = {t: {m: v / 100 for m, v in r.items()} for t, r in chance.items()}
    plot_subset_ap(results, os.path.join(output_dir, "subset_ap.png"), ap01)
    final = cfg.clone()
    final.defrost()
    final.MODEL.WEIGHTS = os.path.join(output_dir, "model_final.pth")
    drawings = draw_predictions(final, dicts, os.path.join(output_dir, "predictions"), num)
    strip = os.path.join(output_dir, "retrieval_strip.png")
    drawn = False
    if submission is not None:
        files = {d["image_id"]: d["file_name"] for d in dicts}
        drawn = retrieval_strip_figure(submission, gt, files, strip)
    overview(drawings, strip if drawn else None, os.path.join(output_dir, "overview.png"))
    return {
        "subset_ap": "subset_ap.png",
        "predictions": [os.path.relpath(p, output_dir) for p in drawings],
        "retrieval_strip": "retrieval_strip.png" if drawn else None,
        "overview": "overview.png",
    }


def overview(drawings: list[str], strip: str | None, path: str, height: int = 345) -> None:
    """The README's picture: the prediction drawings side by side, the retrieval strip below."""
    tiles = []
    for p in drawings:
        im = Image.open(p).convert("RGB")
        tiles.append(im.resize((max(1, round(im.width * height / im.height)), height)))
    rows = []
    if tiles:
        row = Image.new(
            "RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), height), "white"
        )
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 6
        rows.append(row)
    if strip:
        s = Image.open(strip).convert("RGB")
        width = rows[0].width if rows else s.width
        rows.append(s.resize((width, max(1, round(s.height * width / s.width)))))
    if rows:
        stack_rows(rows).save(path)
