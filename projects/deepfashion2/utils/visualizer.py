"""
Drawing DeepFashion2 predictions and ground truth with Detectron2's ``Visualizer``: boxes, masks
and each item's own landmarks joined by its category's skeleton (``keypoint_connection_rules`` of
the metadata). Landmarks outside an item's category are never drawn, whatever the model predicts
there.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.structures import BoxMode, Instances
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image, ImageDraw

from .. import landmarks as L

# Detectron2 draws keypoints whose score exceeds 0.05
_HIDDEN = -1.0


def category_keypoints(keypoints: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(R, 294, 3) with the score/visibility of every landmark outside the row's category hidden."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    own = L.LANDMARK_CATEGORY[None, :] == np.asarray(classes)[:, None]
    kp[..., 2] = np.where(own, kp[..., 2], _HIDDEN)
    return kp


class DeepFashion2Visualizer(Visualizer):
    """``Visualizer`` that draws only each item's own landmarks, for predictions and dicts."""

    def __init__(self, img_rgb, metadata=None, scale: float = 1.0):
        super().__init__(img_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)

    def draw_circle(self, circle_coord, color, radius=3):
        # Detectron2's landmark dots have a fixed 3-pixel radius: too large on small images
        h, w = self.output.height / self.output.scale, self.output.width / self.output.scale
        return super().draw_circle(
            circle_coord, color, radius=min(radius, max(1.0, 0.01 * max(h, w)))
        )

    def draw_instance_predictions(self, predictions: Instances):
        if predictions.has("pred_keypoints"):
            predictions = Instances(predictions.image_size, **predictions.get_fields())
            kp = predictions.pred_keypoints
            kp = kp.numpy() if isinstance(kp, torch.Tensor) else kp
            classes = predictions.pred_classes.numpy()
            predictions.pred_keypoints = torch.from_numpy(category_keypoints(kp, classes))
        return super().draw_instance_predictions(predictions)

    def draw_dataset_dict(self, dic: dict):
        """Ground truth of a DeepFashion2 dict (compact ``landmarks``)."""
        annos = dic.get("annotations", [])
        if not annos:
            return self.output
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
        classes = np.array([a["category_id"] for a in annos])
        names = self.metadata.get("thing_classes", L.CATEGORY_NAMES)
        labels = [names[c] for c in classes]
        masks = [[np.asarray(p).tolist() for p in a["segmentation"]] for a in annos]
        kp = np.stack([L.expand_landmarks(a["category_id"], a["landmarks"]) for a in annos])
        self.overlay_instances(
            labels=labels,
            boxes=boxes,
            masks=masks,
            keypoints=category_keypoints(kp, classes),
        )
        return self.output


def retrieval_strip(
    query: Image.Image,
    query_box,
    results: list[tuple[Image.Image, tuple, bool | None]],
    size: int = 96,
) -> Image.Image:
    """
    One row: the query crop (framed blue), then the ranked gallery crops, each framed green
    (correct), red (wrong) or grey (not known: a search outside a labelled split).
    ``results``: (shop image, XYXY box, correct) best first.
    """
    pad = 6
    strip = Image.new("RGB", ((size + pad) * (len(results) + 1) + pad, size + 2 * pad), "white")
    tiles = [(query, query_box, "query")] + list(results)
    colours = {"query": (40, 40, 200), True: (30, 170, 60), False: (210, 40, 40)}
    for k, (img, box, hit) in enumerate(tiles):
        crop = img.crop(tuple(int(round(v)) for v in box)).convert("RGB")
        f = (size - 8) / max(crop.width, crop.height, 1)  # fill the tile, up or down
        crop = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))))
        x = pad + k * (size + pad)
        ImageDraw.Draw(strip).rectangle(
            [x, pad, x + size - 1, pad + size - 1], outline=colours.get(hit, (150, 150, 150)),
            width=3,
        )  # fmt: skip
        strip.paste(crop, (x + (size - crop.width) // 2, pad + (size - crop.height) // 2))
    return strip


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    """Images one below the other, left-aligned, on white."""
    width = max((r.width for r in rows), default=1)
    out = Image.new("RGB", (width, max(1, sum(r.height for r in rows))), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out
