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
# one colour per item (box, mask, skeleton): distinct, and dark enough for white labels
PALETTE = [
    (0.90, 0.10, 0.29), (0.24, 0.71, 0.29), (0.26, 0.39, 0.85), (0.96, 0.51, 0.19),
    (0.57, 0.12, 0.71), (0.27, 0.60, 0.56), (0.94, 0.20, 0.90), (0.60, 0.39, 0.14),
]  # fmt: skip


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
        self.placed_labels: list[tuple[float, float, float, float]] = []  # x, y, width, height

    def draw_text(self, text, position, *, font_size=None, **kwargs):
        """Detectron2's text, moved down below any label already drawn where it would overlap
        (garments overlap, and so would their labels at the boxes' corners)."""
        size = font_size or 10.0
        x, y = position
        w, h = 0.6 * size * len(str(text)), 1.5 * size  # image pixels, as Detectron2 sizes text
        while any(
            x < px + pw and px < x + w and y < py + ph and py < y + h
            for px, py, pw, ph in self.placed_labels
        ):
            y += h
        self.placed_labels.append((x, y, w, h))
        return super().draw_text(text, (x, y), font_size=font_size, **kwargs)

    def draw_circle(self, circle_coord, color, radius=3):
        # Detectron2's landmark dots have a fixed 3-pixel radius: too large on small images
        h, w = self.output.height / self.output.scale, self.output.width / self.output.scale
        return super().draw_circle(
            circle_coord, color, radius=min(radius, max(1.0, 0.01 * max(h, w)))
        )

    def overlay_instances(self, *, keypoints=None, assigned_colors=None, **kwargs):
        """
        Detectron2's drawing, with one colour per item for its box, mask *and* skeleton (Detectron2
        draws every skeleton in the colours of the metadata's rules, the same for every item).
        """
        given = [kwargs.get(k) for k in ("boxes", "labels", "masks")] + [keypoints]
        n = max((len(v) for v in given if v is not None), default=0)
        if assigned_colors is None:
            assigned_colors = [PALETTE[i % len(PALETTE)] for i in range(n)]
        out = super().overlay_instances(assigned_colors=assigned_colors, **kwargs)
        if keypoints is not None:
            kp = keypoints.numpy() if isinstance(keypoints, torch.Tensor) else keypoints
            for k, colour in zip(np.asarray(kp), assigned_colors):
                self._draw_skeleton(k, colour)
        return out

    def _draw_skeleton(self, keypoints: np.ndarray, colour) -> None:
        """One item's landmarks (score > 0.05, as Detectron2's threshold) and skeleton lines."""
        names = self.metadata.get("keypoint_names") or L.keypoint_names()
        index = {n: i for i, n in enumerate(names)}
        seen = keypoints[:, 2] > 0.05
        for a, b, _ in self.metadata.get("keypoint_connection_rules") or []:
            i, j = index.get(a), index.get(b)
            if i is not None and j is not None and seen[i] and seen[j]:
                self.draw_line(keypoints[[i, j], 0], keypoints[[i, j], 1], color=colour)
        for x, y in keypoints[seen, :2]:
            self.draw_circle((x, y), color=colour)

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
    legend: bool = False,
) -> Image.Image:
    """
    One row: the query crop (framed blue), then the ranked gallery crops, each framed green
    (correct), red (wrong) or grey (not known: a search outside a labelled split).
    ``results``: (shop image, XYXY box, correct) best first. ``legend``: a line below saying so.
    """
    pad = 6
    width = (size + pad) * (len(results) + 1) + pad
    strip = Image.new("RGB", (max(width, 420 if legend else 0), size + 2 * pad), "white")
    tiles = [(query, query_box, "query")] + list(results)
    colours = {"query": (40, 40, 200), True: (30, 170, 60), False: (210, 40, 40)}
    for k, (img, box, hit) in enumerate(tiles):
        crop = img.crop(tuple(int(round(v)) for v in box)).convert("RGB")
        f = (size - 8) / max(crop.width, crop.height, 1)  # fill the tile, up or down
        crop = crop.resize((max(1, round(crop.width * f)), max(1, round(crop.height * f))))
        x = pad + k * (size + pad)
        ImageDraw.Draw(strip).rectangle(
            [x, pad, x + size - 1, pad + size - 1],
            outline=colours.get(hit, (150, 150, 150)),
            width=3,
        )
        strip.paste(crop, (x + (size - crop.width) // 2, pad + (size - crop.height) // 2))
    if not legend:
        return strip
    known = {hit for _, _, hit in results}
    words = [("query", colours["query"]), ("results, best first:", (90, 90, 90))]
    words += [
        (w, colours[k]) for k, w in ((True, "same garment"), (False, "another")) if k in known
    ]
    if None in known:
        words.append(("not labelled", (150, 150, 150)))
    return stack_rows([strip, _legend(words, strip.width)])


def _legend(words: list[tuple[str, tuple]], width: int, height: int = 18) -> Image.Image:
    """A line of coloured words (the frame colours of :func:`retrieval_strip`)."""
    line = Image.new("RGB", (width, height), "white")
    draw, x = ImageDraw.Draw(line), 6
    for text, colour in words:
        draw.text((x, 3), text, fill=colour)
        x += int(draw.textlength(text)) + 12
    return line


def no_garment(photo: Image.Image, side: int = 240) -> Image.Image:
    """A searched photo in which no garment was found: the photo, with a note below."""
    im = photo.convert("RGB")
    im = im.resize(
        (
            max(1, round(im.width * side / max(im.size))),
            max(1, round(im.height * side / max(im.size))),
        )
    )
    note = _legend([("no garment found", (90, 90, 90))], max(im.width, 140))
    return stack_rows([im, note])


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    """Images one below the other, left-aligned, on white."""
    width = max((r.width for r in rows), default=1)
    out = Image.new("RGB", (width, max(1, sum(r.height for r in rows))), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def draw_prediction(image_bgr: np.ndarray, instances: Instances, scale: float = 1.0):
    """A model's ``instances`` on its (H, W, 3) BGR input image: Detectron2's ``VisImage``."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get("deepfashion2_drawing")
    if not meta.get("thing_classes"):
        meta.set(**L.detectron2_metadata())
    vis = DeepFashion2Visualizer(image_bgr[:, :, ::-1], meta, scale=scale)
    return vis.draw_instance_predictions(instances.to("cpu"))
