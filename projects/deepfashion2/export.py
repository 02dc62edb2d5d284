"""
The model outside the lab: a trained DeepFashion2 R-CNN as one traced graph, saved as TorchScript
(``.ts``) or ONNX (``.onnx``), that ``deepfashion2_runtime`` runs with torch alone or with ONNX
Runtime and numpy: no Detectron2, no project code.

The graph takes one image, already resized to the config's test size in the config's pixel format,
as (3, H, W) float32, and returns each detection's raw outputs in that frame::

    boxes (R, 4) XYXY, scores (R,), classes (R,) 0-based,
    masks (R, M, M) probabilities (MASK_ON), landmark heatmaps (R, 39, S, S) logits of the
    detection's own category (KEYPOINT_ON: CategoryKeypointHead.traceable_heatmaps),
    embeddings (R, E) (MATCH_ON)

What Detectron2 does after the graph (boxes to the image size, masks pasted, heatmaps decoded into
landmarks, the 294 slots) is done by the runtime, in numpy, as Detectron2 does it. Tracing needs
no Python-side decision that depends on an image's content: the landmark head's per-category
split is replaced by a gather (its traceable path); everything else in Detectron2's R-CNN traces.
The file carries what the runtime needs to know (``metadata``): test sizes, pixel format, outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings

import torch
from torch import nn

from . import landmarks as L
from .config import retrieval_policy

FORMAT = 1


class ExportAdapter(nn.Module):
    """The R-CNN's inference on one resized image, as plain tensors (see the module)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        roi = model.roi_heads
        self.outputs = ["boxes", "scores", "classes"]
        self.outputs += ["masks"] if getattr(roi, "mask_on", False) else []
        self.outputs += ["heatmaps"] if getattr(roi, "keypoint_on", False) else []
        self.outputs += ["embeddings"] if getattr(roi, "match_on", False) else []
        self.eval()  # the exporters restore the mode they found: inference, model included

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, roi = self.model, self.model.roi_heads
        images = m.preprocess_image([{"image": image}])
        features = m.backbone(images.tensor)
        proposals, _ = m.proposal_generator(images, features, None)
        # the box head only: the other heads split their outputs by per-image counts taken into
        # Python (which a trace freezes); they run below on the detections, for one image
        with _off(roi, "mask_on"), _off(roi, "keypoint_on"), _off(roi, "match_on"):
            results, _ = roi(images, features, proposals, None)
        boxes, classes = results[0].pred_boxes, results[0].pred_classes
        out = [boxes.tensor, results[0].scores, classes]
        rows = torch.arange(classes.shape[0], device=classes.device)
        if "masks" in self.outputs:
            pooled = roi.mask_pooler([features[f] for f in roi.mask_in_features], [boxes])
            logits = roi.mask_head.layers(pooled)  # (R, 1 or classes, M, M)
            if logits.shape[1] > 1:
                logits = logits[rows, classes][:, None]
            out.append(logits[:, 0].sigmoid())
        if "heatmaps" in self.outputs:
            pooled = roi.keypoint_pooler([features[f] for f in roi.keypoint_in_features], [boxes])
            out.append(roi.keypoint_head.traceable_heatmaps(pooled, classes))
        if "embeddings" in self.outputs:
            pooled = roi.match_pooler([features[f] for f in roi.match_in_features], [boxes])
            pixels = None
            if roi.match_image_pooler is not None:
                pixels = roi.match_image_pooler([features["image"]], [boxes])
            out.append(roi.match_head.embeddings(pooled, pixels))
        return tuple(out)


@contextlib.contextmanager
def _off(module, attr: str):
    old = getattr(module, attr, None)
    if old is None:
        yield
        return
    setattr(module, attr, False)
    try:
        yield
    finally:
        setattr(module, attr, old)


@contextlib.contextmanager
def _quiet_tracer():
    """The tracer's warnings about Python values it records as constants: each was checked (the
    tests run the export on other images), and they would bury the tool's own output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        yield


def metadata(cfg, adapter: ExportAdapter, weights_sha256: str = "") -> dict:
    """What the runtime needs besides the graph: test sizes, pixel format, the outputs' names."""
    return {
        "format": FORMAT,
        "outputs": adapter.outputs,
        "input_format": cfg.INPUT.FORMAT,
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "mask_threshold": 0.5,
        "num_landmarks": L.NUM_LANDMARKS,
        "landmark_channels": [[c.start, c.num_landmarks] for c in L.CATEGORIES],
        "weights_sha256": weights_sha256,
        "embed_dim": (
            int(cfg.MODEL.ROI_MATCH_HEAD.EMBED_DIM) if "embeddings" in adapter.outputs else 0
        ),
        "policy": retrieval_policy(cfg),
    }


def example_image(cfg) -> torch.Tensor:
    """An input of the config's test size to trace with (its content does not matter)."""
    g = torch.Generator().manual_seed(0)
    h = int(cfg.INPUT.MIN_SIZE_TEST)
    return torch.randint(0, 256, (3, h, h * 4 // 3), generator=g).float()


def export_torchscript(adapter: ExportAdapter, cfg, path: str, meta: dict) -> str:
    """The traced graph as TorchScript, ``metadata`` in the file (``extra_files``)."""
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(adapter, (example_image(cfg),), check_trace=False)
    torch.jit.save(traced, path, _extra_files={"deepfashion2.json": json.dumps(meta)})
    return path


def export_onnx(adapter: ExportAdapter, cfg, path: str, meta: dict, opset: int = 17) -> str:
    """The traced graph as ONNX (``metadata`` in the model's metadata_props)."""
    import onnx

    names = adapter.outputs
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(
            adapter,
            (example_image(cfg),),
            path,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes={
                "image": {1: "height", 2: "width"},
                **{n: {0: "detections"} for n in names},
            },
            dynamo=False,
        )
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "deepfashion2.json", json.dumps(meta)
    onnx.save(proto, path)
    return path


def export(model: nn.Module, cfg, path: str, weights_sha256: str = "") -> str:
    """``path`` ending in ``.ts`` (TorchScript) or ``.onnx``: the model exported there."""
    adapter = ExportAdapter(model)
    meta = metadata(cfg, adapter, weights_sha256)
    ext = os.path.splitext(path)[1]
    if ext == ".ts":
        return export_torchscript(adapter, cfg, path, meta)
    if ext == ".onnx":
        return export_onnx(adapter, cfg, path, meta)
    raise ValueError(f"{path}: an exported model is a .ts (TorchScript) or .onnx file")


class ExportedAsModel(nn.Module):
    """
    An exported model (``deepfashion2_runtime.ExportedModel``) behind Detectron2's model interface:
    ``model(inputs)`` with the test loader's inputs (``file_name``, ``height``, ``width``) ->
    ``[{"instances": Instances}]`` in the image's pixels, so that Detectron2's
    ``inference_on_dataset`` and this project's evaluators score it exactly as an eager model.
    """

    def __init__(self, runtime):
        super().__init__()
        self.runtime = runtime
        self.register_buffer("_device", torch.zeros(0), persistent=False)

    @property
    def device(self):
        return self._device.device

    def forward(self, inputs: list[dict]) -> list[dict]:
        from detectron2.data.detection_utils import read_image

        out = []
        for x in inputs:
            rgb = read_image(x["file_name"], format="RGB")  # EXIF applied, as the test mapper
            out.append({"instances": to_instances(self.runtime(rgb), rgb.shape[:2])})
        return out


def to_instances(found: dict, image_hw):
    """The runtime's predictions (``deepfashion2_runtime``'s dict) as Detectron2 ``Instances``:
    what the evaluators, the visualiser and ``best_detections`` take."""
    from detectron2.structures import Boxes, Instances

    inst = Instances(tuple(image_hw))
    inst.pred_boxes = Boxes(torch.as_tensor(found["boxes"]))
    inst.scores = torch.as_tensor(found["scores"])
    inst.pred_classes = torch.as_tensor(found["categories"] - 1)
    for key, field in (("masks", "pred_masks"), ("landmarks", "pred_keypoints"),
                       ("embeddings", "pred_embeddings")):  # fmt: skip
        if key in found:
            inst.set(field, torch.as_tensor(found[key]))
    return inst


# What static int8 quantisation converts: the layers that hold the compute. Everything else stays
# float: RoIAlign, NMS, TopK, the resizes and the box arithmetic (ONNX Runtime has no int8 kernels
# for them, and 8 bits on coordinates would move boxes by pixels), sigmoid and softmax outputs.
INT8_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Layers of those kinds kept float, by the graph's node names, with why (bench/deploy.py measured
# each choice on the demo model: docs/DEPLOY.md): the backbone's int8 activations cost 1.5-2.4 AP
# on every task (its depthwise convolutions most), and the box regression's fully connected
# layers move boxes.
KEEP_FLOAT = {
    "/backbone/bottom_up/": "the backbone: int8 activations cost 1.5-2.4 AP",
    "/roi_heads/box_head/": "the box head: 8 bits move boxes",
    "/roi_heads/box_predictor/": "the box predictor: 8 bits move boxes",
}


def quantize_int8(path: str, out: str, calibration: list, keep_float=tuple(KEEP_FLOAT)) -> dict:
    """
    ONNX Runtime's static int8 quantisation (QDQ, per-channel weights) of an exported ``.onnx``,
    its activations calibrated on ``calibration`` (pre-processed images, (3, H, W) float32):
    the :data:`INT8_OPS` layers, except those whose node names start with one of ``keep_float``.
    Returns what stays in float: {op type: count} of the graph's other nodes, and under
    ``"kept float"`` {prefix: count} of the layers kept.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Images(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"image": x} for x in calibration])

        def get_next(self):
            return next(self._it, None)

    if not calibration:
        raise ValueError("int8 calibration needs at least one image")
    kept: dict[str, list[str]] = {prefix: [] for prefix in keep_float}
    for node in _nodes(onnx.load(path).graph):
        for prefix in keep_float:
            if node.op_type in INT8_OPS and node.name.startswith(prefix):
                kept[prefix].append(node.name)
    quantize_static(path, out, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(INT8_OPS),
                    nodes_to_exclude=[n for names in kept.values() for n in names])  # fmt: skip
    floats: dict = {}
    for node in _nodes(onnx.load(out).graph):
        if node.op_type not in INT8_OPS + ("QuantizeLinear", "DequantizeLinear"):
            floats[node.op_type] = floats.get(node.op_type, 0) + 1
    floats = dict(sorted(floats.items(), key=lambda kv: -kv[1]))
    floats["kept float"] = {prefix: len(names) for prefix, names in kept.items()}
    return floats


def _nodes(graph):
    """Every node of an ONNX graph, those of subgraphs (If, Loop branches) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _nodes(sub)
