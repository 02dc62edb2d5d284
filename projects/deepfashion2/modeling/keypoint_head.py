"""
A category-gated ROI keypoint head for DeepFashion2's 294-landmark scheme.

The stock head predicts all 294 heatmaps for every RoI. Here each RoI only gets the landmarks of its
own category (ground-truth class of the matched box in training, predicted class at inference):
the final transposed conv evaluates just that category's slice of output channels, the loss only
sees those landmarks, and decoding only runs on them. Parameters keep the stock names and shapes
(``conv_fcn*``, ``score_lowres`` with 294 outputs), so checkpoints are interchangeable.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, interpolate
from detectron2.modeling.roi_heads import ROI_KEYPOINT_HEAD_REGISTRY
from detectron2.structures import Instances, Keypoints, heatmaps_to_keypoints
from torch import nn
from torch.nn import functional as F

from .. import landmarks as L


def _channel_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """(13, K_max) each: a category's channels of the 294, padded (gather: with its first
    channel; scatter: with 294, a slot past the last). For :meth:`traceable_inference`."""
    k_max = int(L.LANDMARK_COUNT.max())
    gather = torch.zeros(L.NUM_CATEGORIES, k_max, dtype=torch.int64)
    scatter = torch.full((L.NUM_CATEGORIES, k_max), L.NUM_LANDMARKS, dtype=torch.int64)
    for c in L.CATEGORIES:
        channels = torch.arange(c.landmark_slice.start, c.landmark_slice.stop)
        gather[c.contiguous_id, :] = channels[0]
        gather[c.contiguous_id, : len(channels)] = channels
        scatter[c.contiguous_id, : len(channels)] = channels
    return gather, scatter


_CHANNELS_OF = _channel_tables()


def category_keypoint_loss(
    logits: list[tuple[int, torch.Tensor, torch.Tensor]],
    gt_keypoints: torch.Tensor,
    boxes: torch.Tensor,
    normalizer: float | None,
) -> torch.Tensor:
    """
    The stock Keypoint R-CNN loss (spatial cross-entropy over the heatmap of every labelled
    landmark that falls inside its RoI), restricted to each RoI's own category.

    Args:
        logits: per category c: (c, (n_c,) RoI indices, (n_c, K_c, S, S) logits).
        gt_keypoints: (R, 294, 3) ground truth in image coordinates (v > 0 = labelled).
        boxes: (R, 4) RoI boxes.
        normalizer: divide the summed loss by this; None = by the number of valid landmarks.
    """
    losses, num_valid = [], 0
    ref = logits[0][2] if logits else None
    for c, idx, lg in logits:
        cat_ = L.CATEGORIES[c]
        n, k, s, _ = lg.shape
        targets, valid = Keypoints(gt_keypoints[idx][:, cat_.landmark_slice]).to_heatmap(
            boxes[idx], s
        )
        valid = valid.view(-1).bool()
        if valid.any():
            # ignore_index instead of gathering the valid rows: same sum, no copy of the logits
            targets = torch.where(valid, targets.view(-1), torch.full_like(targets.view(-1), -1))
            losses.append(
                F.cross_entropy(lg.reshape(n * k, s * s), targets, ignore_index=-1, reduction="sum")
            )
            num_valid += int(valid.sum())
    if not losses:  # like the stock loss: keep the graph, contribute nothing
        return ref.sum() * 0 if ref is not None else gt_keypoints.new_zeros(())
    loss = torch.stack(losses).sum()
    return loss / (num_valid if normalizer is None else normalizer)


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class CategoryKeypointHead(nn.Module):
    """
    Conv trunk + per-category transposed-conv predictor + bilinear x2 upsampling.

    Inputs: RoI features (R, C, P, P) and the RoIs' Instances. Training returns
    ``{"loss_keypoint"}``; inference sets ``pred_keypoints`` (R, 294, 3) as (x, y, score), zero
    outside each instance's predicted category.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: list[int],
        loss_weight: float = 1.0,
        loss_normalizer: float | str = "visible",
    ):
        """
        Args:
            input_shape: shape of the RoI features.
            conv_dims: output channels of each 3x3 conv of the trunk, e.g. 8 x 512.
            loss_weight: multiplier of the loss.
            loss_normalizer: "visible" (divide by the number of valid landmarks, the stock default)
                or a float: divide by ``loss_normalizer * #images``.
        """
        super().__init__()
        assert loss_normalizer == "visible" or isinstance(loss_normalizer, float), loss_normalizer
        self.loss_weight, self.loss_normalizer = loss_weight, loss_normalizer
        in_channels = input_shape.channels
        for idx, dim in enumerate(conv_dims, 1):
            self.add_module(f"conv_fcn{idx}", Conv2d(in_channels, dim, 3, stride=1, padding=1))
            # in place, as Detectron2's head: saves allocating a second tensor per layer in the
            # forward pass (what backward keeps is the same either way: ReLU's output is the
            # next conv's input)
            self.add_module(f"conv_fcn_relu{idx}", nn.ReLU(inplace=True))
            in_channels = dim
        self.num_convs = len(conv_dims)
        self.score_lowres = ConvTranspose2d(in_channels, L.NUM_LANDMARKS, 4, stride=2, padding=1)
        self.up_scale = 2.0
        for name, param in self.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, cfg, input_shape):
        kh = cfg.MODEL.ROI_KEYPOINT_HEAD
        if kh.NUM_KEYPOINTS != L.NUM_LANDMARKS:
            raise ValueError(
                f"{cls.__name__} predicts DeepFashion2's {L.NUM_LANDMARKS} landmarks; "
                f"set MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS={L.NUM_LANDMARKS} "
                f"(got {kh.NUM_KEYPOINTS})"
            )
        if kh.NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS:
            normalizer = "visible"
        else:  # the stock head's fixed normalizer, with the same number of keypoints
            normalizer = float(
                kh.NUM_KEYPOINTS
                * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
                * cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION
            )
        return {
            "input_shape": input_shape,
            "conv_dims": kh.CONV_DIMS,
            "loss_weight": kh.LOSS_WEIGHT,
            "loss_normalizer": normalizer,
        }

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, P, P) -> (R, D, P, P)."""
        for i in range(1, self.num_convs + 1):
            x = getattr(self, f"conv_fcn_relu{i}")(getattr(self, f"conv_fcn{i}")(x))
        return x

    def predict(
        self, x: torch.Tensor, classes: torch.Tensor
    ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """
        Trunk features (R, D, P, P) of RoIs sorted by category and their sorted (R,) 0-based
        classes -> per present category c: (c, (n_c,) rows of x, (n_c, K_c, 4P, 4P) logits),
        computing only c's output channels. Features and weights are split into views, so the
        backward pass assembles each gradient once instead of once per category.
        """
        if len(classes) > 1 and bool((classes[1:] < classes[:-1]).any()):
            raise ValueError("predict() needs the RoIs sorted by category")
        counts = torch.bincount(classes, minlength=L.NUM_CATEGORIES).tolist()
        xs = x.split(counts)
        sizes = L.LANDMARK_COUNT.tolist()
        ws = self.score_lowres.weight.split(sizes, dim=1)
        bs = self.score_lowres.bias.split(sizes)
        out, start = [], 0
        for c, n in enumerate(counts):
            if n:
                y = F.conv_transpose2d(xs[c], ws[c], bs[c], stride=2, padding=1)
                y = interpolate(y, scale_factor=self.up_scale, mode="bilinear", align_corners=False)
                out.append((c, torch.arange(start, start + n, device=x.device), y))
            start += n
        return out

    def forward(self, x: torch.Tensor, instances: list[Instances]):
        """
        Args:
            x: (R, C, P, P) features of the RoIs of all images, in the order of ``instances``.
            instances: training: foreground proposals with ``proposal_boxes``, ``gt_classes``,
                ``gt_keypoints``; inference: detections with ``pred_boxes``, ``pred_classes``.
        """
        field = "gt_classes" if self.training else "pred_classes"
        classes = cat([i.get(field) for i in instances]).long()
        if not self.training and torch.jit.is_tracing() and len(instances) == 1:
            # an exported model (one image per call, as Detectron2's TracingAdapter traces it)
            boxes = instances[0].pred_boxes.tensor
            instances[0].pred_keypoints = self.traceable_inference(x, classes, boxes)
            return instances
        if self.training and not len(classes):  # keep every parameter in the graph (DDP needs it)
            w, b = self.score_lowres.weight, self.score_lowres.bias
            return {"loss_keypoint": (self.trunk(x).sum() + w.sum() + b.sum()) * 0}
        logits = self._logits(x, classes)
        if not self.training:
            self.inference(logits, instances)
            return instances
        normalizer = (
            None if self.loss_normalizer == "visible" else len(instances) * self.loss_normalizer
        )
        gt = cat([i.gt_keypoints.tensor for i in instances])
        boxes = cat([i.proposal_boxes.tensor for i in instances])
        loss = category_keypoint_loss(logits, gt, boxes, normalizer)
        return {"loss_keypoint": loss * self.loss_weight}

    def _logits(self, x: torch.Tensor, classes: torch.Tensor):
        # Sort the RoIs by category before the trunk: one gather of the (narrow) input instead
        # of the trunk output, and contiguous per-category blocks for the predictor.
        order = torch.argsort(classes, stable=True)
        feats = self.trunk(x[order])
        return [(c, order[rows], y) for c, rows, y in self.predict(feats, classes[order])]

    def traceable_inference(
        self, x: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """
        Inference in a form that tracing (TorchScript, ONNX) keeps for any mix of categories:
        (R, C, P, P) RoI features, (R,) 0-based classes and (R, 4) boxes -> (R, 294, 3)
        landmarks (x, y, score), zeros outside each RoI's category, as :meth:`forward` gives them.
        No Python-side split by category counts (which a trace freezes): every RoI goes through
        the whole predictor, as the stock head does, its own category's channels are gathered by
        a constant table, decoded, and scattered back. The per-category saving of compute stays
        in training and eager inference.
        """
        maps = self.traceable_heatmaps(x, classes)
        kp = heatmaps_to_keypoints(maps, boxes)[:, :, [0, 1, 3]]  # (R, K_max, 3)
        scatter = _CHANNELS_OF[1].to(x.device)
        # padded entries land in a 295th slot that is cut off
        out = kp.new_zeros((kp.shape[0], L.NUM_LANDMARKS + 1, 3))
        out = out.scatter(1, scatter[classes][:, :, None].expand(-1, -1, 3), kp)
        return out[:, : L.NUM_LANDMARKS]

    def traceable_heatmaps(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """
        (R, C, P, P) RoI features and (R,) 0-based classes -> (R, K_max, 4P, 4P) logits of each
        RoI's own category's landmarks in the dataset's order (K_max = 39, the most any category
        has; a category with fewer repeats its first landmark's map after its own): what an
        exported model outputs, decoded outside it (``deepfashion2_runtime``).
        """
        y = self.score_lowres(self.trunk(x))
        y = interpolate(y, scale_factor=self.up_scale, mode="bilinear", align_corners=False)
        idx = _CHANNELS_OF[0].to(x.device)[classes]  # the category's channels, padded
        size = y.shape[-1]
        return torch.gather(y, 1, idx[:, :, None, None].expand(-1, -1, size, size))

    def heatmaps(
        self, x: torch.Tensor, instances: list[Instances]
    ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """
        Inference without decoding (test-time augmentation averages these): per present
        predicted category c, (c, (n_c,) rows of ``x``, (n_c, K_c, S, S) logits).
        """
        return self._logits(x, cat([i.pred_classes for i in instances]).long())

    @staticmethod
    def inference(logits, instances: list[Instances]) -> None:
        """Decode each RoI's own heatmaps into ``pred_keypoints`` (R_i, 294, 3) per image."""
        boxes = cat([i.pred_boxes.tensor for i in instances])
        out = boxes.new_zeros((len(boxes), L.NUM_LANDMARKS, 3))
        for c, idx, lg in logits:
            kp = heatmaps_to_keypoints(lg.detach(), boxes[idx].detach())  # (n_c, K_c, 4)
            out[idx, L.CATEGORIES[c].landmark_slice] = kp[:, :, [0, 1, 3]]
        for inst, kp in zip(instances, out.split([len(i) for i in instances])):
            inst.pred_keypoints = kp
