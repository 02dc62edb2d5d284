"""
Test-time augmentation (flips, scales) for all four DeepFashion2 tasks, on Detectron2 v0.6 and
main. Detectron2's ``GeneralizedRCNNWithTTA`` refuses keypoint models: a flipped image swaps left
and right landmarks, and here the swap differs for each of the 13 categories. This wrapper keeps
Detectron2's augmentation (``DatasetMapperTTA``: ``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``),
its box merging and its mask averaging, and adds:

- landmarks: the category-gated head runs on the merged boxes in every augmented input; a flipped
  input's heatmaps are flipped back in space and their channels permuted by the flip pairs of the
  box's own category (only that category's channels exist), then the heatmaps of all inputs are
  averaged (as probabilities: :func:`average_heatmaps`) and decoded once (decoded coordinates
  are never averaged). They are decoded in the
  first augmented input's frame and scaled to the image, as the plain model decodes them in its
  input's frame: with one augmented input at the test size, TTA gives the plain model's output;
- embeddings (the matching head): averaged over the augmented inputs and L2-normalised again;
- the ground-truth-box path (``inference(..., detected_instances=...)``), which the retrieval
  variant with annotated boxes uses: the given boxes run through every augmented input.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, heatmaps_to_keypoints
from torch import nn
from torch.nn import functional as F

from .. import landmarks as L


def category_flip_permutation(category: int) -> torch.Tensor:
    """(K_c,) for 0-based ``category``: the channel that holds landmark k after a flip."""
    c = L.CATEGORIES[category]
    return torch.as_tensor(L.flip_indices_294()[c.landmark_slice] - c.start, dtype=torch.long)


def unflip_heatmaps(logits: torch.Tensor, category: int) -> torch.Tensor:
    """(n, K_c, S, S) heatmaps of a flipped input -> the unflipped image's (space and channels)."""
    return logits.flip(dims=[3])[:, category_flip_permutation(category)]


def average_heatmaps(logits: list[torch.Tensor]) -> torch.Tensor:
    """
    Heatmap logits (n, K, S, S) of several inputs -> one map of logits for Detectron2's decoder.
    The head's logits are those of a spatial softmax; their probabilities are averaged (as flip
    testing averages heatmaps) and returned as log-probabilities: two slightly shifted sharp
    peaks keep a peak, where averaging logits would multiply them away. For one input this is
    its logits less a constant per map: the same decoded landmarks and scores.
    """
    n, k, s, _ = logits[0].shape
    probs = torch.stack([F.softmax(lg.reshape(n, k, s * s), dim=2) for lg in logits]).mean(0)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log().reshape(n, k, s, s)


def tta_passes(cfg) -> int:
    """Forward passes per image that test-time augmentation makes (sizes x flips)."""
    return len(cfg.TEST.AUG.MIN_SIZES) * (2 if cfg.TEST.AUG.FLIP else 1)


def with_tta(cfg, model: nn.Module) -> nn.Module:
    """``model`` wrapped in :class:`DeepFashion2RCNNWithTTA` when ``TEST.AUG.ENABLED``."""
    return DeepFashion2RCNNWithTTA(cfg, model) if cfg.TEST.AUG.ENABLED else model


def _flipped(tfm) -> bool:
    return any(isinstance(t, HFlipTransform) for t in tfm.transforms)


class DeepFashion2RCNNWithTTA(GeneralizedRCNNWithTTA):
    """
    ``GeneralizedRCNNWithTTA`` for the project's model: box, mask, category-gated landmarks and
    the matching embedding. Same interface as ``GeneralizedRCNN.forward``, plus ``inference``
    with ``detected_instances``.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 3):
        # Detectron2's __init__ asserts that the model has no keypoint head; the same set-up
        # without that assertion
        cfg = cfg.clone()
        cfg.defrost()
        keypoint_on, cfg.MODEL.KEYPOINT_ON = cfg.MODEL.KEYPOINT_ON, False
        super().__init__(cfg, model, tta_mapper, batch_size)
        self.cfg.MODEL.KEYPOINT_ON = keypoint_on

    @property
    def device(self) -> torch.device:
        return self.model.device

    def inference(self, batched_inputs, detected_instances=None, do_postprocess: bool = True):
        """``GeneralizedRCNN.inference``; given boxes are in each input's ``image`` frame."""
        assert do_postprocess, "TTA outputs are in the original image's frame"
        if detected_instances is None:
            return self(batched_inputs)
        return [
            self._inference_one_image(self._read(x), given)
            for x, given in zip(batched_inputs, detected_instances)
        ]

    def __call__(self, batched_inputs):
        return [self._inference_one_image(self._read(x)) for x in batched_inputs]

    def _read(self, dataset_dict: dict) -> dict:
        """The input with its ``image`` (read as Detectron2's ``__call__`` reads it)."""
        ret = copy.copy(dataset_dict)
        if "image" not in ret:
            image = read_image(ret.pop("file_name"), self.model.input_format)
            ret["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            ret.setdefault("height", image.shape[0])
            ret.setdefault("width", image.shape[1])
        return ret

    def _inference_one_image(self, input: dict, given: Instances | None = None) -> dict:
        orig_shape = (input["height"], input["width"])
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        if given is None:
            with self._turn_off_roi_heads(["mask_on", "keypoint_on", "match_on"]):
                boxes, scores, classes = self._get_augmented_boxes(augmented_inputs, tfms)
            merged = self._merge_detections(boxes, scores, classes, orig_shape)
        else:
            merged = _to_original_frame(given, input, orig_shape)
        augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
        outputs, heatmaps = self._heads_on_boxes(augmented_inputs, augmented_instances)
        if self.cfg.MODEL.MASK_ON:
            merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        if self.cfg.MODEL.KEYPOINT_ON:
            merged.pred_keypoints = self._reduce_keypoints(
                heatmaps, tfms, augmented_instances[0], orig_shape
            )
        if outputs and outputs[0].has("pred_embeddings"):
            emb = torch.stack([o.pred_embeddings for o in outputs]).mean(0)
            merged.pred_embeddings = F.normalize(emb, dim=1)
        return {"instances": detector_postprocess(merged, *orig_shape)}

    def _heads_on_boxes(self, inputs: list[dict], instances: list[Instances]):
        """
        Masks and embeddings (the heads' own inference, ``forward_with_given_boxes``) and the
        landmark heatmaps (per input, category -> ((n_c,) rows, (n_c, K_c, S, S))) on every
        augmented input, in one batch (as Detectron2's ``GeneralizedRCNNWithTTA`` runs them).
        """
        model, roi = self.model, self.model.roi_heads
        heatmaps: list[dict] = [{} for _ in inputs]
        with torch.no_grad():
            images = model.preprocess_image(inputs)
            features = model.backbone(images.tensor)
            with self._turn_off_roi_heads(["keypoint_on"]):
                outputs = roi.forward_with_given_boxes(features, instances)
            if self.cfg.MODEL.KEYPOINT_ON:
                feats = [features[f] for f in roi.keypoint_in_features]
                pooled = roi.keypoint_pooler(feats, [i.pred_boxes for i in instances])
                starts = [0]
                for inst in instances:
                    starts.append(starts[-1] + len(inst))
                for c, rows, lg in roi.keypoint_head.heatmaps(pooled, instances):
                    which = torch.bucketize(rows, torch.tensor(starts[1:-1]), right=True)
                    for k in which.unique().tolist():
                        sel = which == k
                        heatmaps[k][c] = (rows[sel] - starts[k], lg[sel])
        return outputs, heatmaps

    def _reduce_keypoints(self, heatmaps, tfms, reference: Instances, orig_shape) -> torch.Tensor:
        """
        (R, 294, 3) landmarks of the merged boxes in the original image: each category's
        heatmaps, unflipped where the input was flipped, averaged, then decoded once in the
        frame of the first augmented input (``reference``) and scaled to the image. Categories
        are matched by value in every input (each holds the merged boxes, in the same order).
        """
        boxes = reference.pred_boxes.tensor
        out = boxes.new_zeros((len(boxes), L.NUM_LANDMARKS, 3))
        for c, (rows, _) in heatmaps[0].items():
            maps = []
            for per_input, t in zip(heatmaps, tfms):
                rows_k, lg = per_input[c]
                assert torch.equal(rows_k, rows), "augmented inputs hold other boxes"
                maps.append(unflip_heatmaps(lg, c) if _flipped(t) else lg)
            kp = heatmaps_to_keypoints(average_heatmaps(maps), boxes[rows])
            out[rows, L.CATEGORIES[c].landmark_slice] = kp[:, :, [0, 1, 3]]
        h, w = reference.image_size
        out[:, :, 0] *= orig_shape[1] / w
        out[:, :, 1] *= orig_shape[0] / h
        return out


def _to_original_frame(given: Instances, input: dict, orig_shape) -> Instances:
    """Given boxes of the input's ``image`` frame, in the original image's frame (other fields
    kept: the evaluator's ``gt_style``)."""
    h, w = input["image"].shape[1:3]
    scale = torch.tensor([orig_shape[1] / w, orig_shape[0] / h] * 2, dtype=torch.float32)
    out = Instances(orig_shape)
    for k, v in given.get_fields().items():
        out.set(k, v)
    out.pred_boxes = Boxes(given.pred_boxes.tensor.cpu() * scale)
    if not out.has("scores"):
        out.scores = torch.ones(len(out))
    return out
