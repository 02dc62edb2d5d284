"""Detect and embed the garments of any images, exactly as the retrieval evaluator sees them."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import stat

import numpy as np
import torch
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from PIL import Image

from ...config import retrieval_policy
from ...data import DeepFashion2FormatError, DeepFashion2Mapper
from ...engine import DeepFashion2Checkpointer
from ...errors import FileError
from ...evaluation.retrieval_evaluator import best_detections
from ...export import to_instances
from ...model_zoo import sha256_of
from ...modeling import with_tta

logger = logging.getLogger(__name__)

# Pixels an image may have, read from its header before anything is decoded: a 40 kB PNG can
# claim 100000 x 100000 pixels (a decompression bomb). 50 MP is a 8660 x 5773 photo.
MAX_PIXELS = 50_000_000


class UnreadableImageError(FileError, ValueError):
    """An image that cannot be searched or indexed: ``path`` (or the upload's name), ``reason``."""


# what the catalogue indexes (list_images) and the service serves, by the type PIL reads
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


def check_image(source: str | bytes, name: str = "upload") -> tuple[int, int]:
    """
    Refuse, before decoding, what is not a plain image of a sane size: a missing file, a special
    file (a FIFO would block the reader), an empty file or upload, what PIL cannot identify, or
    more than ``MAX_PIXELS`` pixels by its header. ``source``: a path, or an upload's bytes
    (named ``name`` in errors). Returns (width, height) from the header.
    """
    with _open_checked(source, name) as im:
        return im.size


def image_type(path: str) -> str:
    """The content type of an image file :func:`check_image` accepts and the service serves
    (JPEG or PNG, by its content, not its name); :class:`UnreadableImageError` otherwise."""
    with _open_checked(path, path) as im:
        kind = IMAGE_TYPES.get(im.format)
    if kind is None:
        raise UnreadableImageError(path, f"a {im.format} image: only JPEG and PNG are served")
    return kind


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """An upload's pixels, (H, W, 3) uint8 RGB, after :func:`check_image`'s checks (the header
    first: no decompression bomb is decoded), EXIF orientation applied as Detectron2 does."""
    with _open_checked(data, name) as im:
        try:
            im.load()
            return detection_utils.convert_PIL_to_numpy(
                detection_utils._apply_exif_orientation(im), "RGB"
            )
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableImageError(name, f"cannot decode: {e}") from None


@contextlib.contextmanager
def _open_checked(source: str | bytes, name: str):
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise UnreadableImageError(name, "empty upload (0 bytes)")
        fp, name = io.BytesIO(source), name
    else:
        name = fp = source
        try:
            st = os.stat(source)  # follows links; a link loop or a dangling link fails here
        except OSError as e:
            raise UnreadableImageError(source, e.strerror) from None
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableImageError(source, "not a plain file")
        if st.st_size == 0:
            raise UnreadableImageError(source, "empty file")
    too_large = f"more than the {MAX_PIXELS:,} pixels accepted (by its header)"
    try:
        im = Image.open(fp)  # reads the header only
    except Image.DecompressionBombError:  # PIL's own, far larger limit
        raise UnreadableImageError(name, too_large) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(name, f"not an image ({e})") from None
    with im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise UnreadableImageError(name, f"{w} x {h} pixels, {too_large}")
        yield im


def model_identity(cfg, config_name: str = "") -> dict:
    """What a catalogue records about its model: config, weights sha256, embedding size, policy."""
    weights = PathManager.get_local_path(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else ""
    return {
        "config": config_name,
        "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": sha256_of(weights) if weights else "untrained",
        "embed_dim": int(cfg.MODEL.ROI_MATCH_HEAD.EMBED_DIM),
        "policy": retrieval_policy(cfg),
    }


class _Policy:
    """Galleries and queries by a model's retrieval policy (``min_score``, ``gallery_per_image``,
    ``max_per_image``), from ``__call__(images, limit, min_score)``."""

    def gallery(self, paths: list) -> list[tuple]:
        """What a shop image contributes to a catalogue (the evaluator's gallery policy)."""
        return self(paths, self.gallery_per_image)

    def queries(
        self, images: list, max_garments: int | None = None, min_score: float | None = None
    ) -> list[tuple]:
        """What a consumer photo contributes as queries (default: the benchmark's policy)."""
        return self(images, max_garments or self.max_per_image, min_score)


class GarmentEmbedder(_Policy):
    """
    The trained model of ``cfg`` (``MODEL.WEIGHTS``) in inference mode. Images go through the
    test-time mapper the evaluator uses, in batches of images of the same padded size (so an
    image's result does not depend on which others share its batch).
    """

    def __init__(self, cfg, batch_size: int = 4):
        if not cfg.MODEL.MATCH_ON:
            raise ValueError("the model has no matching head (MODEL.MATCH_ON False)")
        self.cfg = cfg
        self.model = build_model(cfg).eval()
        # .pth or deepfashion2:// only: read without running code (weights a catalogue names)
        DeepFashion2Checkpointer(self.model, allow_pickle=False).load(cfg.MODEL.WEIGHTS)
        self.divisor = max(self.model.backbone.size_divisibility, 1)
        # TEST.AUG.ENABLED: the slower, flip- (and scale-) averaged embedding
        self.model = with_tta(cfg, self.model)
        self.mapper = DeepFashion2Mapper(cfg, is_train=False)
        self.batch_size = batch_size
        r = cfg.DEEPFASHION2.RETRIEVAL
        self.min_score = r.MIN_SCORE
        self.gallery_per_image = min(r.GALLERY_PER_IMAGE, r.MAX_PER_IMAGE)
        self.max_per_image = r.MAX_PER_IMAGE

    def __call__(
        self, images: list, limit: int, min_score: float | None = None
    ) -> list[tuple | UnreadableImageError]:
        """
        For each image (a path, or pixels (H, W, 3) uint8 RGB as :func:`decode_image` gives),
        its ``limit`` best garments with score >= ``min_score`` (default: the config's
        ``MIN_SCORE``): (boxes, categories 1..13, scores, emb), or the
        :class:`UnreadableImageError` that says why it could not be read (the others are still
        processed).
        """
        min_score = self.min_score if min_score is None else min_score
        inputs: dict[int, dict] = {}
        out: list = [None] * len(images)
        for i, p in enumerate(images):
            try:
                if isinstance(p, np.ndarray):
                    inputs[i] = self._input(p, i)
                    continue
                check_image(p)
                inputs[i] = self.mapper({"file_name": p, "image_id": i})
            except UnreadableImageError as e:
                out[i] = e
            except DeepFashion2FormatError as e:  # decoding failed after an intact header
                out[i] = UnreadableImageError(p, e.message)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, x in inputs.items():
            h, w = x["image"].shape[-2:]
            key = (-(-h // self.divisor), -(-w // self.divisor))
            buckets.setdefault(key, []).append(i)
        with torch.no_grad():
            for members in buckets.values():
                for s in range(0, len(members), self.batch_size):
                    batch = members[s : s + self.batch_size]
                    for i, o in zip(batch, self.model([inputs[i] for i in batch])):
                        inst = o["instances"].to(torch.device("cpu"))
                        out[i] = best_detections(inst, min_score, limit)
        return out

    def _input(self, rgb: np.ndarray, i: int) -> dict:
        """What the test mapper makes of a file, from pixels: the config's format and test
        resize; ``height`` / ``width`` of the original, where predictions are put back."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UnreadableImageError(f"image {i}", f"pixels {rgb.shape} {rgb.dtype}, not RGB")
        image = rgb[:, :, ::-1] if self.mapper.image_format == "BGR" else rgb
        aug = T.AugInput(np.ascontiguousarray(image))
        self.mapper.augmentations(aug)
        chw = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        return {"image": chw, "height": rgb.shape[0], "width": rgb.shape[1], "image_id": i}

    @functools.cached_property
    def identity(self) -> dict:
        """:func:`model_identity` of this model (hashes the weights once, not per search)."""
        return model_identity(self.cfg)


class ExportedEmbedder(_Policy):
    """
    :class:`GarmentEmbedder` with a model exported by ``tools/deploy/export_model.py`` (``.onnx``
    or ``.ts``, run by ``deepfashion2_runtime``): the same answers, the same policy (the export
    carries its config's), and an identity of its own (the exported file's sha256), so that a
    catalogue indexed with one form of a model is searched with that form.
    """

    def __init__(self, path: str, threads: int | None = None):
        from deepfashion2_runtime import ExportedModel

        if not os.path.isfile(path):
            raise FileError(
                path, "no such exported model", "tools/deploy/export_model.py writes one"
            )
        self.path = path
        self.model = ExportedModel(path, threads)
        meta = self.model.meta
        if "embeddings" not in self.model.outputs:
            raise ValueError(f"{path}: exported without a matching head (MODEL.MATCH_ON False)")
        policy = meta["policy"]
        self.min_score = policy["min_score"]
        self.gallery_per_image = min(policy["gallery_per_image"], policy["max_per_image"])
        self.max_per_image = policy["max_per_image"]

    @functools.cached_property
    def identity(self) -> dict:
        return {
            "config": os.path.basename(self.path),
            "weights": self.path,
            "weights_sha256": sha256_of(self.path),
            "embed_dim": int(self.model.meta["embed_dim"]),
            "policy": dict(self.model.meta["policy"]),
            "exported": True,
        }

    def __call__(self, images: list, limit: int, min_score: float | None = None) -> list:
        """As :meth:`GarmentEmbedder.__call__`."""
        min_score = self.min_score if min_score is None else min_score
        out: list = []
        for image in images:
            try:
                rgb = image if isinstance(image, np.ndarray) else read_rgb(image)
            except UnreadableImageError as e:
                out.append(e)
                continue
            inst = to_instances(self.model(rgb), rgb.shape[:2])
            out.append(best_detections(inst, min_score, limit))  # as GarmentEmbedder chooses
        return out


def read_rgb(path: str) -> np.ndarray:
    """A file's pixels (H, W, 3) uint8 RGB, after :func:`check_image`'s checks (first: opening
    a FIFO would block)."""
    check_image(path)
    with open(path, "rb") as f:
        return decode_image(f.read(), path)


def list_images(folder: str, extensions=(".jpg", ".jpeg", ".png")) -> list[str]:
    """
    Image files under ``folder`` (recursively), as sorted paths relative to it. Symbolic links
    are followed, to files and to folders; a folder reached twice (a link loop, or two links to
    one folder) is read once, under the first of its paths, and the others are logged.
    """
    out, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            logger.warning(
                f"{root}: already read as {real} (a link loop or a second link): not read again"
            )
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in files:
            if name.lower().endswith(extensions):
                out.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(out)
