"""The runtime of an exported model: pre-processing, the graph, Detectron2's post-processing in
numpy (see the package's docstring). Imports neither torch (for ``.onnx``) nor Detectron2."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image

_META = "deepfashion2.json"
_CUBIC_A = -0.75  # torch's bicubic interpolation (Detectron2 decodes landmarks with it)


class ExportedModel:
    """A ``.onnx`` or ``.ts`` file written by ``tools/deploy/export_model.py``."""

    def __init__(self, path: str, threads: int | None = None):
        self.path = path
        ext = os.path.splitext(path)[1]
        if ext == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            props = self._session.get_modelmeta().custom_metadata_map
            self.meta = json.loads(props[_META])
            self._run = self._run_onnx
        elif ext == ".ts":
            import torch

            if threads:
                torch.set_num_threads(threads)
            extra = {_META: ""}
            self._module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            self.meta = json.loads(extra[_META])
            self._run = self._run_torchscript
        else:
            raise ValueError(f"{path}: an exported model is a .onnx or .ts file")
        self.outputs = list(self.meta["outputs"])

    # -- the three steps ---------------------------------------------------------------------

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, h, w) float32 at the test size, in the model's format."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB pixels, got {rgb.shape} {rgb.dtype}")
        h, w = resized_shape(*rgb.shape[:2], self.meta["min_size_test"], self.meta["max_size_test"])
        if (h, w) != rgb.shape[:2]:
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        if self.meta["input_format"] == "BGR":
            rgb = rgb[:, :, ::-1]
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)

    def raw(self, chw: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs on a pre-processed image (the detections in its frame)."""
        return dict(zip(self.outputs, self._run(chw)))

    def __call__(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Detections in the image's pixels (see the package's docstring)."""
        chw = self.preprocess(rgb)
        return self.postprocess(self.raw(chw), chw.shape[1:], rgb.shape[:2])

    def postprocess(self, raw: dict, input_hw, image_hw) -> dict[str, np.ndarray]:
        """Detectron2's ``detector_postprocess`` (and the landmark decoding before it)."""
        (in_h, in_w), (out_h, out_w) = input_hw, image_hw
        sx, sy = out_w / in_w, out_h / in_h
        boxes = raw["boxes"].astype(np.float32)
        out = {}
        if "heatmaps" in raw:  # decoded in the input's frame, from the unclipped boxes
            out["landmarks"] = decode_landmarks(
                raw["heatmaps"], boxes, raw["classes"], self.meta["landmark_channels"],
                self.meta["num_landmarks"],
            )  # fmt: skip
            out["landmarks"][:, :, 0] *= sx
            out["landmarks"][:, :, 1] *= sy
        scaled = boxes * np.array([sx, sy, sx, sy], np.float32)
        scaled[:, 0::2] = scaled[:, 0::2].clip(0, out_w)
        scaled[:, 1::2] = scaled[:, 1::2].clip(0, out_h)
        keep = (scaled[:, 2] - scaled[:, 0] > 0) & (scaled[:, 3] - scaled[:, 1] > 0)
        out["boxes"] = scaled[keep]
        out["scores"] = raw["scores"][keep].astype(np.float32)
        out["categories"] = raw["classes"][keep].astype(np.int64) + 1
        if "landmarks" in out:
            out["landmarks"] = out["landmarks"][keep]
        if "masks" in raw:
            out["masks"] = paste_masks(
                raw["masks"][keep], out["boxes"], out_h, out_w, self.meta["mask_threshold"]
            )
        if "embeddings" in raw:
            e = raw["embeddings"][keep].astype(np.float32)
            out["embeddings"] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return out

    # -- backends ----------------------------------------------------------------------------

    def _run_onnx(self, chw: np.ndarray) -> list[np.ndarray]:
        return self._session.run(None, {"image": chw})

    def _run_torchscript(self, chw: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            return [t.numpy() for t in self._module(torch.from_numpy(chw))]


def resized_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Detectron2's ``ResizeShortestEdge`` at test time: the shorter side to ``short``, the
    longer at most ``max_size``, rounded half up."""
    if short == 0:
        return h, w
    scale = short * 1.0 / min(h, w)
    newh, neww = (short * 1.0, scale * w) if h < w else (scale * h, short * 1.0)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def decode_landmarks(
    heatmaps: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    channels: list,
    num_landmarks: int = 294,
) -> np.ndarray:
    """
    Detectron2's ``heatmaps_to_keypoints`` on each detection's own category's heatmaps
    (R, K_max, S, S) with its box (R, 4): each map resized to the box (bicubic, as torch), the
    maximum's position and its score (normalised over the low-resolution map), written into the
    category's slots of (R, 294, 3) (x, y, score), zeros elsewhere.
    """
    out = np.zeros((len(boxes), num_landmarks, 3), np.float32)
    for i, (box, c) in enumerate(zip(boxes.astype(np.float32), classes.tolist())):
        start, k = channels[int(c)]
        maps = heatmaps[i, :k].astype(np.float32)
        w = max(float(box[2] - box[0]), 1.0)
        h = max(float(box[3] - box[1]), 1.0)
        wc, hc = math.ceil(w), math.ceil(h)
        up = np.einsum("ys,ksx->kyx", _cubic_matrix(maps.shape[1], hc),
                       maps @ _cubic_matrix(maps.shape[2], wc).T)  # fmt: skip
        flat = up.reshape(k, -1)
        pos = flat.argmax(1)
        top = flat[np.arange(k), pos]
        y_int, x_int = np.divmod(pos, wc)
        score = 1.0 / np.exp(maps - top[:, None, None]).sum((1, 2))
        out[i, start : start + k, 0] = (x_int + 0.5) * (w / wc) + box[0]
        out[i, start : start + k, 1] = (y_int + 0.5) * (h / hc) + box[1]
        out[i, start : start + k, 2] = score
    return out


def _cubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(out, in) weights of torch's bicubic interpolation (align_corners=False, borders
    clamped) along one axis."""
    scale = size_in / size_out
    src = scale * (np.arange(size_out) + 0.5) - 0.5
    base = np.floor(src)
    t = (src - base).astype(np.float32)
    a = _CUBIC_A
    weights = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ]
    m = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    for k, wk in enumerate(weights):
        idx = np.clip(base.astype(np.int64) - 1 + k, 0, size_in - 1)
        np.add.at(m, (rows, idx), wk)
    return m


def paste_masks(masks: np.ndarray, boxes: np.ndarray, h: int, w: int, threshold: float = 0.5):
    """
    Detectron2's ``paste_masks_in_image``: each (M, M) mask probability map sampled bilinearly
    (``grid_sample``, zeros outside) at the image's pixel centres inside its box, then >=
    ``threshold``: (R, h, w) bool.
    """
    out = np.zeros((len(masks), h, w), bool)
    for i, (m, box) in enumerate(zip(masks.astype(np.float32), boxes.astype(np.float32))):
        wy = _linear_matrix(m.shape[0], h, box[1], box[3])
        wx = _linear_matrix(m.shape[1], w, box[0], box[2])
        out[i] = (wy @ m @ wx.T) >= threshold
    return out


def _linear_matrix(size_in: int, size_out: int, lo: float, hi: float) -> np.ndarray:
    """(out, in) bilinear weights sampling a mask that spans [lo, hi] of the image at pixel
    centres (``grid_sample``, align_corners=False, zero padding)."""
    centres = np.arange(size_out, dtype=np.float32) + 0.5
    grid = (centres - lo) / (hi - lo) * 2 - 1
    src = ((grid + 1) * size_in - 1) / 2
    base = np.floor(src)
    frac = (src - base).astype(np.float32)
    m = np.zeros((size_out, size_in), np.float32)
    rows = np.arange(size_out)
    for idx, wk in ((base.astype(np.int64), 1 - frac), (base.astype(np.int64) + 1, frac)):
        ok = (idx >= 0) & (idx < size_in)
        m[rows[ok], idx[ok]] += wk[ok]
    return m
