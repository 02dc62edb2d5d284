"""engine/optim.py: the fast AdamW route does what Detectron2's clipped AdamW does."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.solver.build import (
    _create_gradient_clipper,
    maybe_add_gradient_clipping,
)

from deepfashion2 import add_deepfashion2_config
from deepfashion2.engine.optim import (
    AdamWPerParameterClip,
    build_adamw,
    clip_grad_norm_per_parameter_,
    param_groups,
)


def _cfg(clip_type="norm"):
    cfg = get_cfg()
    add_deepfashion2_config(cfg)
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.SOLVER.WEIGHT_DECAY = 0.1  # large enough to show in one step
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    return cfg


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.GroupNorm(4, 8),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_clip_matches_detectron2_per_parameter_clipper(norm_type):
    torch.manual_seed(1)
    # some gradients above the limit, some below, one zero: each is clipped on its own
    grads = [torch.randn(5, 3) * 4, torch.randn(7) * 0.01, torch.zeros(2, 2), torch.randn(9) * 2]
    cfg = _cfg()
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = norm_type
    d2 = _create_gradient_clipper(cfg.SOLVER.CLIP_GRADIENTS)
    ours = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    ref = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, q, g in zip(ours, ref, grads):
        p.grad, q.grad = g.clone(), g.clone()
        d2([q])
    clip_grad_norm_per_parameter_(ours, 1.0, norm_type)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.grad, q.grad)
    assert float(ours[0].grad.norm(norm_type)) == pytest.approx(1.0, rel=1e-5)  # was clipped
    torch.testing.assert_close(ours[1].grad, grads[1])  # was not


@pytest.mark.parametrize("clip_type", ["norm", "value"])
def test_build_adamw_steps_like_detectron2_wrapped_adamw(clip_type):
    cfg = _cfg(clip_type)
    ours_model, ref_model = _model(), _model()
    ours = build_adamw(cfg, ours_model)
    assert isinstance(ours, AdamWPerParameterClip) == (clip_type == "norm")
    params = param_groups(cfg, ref_model)  # Detectron2's own clipped AdamW on the same groups
    ref = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
    x = torch.randn(4, 3, 3, 3)
    for step in range(5):
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            (model(x).square().sum() * 100).backward()  # large: clipping is active
            opt.step()
        # the first step agrees to rounding; later ones drift apart by rounding amplified through
        # Adam's 1/sqrt(v) (the fused kernel orders its arithmetic differently): a fraction of lr
        tol = 1e-6 if step == 0 else 0.05 * cfg.SOLVER.BASE_LR
        for p, q in zip(ours_model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=tol)
    # resumable like any torch optimizer
    again = build_adamw(cfg, copy.deepcopy(ours_model))
    again.load_state_dict(ours.state_dict())
    assert again.state_dict()["state"].keys() == ours.state_dict()["state"].keys()
