"""
The matching head for consumer-to-shop retrieval: an L2-normalised embedding of each RoI, trained so
that the same garment (same ``pair_id`` and ``style > 0``) in different photos lands close together.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat, get_norm
from detectron2.structures import Instances
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

ROI_MATCH_HEAD_REGISTRY = Registry("ROI_MATCH_HEAD")
ROI_MATCH_HEAD_REGISTRY.__doc__ = """
Registry for matching heads: RoI features (R, C, P, P) -> embeddings (R, E).
The registered object is called with `obj(cfg, input_shape, image_shape)` (``image_shape``:
the pooled pixels' shape when the head sees them, else None).
"""


def build_match_head(
    cfg, input_shape: ShapeSpec, image_shape: ShapeSpec | None = None
) -> nn.Module:
    """``image_shape``: (C, P, P) of the RoIs' pooled pixels, when the head sees them."""
    return ROI_MATCH_HEAD_REGISTRY.get(cfg.MODEL.ROI_MATCH_HEAD.NAME)(cfg, input_shape, image_shape)


def cross_image_contrastive_loss(
    emb: torch.Tensor, ids: torch.Tensor, images: torch.Tensor, temperature: float
) -> torch.Tensor | None:
    """
    Contrastive loss across images (InfoNCE per positive pair).

    Args:
        emb: (R, E) L2-normalised embeddings.
        ids: (R,) garment identity (>= 0) of each RoI.
        images: (R,) index of the image each RoI comes from.
    Positives of an anchor are RoIs of the same identity in *other* images (a consumer photo and a
    shop photo of the garment); negatives are RoIs of other identities; RoIs of the same identity
    in the same image are neither (they are the same item). Each (anchor, positive) pair costs
    ``-log(e^s_p / (e^s_p + sum_n e^s_n))``, so the loss goes to 0 once every positive beats every
    negative by a margin, however many positives an anchor has. Returns the mean over anchors of
    the mean over their positives, or None when no anchor has a positive.
    """
    same_id = ids[:, None] == ids[None, :]
    same_img = images[:, None] == images[None, :]
    pos = same_id & ~same_img
    anchors = pos.any(1)
    if not bool(anchors.any()):
        return None
    sim = (emb @ emb.t()) / temperature
    neg_lse = torch.logsumexp(sim.masked_fill(same_id, float("-inf")), dim=1, keepdim=True)
    pair_loss = F.softplus(neg_lse - sim)  # -log(e^p / (e^p + sum e^n)); inf-safe if no negative
    pair_loss = pair_loss.masked_fill(~pos, 0.0)
    per_anchor = pair_loss.sum(1)[anchors] / pos.sum(1)[anchors]
    return per_anchor.mean()


def proxy_slots(ids: torch.Tensor, num_proxies: int) -> torch.Tensor:
    """
    (R,) garment identities (>= 0) -> (R,) proxy indices in [0, num_proxies): a multiplicative
    hash (Knuth's constant; the *high* bits of the 32-bit product pick the slot, since the low
    bits of ``pair_id * 1000 + style`` repeat), so that nearby identities spread over the table.
    Two identities may share a proxy (fewer than at random: ``tests/test_match_head.py`` checks
    how identities numbered like the real set's spread); only sharing within a category matters
    to the ranking, which stays within the query's category.
    """
    return (ids * 2654435761) % (2**32) * num_proxies // (2**32)


def proxy_identity_loss(
    emb: torch.Tensor, ids: torch.Tensor, proxies: torch.Tensor, temperature: float
) -> torch.Tensor:
    """
    Normalised-softmax loss over identity proxies: each RoI's embedding (R, E) against every proxy
    (P, E), cross-entropy towards its identity's own proxy. Unlike the in-batch contrastive loss,
    whose negatives are only the other garments of the few images in the batch (mostly of other
    categories, so it falls to ~0 early), every RoI meets every training identity here, those of
    its own category with the same colours included: the negatives retrieval must tell apart.
    """
    logits = emb @ F.normalize(proxies, dim=1).t() / temperature
    return F.cross_entropy(logits, proxy_slots(ids, proxies.shape[0]))


@ROI_MATCH_HEAD_REGISTRY.register()
class MatchEmbeddingHead(nn.Module):
    """
    Convs + FC on the pooled RoI features, projected to an L2-normalised embedding. With
    ``image_shape``, the RoI's pooled pixels go through one 3x3 conv (stride 2) and join the
    features at the FC: the colour and pattern that tell one garment from another of its category.
    Training: a cross-image contrastive loss on foreground RoIs of paired garments, plus, with
    ``num_proxies > 0``, a proxy loss over every training identity (:func:`proxy_identity_loss`).
    Inference: sets ``pred_embeddings`` (R_i, E) on each image's instances.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dims: list[int],
        fc_dim: int,
        embed_dim: int,
        temperature: float = 0.1,
        loss_weight: float = 1.0,
        max_rois_per_image: int = 32,
        conv_norm: str = "",
        image_shape: ShapeSpec | None = None,
        image_conv_dim: int = 16,
        num_proxies: int = 0,
    ):
        super().__init__()
        c = input_shape.channels
        self.convs = nn.ModuleList()
        for k, d in enumerate(conv_dims):
            conv = Conv2d(
                c,
                d,
                3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, d),
                activation=F.relu,
            )
            self.add_module(f"conv{k + 1}", conv)
            self.convs.append(conv)
            c = d
        fc_in = c * input_shape.height * input_shape.width
        self.image_conv = None
        if image_shape is not None:
            self.image_conv = Conv2d(
                image_shape.channels, image_conv_dim, 3, stride=2, padding=1, activation=F.relu
            )
            fc_in += (
                image_conv_dim * ((image_shape.height + 1) // 2) * ((image_shape.width + 1) // 2)
            )
        self.fc = nn.Linear(fc_in, fc_dim)
        self.embed = nn.Linear(fc_dim, embed_dim)
        self.temperature = temperature
        self.loss_weight = loss_weight
        self.max_rois_per_image = max_rois_per_image
        # (P, E) one learned point per identity (hashed), unit length at the start
        self.proxies = (
            nn.Parameter(F.normalize(torch.randn(num_proxies, embed_dim), dim=1))
            if num_proxies > 0
            else None
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape, image_shape=None):
        mh = cfg.MODEL.ROI_MATCH_HEAD
        return {
            "input_shape": input_shape,
            "image_shape": image_shape,
            "image_conv_dim": mh.IMAGE_CONV_DIM,
            "conv_dims": list(mh.CONV_DIMS),
            "fc_dim": mh.FC_DIM,
            "embed_dim": mh.EMBED_DIM,
            "temperature": mh.TEMPERATURE,
            "loss_weight": mh.LOSS_WEIGHT,
            "max_rois_per_image": mh.MAX_ROIS_PER_IMAGE,
            "conv_norm": mh.NORM,
            "num_proxies": mh.NUM_PROXIES,
        }

    def embeddings(self, x: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """(R, C, P, P) features [and (R, 3, Q, Q) pixels] -> (R, E), unit length."""
        for conv in self.convs:
            x = conv(x)
        x = x.flatten(1)
        if self.image_conv is not None:
            if pixels is None:
                raise ValueError(f"{type(self).__name__} was built to see the RoIs' pixels")
            x = torch.cat([x, self.image_conv(pixels).flatten(1)], dim=1)
        x = F.relu(self.fc(x))
        return F.normalize(self.embed(x), dim=1)

    def forward(
        self, x: torch.Tensor, instances: list[Instances], pixels: torch.Tensor | None = None
    ):
        """
        Args:
            x: (R, C, P, P) features of the RoIs of all images, in the order of ``instances``.
            pixels: (R, 3, Q, Q) the RoIs' pooled pixels, for a head built with ``image_shape``.
            instances: training: the RoIs selected by :meth:`select_training_rois` with
                ``gt_match_ids``; inference: detections with ``pred_boxes``.
        """
        emb = self.embeddings(x, pixels)
        if not self.training:
            for inst, e in zip(instances, emb.split([len(i) for i in instances])):
                inst.pred_embeddings = e
            return instances
        ids = cat([i.gt_match_ids for i in instances])
        images = cat([torch.full((len(i),), k, device=emb.device) for k, i in enumerate(instances)])
        loss = cross_image_contrastive_loss(emb, ids, images, self.temperature)
        if loss is None:  # no pair in this batch: keep every parameter in the graph (DDP)
            loss = sum(p.sum() for p in self.parameters()) * 0.0
        losses = {"loss_match": loss * self.loss_weight}
        if self.proxies is not None:
            if len(ids):
                loss = proxy_identity_loss(emb, ids, self.proxies, self.temperature)
            else:
                loss = self.proxies.sum() * 0.0
            losses["loss_match_proxy"] = loss * self.loss_weight
        return losses

    def select_training_rois(self, proposals: list[Instances]) -> list[Instances]:
        """Foreground RoIs of paired garments (``gt_match_ids >= 0``), at most N per image."""
        out = []
        for p in proposals:
            keep = torch.nonzero(p.gt_match_ids >= 0).squeeze(1)
            if len(keep) > self.max_rois_per_image:
                keep = keep[torch.randperm(len(keep), device=keep.device)]
                keep = keep[: self.max_rois_per_image]
            out.append(p[keep])
        return out
