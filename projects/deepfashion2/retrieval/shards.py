"""
The catalogue's shard format: one batch of indexed images as a checked folder
(:mod:`..utils.checked`) of ``shards/``::

    images.json        the images' paths, relative to the image folder (those without any
                       garment included); names a file system gave that are not UTF-8 are kept
                       exactly (JSON ``\\udcXX`` escapes)
    image_bytes.npy    (I,) each image's size in bytes when it was indexed (-1: unknown): an image
                       is served only while it is that file
    skipped.json       images that could not be read, with the reason
    boxes.npy (n, 4) XYXY, categories.npy (n,) 1..13, scores.npy (n,), embeddings.npy (n, E),
    image.npy (n,) index into images.json
    manifest.json      the weights' sha256, the embedding size, each file's size and CRC-32

At load every file is checked against the manifest and the contents are validated (categories
1..13, image indices within images.json, finite unit-length embeddings, relative image paths).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from ..landmarks import NUM_CATEGORIES
from ..utils.checked import (
    CheckedFolderError,
    load_npy,
    ordered_name,
    parse_json,
    read_file,
    read_manifest,
    write_folder,
)
from .errors import CatalogueError

KIND = "deepfashion2 catalogue shard"
COLUMNS = ("boxes", "categories", "scores", "embeddings", "image")
UNIT_TOLERANCE = 1e-3  # |norm - 1| of a stored embedding (float32 rounding is ~1e-7)


@dataclass
class Shard:
    path: str
    images: list[str]
    image_bytes: np.ndarray  # (I,) int64, -1 = unknown
    skipped: dict[str, str]
    columns: dict[str, np.ndarray]
    key: str  # digest of the manifest's file list: the shard's content


def write_shard(
    shards: str,
    images: list[str],
    image_bytes: list[int],
    detections: list[tuple],
    skipped: dict[str, str],
    weights_sha256: str,
    dim: int,
) -> str:
    """A new shard in ``shards/``, named in creation order (an image indexed twice keeps its
    first entries). Atomic."""
    cols = stack(detections, dim)
    validate_columns(cols, len(images), dim, shards)
    files = {n + ".npy": cols[n] for n in COLUMNS}
    files["image_bytes.npy"] = np.asarray(image_bytes, np.int64).reshape(len(images))
    files["images.json"] = json.dumps(list(images)).encode()
    files["skipped.json"] = json.dumps(dict(skipped or {})).encode()
    name = ordered_name()
    meta = {"weights_sha256": weights_sha256, "embed_dim": dim}
    return write_folder(shards, name, files, meta, kind=KIND)


def read_shard(path: str, weights_sha256: str, dim: int) -> Shard:
    try:
        manifest = read_manifest(path, KIND)
        if manifest.get("weights_sha256") != weights_sha256 or manifest.get("embed_dim") != dim:
            raise CatalogueError(
                path,
                f"written by weights {manifest.get('weights_sha256')} (embedding size "
                f"{manifest.get('embed_dim')}), not the catalogue's {weights_sha256} ({dim})",
            )
        data = {n: read_file(path, manifest, n) for n in shard_files()}
        images = parse_json(data["images.json"], os.path.join(path, "images.json"))
        skipped = parse_json(data["skipped.json"], os.path.join(path, "skipped.json"))
        cols = {n: load_npy(data[n + ".npy"], os.path.join(path, n + ".npy")) for n in COLUMNS}
        sizes = load_npy(data["image_bytes.npy"], os.path.join(path, "image_bytes.npy"))
    except CheckedFolderError as e:
        raise CatalogueError(e.path, e.reason) from None
    if not (isinstance(images, list) and all(relative_path(p) for p in images)):
        raise CatalogueError(f"{path}/images.json", "not a list of relative image paths")
    if not (isinstance(skipped, dict) and all(relative_path(p) for p in skipped)):
        raise CatalogueError(f"{path}/skipped.json", "not a map of relative image paths")
    if sizes.shape != (len(images),) or sizes.dtype.kind != "i":
        raise CatalogueError(f"{path}/image_bytes.npy", "not one integer per image")
    validate_columns(cols, len(images), dim, path)
    key = hashlib.sha1(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
    skipped = {str(k): str(v) for k, v in skipped.items()}
    return Shard(path, images, sizes, skipped, cols, key)


def shard_files() -> list[str]:
    return [n + ".npy" for n in COLUMNS] + ["image_bytes.npy", "images.json", "skipped.json"]


def relative_path(p) -> bool:
    return (
        isinstance(p, str)
        and bool(p)
        and not os.path.isabs(p)
        and ".." not in p.split("/")
        and "\0" not in p
    )


def validate_columns(cols: dict, num_images: int, dim: int, where: str) -> None:
    """Shapes, dtypes and values a shard's arrays must have; the first violation is named."""
    n = len(cols["image"])
    expect = {"boxes": (n, 4), "categories": (n,), "scores": (n,), "embeddings": (n, dim)}
    for name, shape in expect.items():
        if cols[name].shape != shape:
            raise CatalogueError(
                f"{where}/{name}.npy", f"shape {cols[name].shape}, expected {shape}"
            )
    for name in COLUMNS:
        kind = "i" if name in ("categories", "image") else "f"
        if cols[name].dtype.kind != kind:
            raise CatalogueError(f"{where}/{name}.npy", f"dtype {cols[name].dtype}")
    c, img = cols["categories"], cols["image"]
    if n and (c.min() < 1 or c.max() > NUM_CATEGORIES):
        raise CatalogueError(f"{where}/categories.npy", f"a category outside 1..{NUM_CATEGORIES}")
    if n and (img.min() < 0 or img.max() >= num_images):
        raise CatalogueError(f"{where}/image.npy", "an index outside images.json")
    for name in ("boxes", "scores", "embeddings"):
        if not np.isfinite(cols[name]).all():
            raise CatalogueError(f"{where}/{name}.npy", "a value that is not finite")
    norms = np.linalg.norm(cols["embeddings"].astype(np.float64), axis=1)
    if n and np.abs(norms - 1).max() > UNIT_TOLERANCE:
        raise CatalogueError(f"{where}/embeddings.npy", "an embedding that is not unit length")


def stack(detections: list[tuple], dim: int) -> dict[str, np.ndarray]:
    """Per-image ``(boxes, categories, scores, embeddings)`` as the shard's columns."""
    boxes, cats, scores, embs, image = [], [], [], [], []
    for i, (b, c, s, e) in enumerate(detections):
        boxes.append(np.asarray(b, np.float64).reshape(-1, 4))
        cats.append(np.asarray(c, np.int64))
        scores.append(np.asarray(s, np.float64))
        embs.append(np.asarray(e, np.float32).reshape(-1, dim))
        image.append(np.full(len(boxes[-1]), i, np.int64))
    if not detections:
        return {
            "boxes": np.zeros((0, 4)),
            "categories": np.zeros(0, np.int64),
            "scores": np.zeros(0),
            "embeddings": np.zeros((0, dim), np.float32),
            "image": np.zeros(0, np.int64),
        }
    return {
        "boxes": np.concatenate(boxes),
        "categories": np.concatenate(cats),
        "scores": np.concatenate(scores),
        "embeddings": np.concatenate(embs),
        "image": np.concatenate(image),
    }
