"""
Run a DeepFashion2 model exported by ``tools/deploy/export_model.py`` without Detectron2 or the
project: ONNX Runtime and numpy for ``.onnx``, torch alone for ``.ts`` (TorchScript). Pillow
resizes the image as Detectron2 does.

    from deepfashion2_runtime import ExportedModel

    model = ExportedModel("model.onnx")
    found = model(rgb)  # (H, W, 3) uint8 RGB
    found["boxes"]       # (N, 4) XYXY in image pixels
    found["scores"]      # (N,)
    found["categories"]  # (N,) 1..13
    found["masks"]       # (N, H, W) bool
    found["landmarks"]   # (N, 294, 3) x, y, score; zeros outside each garment's category
    found["embeddings"]  # (N, E) unit length: the retrieval embedding
"""

from .runtime import ExportedModel, decode_landmarks, paste_masks, resized_shape

__all__ = ["ExportedModel", "decode_landmarks", "paste_masks", "resized_shape"]
