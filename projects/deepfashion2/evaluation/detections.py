"""
Detections as flat arrays, and the official DeepFashion2 result formats.

The official formats are COCO's result lists: ``image_id`` (the number in the file name),
``category_id`` (1..13), ``score`` and one of ``bbox`` ``[x, y, w, h]``, ``keypoints`` (294 x 3,
zeros outside the item's category, x/y as the annotation files' pixel indices) or
``segmentation`` (RLE). Landmarks are kept compact (the category's own slice) plus, for the rare
result that puts non-zero values outside its category, the full vector: OKS against a ground truth
without labelled landmarks reads all 294 (as pycocotools does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import orjson
from pycocotools import mask as mask_util

from .. import landmarks as L
from ..errors import DeepFashion2Error
from ..utils.arrays import offsets

# result field -> the tasks it is scored in
FIELD_TASKS = {
    "bbox": ("bbox",),
    "segmentation": ("segm",),
    "keypoints": ("keypoints", "keypoints_vis"),
}


class ResultFormatError(DeepFashion2Error, ValueError):
    """A result entry that cannot be scored; names the file, the entry and the field."""

    def __init__(self, file: str, entry: int | None, fld: str, message: str):
        where = f"{file}" + (f", entry {entry}" if entry is not None else "")
        super().__init__(f"{where}, field '{fld}': {message}")
        self.file, self.entry, self.field = file, entry, fld


@dataclass
class Detections:
    image_id: np.ndarray  # (D,) int64
    category: np.ndarray  # (D,) int64, 1..13
    score: np.ndarray  # (D,) float64
    boxes: np.ndarray | None = None  # (D, 4) float64 XYWH
    kp_ptr: np.ndarray | None = None  # (D+1,) int64 into keypoints
    keypoints: np.ndarray | None = None  # (L, 3) float64, each detection's category slice
    kp_outside: dict[int, np.ndarray] = field(default_factory=dict)  # det -> (294, 3)
    masks: list | None = None  # (D,) RLE dicts

    def __len__(self) -> int:
        return len(self.score)

    @property
    def tasks(self) -> tuple[str, ...]:
        out: tuple[str, ...] = ()
        for fld, attr in (("bbox", "boxes"), ("segmentation", "masks"), ("keypoints", "keypoints")):
            if getattr(self, attr) is not None:
                out += FIELD_TASKS[fld]
        return out

    def full_keypoints(self, d: int) -> np.ndarray:
        """(294, 3) landmarks of detection ``d`` in the official layout."""
        if d in self.kp_outside:
            return self.kp_outside[d]
        return L.expand_landmarks(
            int(self.category[d]) - 1, self.keypoints[self.kp_ptr[d] : self.kp_ptr[d + 1]]
        )

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)] or parts[:1]
        if not parts:
            return cls(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.float64)))
        first = parts[0]
        if len({p.tasks for p in parts}) > 1:
            raise ValueError("cannot concatenate detections that carry different result fields")
        out = cls(
            image_id=np.concatenate([p.image_id for p in parts]),
            category=np.concatenate([p.category for p in parts]),
            score=np.concatenate([p.score for p in parts]),
        )
        if first.boxes is not None:
            out.boxes = np.concatenate([p.boxes for p in parts])
        if first.masks is not None:
            out.masks = [m for p in parts for m in p.masks]
        if first.keypoints is not None:
            out.keypoints = np.concatenate([p.keypoints for p in parts])
            ptrs, base, dbase = [np.zeros(1, dtype=np.int64)], 0, 0
            for p in parts:
                ptrs.append(p.kp_ptr[1:] + base)
                base += p.kp_ptr[-1]
                out.kp_outside.update({k + dbase: v for k, v in p.kp_outside.items()})
                dbase += len(p)
            out.kp_ptr = np.concatenate(ptrs)
        return out

    # ---- the official result formats ----

    def to_results(self, task: str) -> list[dict]:
        """Entries of the official result file of ``task`` ("bbox", "segm" or "keypoints")."""
        base = [
            {"image_id": i, "category_id": c, "score": s}
            for i, c, s in zip(self.image_id.tolist(), self.category.tolist(), self.score.tolist())
        ]
        if task == "bbox":
            for e, b in zip(base, self.boxes.tolist()):
                e["bbox"] = b
        elif task == "segm":
            for e, m in zip(base, self.masks):
                counts = m["counts"]
                e["segmentation"] = {
                    "size": list(m["size"]),
                    "counts": counts.decode() if isinstance(counts, bytes) else counts,
                }
        elif task == "keypoints":
            for d, e in enumerate(base):
                e["keypoints"] = self.full_keypoints(d).reshape(-1).tolist()
        else:
            raise ValueError(f"unknown task {task!r}")
        return base

    @classmethod
    def from_results(cls, entries: list, file: str, gt=None) -> "Detections":
        """
        Parse an official result list (one file). Every entry must carry the same result fields;
        ``gt`` (a GroundTruth) supplies image sizes for polygon masks and checks image ids.
        """
        if not isinstance(entries, list):
            raise ResultFormatError(file, None, "<top level>", "expected a list of results")
        n = len(entries)
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise ResultFormatError(file, i, "<entry>", "expected an object")
        fields = [f for f in FIELD_TASKS if n and f in entries[0]]
        for i, e in enumerate(entries):
            for f in FIELD_TASKS:
                if (f in e) != (f in fields):
                    raise ResultFormatError(
                        file, i, f, "every entry of a file must carry the same result fields"
                    )
        image_id = np.array(
            [entry_int(e, i, "image_id", file) for i, e in enumerate(entries)], np.int64
        )
        category = np.array([entry_int(e, i, "category_id", file) for i, e in enumerate(entries)])
        bad = np.flatnonzero((category < 1) | (category > L.NUM_CATEGORIES))
        if len(bad):
            raise ResultFormatError(file, int(bad[0]), "category_id", "must be 1..13")
        score = np.array(
            [entry_number(e, i, "score", file) for i, e in enumerate(entries)], np.float64
        )
        if gt is not None:
            missing = np.flatnonzero(gt.image_index(image_id) < 0)
            if len(missing):
                i = int(missing[0])
                raise ResultFormatError(
                    file, i, "image_id", f"{image_id[i]} is not an image of the split"
                )
        out = cls(image_id, category.astype(np.int64), score)
        if "bbox" in fields:
            out.boxes = _numbers(entries, "bbox", 4, file)
            bad = np.flatnonzero((out.boxes[:, 2] < 0) | (out.boxes[:, 3] < 0))
            if len(bad):
                raise ResultFormatError(file, int(bad[0]), "bbox", "negative width or height")
        if "keypoints" in fields:
            out.set_keypoints(_numbers(entries, "keypoints", 3 * L.NUM_LANDMARKS, file))
        if "segmentation" in fields:
            out.masks = [
                _rle(e["segmentation"], i, file, image_id[i], gt) for i, e in enumerate(entries)
            ]
        return out

    def set_keypoints(self, flat: np.ndarray) -> None:
        """(D, 882) official keypoints -> compact slices (+ full vectors where needed)."""
        full = flat.reshape(-1, L.NUM_LANDMARKS, 3)
        cat0 = self.category - 1
        counts = L.LANDMARK_COUNT[cat0]
        self.kp_ptr = offsets(counts)
        rows = np.repeat(np.arange(len(cat0)), counts)
        cols = np.arange(self.kp_ptr[-1]) - np.repeat(self.kp_ptr[:-1], counts)
        cols += np.repeat(L.LANDMARK_START[cat0], counts)
        self.keypoints = full[rows, cols]
        outside = L.LANDMARK_CATEGORY[None, :] != cat0[:, None]
        for d in np.flatnonzero((full[..., :2] != 0).any(-1).__and__(outside).any(-1)).tolist():
            self.kp_outside[d] = full[d].copy()


_INT64_MAX = 2**63 - 1


def _entry_field(e, i: int, fld: str, file: str):
    if not isinstance(e, dict):
        raise ResultFormatError(file, i, "<entry>", f"expected an object, got {type(e).__name__}")
    if fld not in e:
        raise ResultFormatError(file, i, fld, "missing")
    return e[fld]


def _finite_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def entry_int(e: dict, i: int, fld: str, file: str) -> int:
    """Field ``fld`` of result entry ``i`` as an int64-sized integer (``1.0`` is accepted)."""
    v = _entry_field(e, i, fld, file)
    if not _finite_number(v) or v != int(v) or abs(v) > _INT64_MAX:
        raise ResultFormatError(file, i, fld, f"expected an integer, got {v!r}")
    return int(v)


def entry_number(e: dict, i: int, fld: str, file: str) -> float:
    """Field ``fld`` of result entry ``i`` as a finite float."""
    v = _entry_field(e, i, fld, file)
    if not _finite_number(v):
        raise ResultFormatError(file, i, fld, f"expected a finite number, got {v!r}")
    return float(v)


def _numbers(entries: list, fld: str, n: int, file: str) -> np.ndarray:
    """(len(entries), n) float64; the first malformed entry is named."""
    try:
        arr = np.array([e[fld] for e in entries], dtype=np.float64)
        if arr.shape == (len(entries), n) and np.isfinite(arr).all():
            return arr
    except (ValueError, TypeError):
        pass
    for i, e in enumerate(entries):
        v = e[fld]
        if not isinstance(v, list) or len(v) != n:
            raise ResultFormatError(file, i, fld, f"expected a list of {n} numbers")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ResultFormatError(file, i, fld, f"{x!r} is not a finite number")
    raise AssertionError("unreachable")  # pragma: no cover


MAX_MASK_SIDE = 100_000
# numbers in one result's polygons: a garment's outline has a few hundred points (the dataset's
# own polygons, the official converter's masks); 10^6 points would take pycocotools minutes
MAX_POLYGON_NUMBERS = 20_000


def _rle_problem(size: list, counts) -> str | None:
    """What is wrong with an RLE's size and counts, or None: the runs must cover h * w pixels."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        return f"size {size!r} is not two integers"
    h, w = size
    if not (0 <= h <= MAX_MASK_SIDE and 0 <= w <= MAX_MASK_SIDE):
        return f"size {size!r} outside 0..{MAX_MASK_SIDE}"
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "counts must be non-negative integers"
        runs = counts
    else:
        runs = _decode_counts(counts)
        if runs is None:
            return "counts is not a COCO-compressed string"
    if sum(runs) != h * w:
        return f"the runs cover {sum(runs)} pixels, the size {h} x {w} = {h * w}"
    return None


def _decode_counts(text: str) -> list[int] | None:
    """The runs of a COCO-compressed counts string (pycocotools' rleFrString), or None."""
    runs: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None  # a run cut short
            c = ord(text[p]) - 48
            if not 0 <= c <= 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            return None
        runs.append(x)
    return runs


def _rle(seg, i: int, file: str, image_id: int, gt) -> dict:
    """An RLE mask (COCO result format); polygons are accepted and rasterised at the image size."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and isinstance(counts, (str, list))):
            raise ResultFormatError(file, i, "segmentation", "expected an RLE {size, counts}")
        problem = _rle_problem(size, counts)
        if problem:  # pycocotools would read past its buffers or crash on these
            raise ResultFormatError(file, i, "segmentation", f"malformed RLE: {problem}")
        if isinstance(counts, list):  # uncompressed RLE
            seg = mask_util.frPyObjects(seg, size[0], size[1])
        else:
            seg = {"size": size, "counts": counts.encode()}
    elif isinstance(seg, list):
        if gt is None:
            raise ResultFormatError(file, i, "segmentation", "polygons need the image size")
        if not all(isinstance(p, list) for p in seg):
            raise ResultFormatError(file, i, "segmentation", "polygons must be lists of numbers")
        if sum(len(p) for p in seg) > MAX_POLYGON_NUMBERS:
            raise ResultFormatError(
                file, i, "segmentation", f"polygons of more than {MAX_POLYGON_NUMBERS} numbers"
            )
        for p in seg:
            for x in p:
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                    raise ResultFormatError(file, i, "segmentation", f"{x!r} is not a number")
        k = int(gt.image_index([image_id])[0])
        h, w = int(gt.heights[k]), int(gt.widths[k])
        try:
            seg = mask_util.merge(mask_util.frPyObjects(seg, h, w))
        except Exception as ex:  # pycocotools raises plain Exceptions for bad polygons
            raise ResultFormatError(file, i, "segmentation", f"bad polygons: {ex}") from None
    else:
        raise ResultFormatError(file, i, "segmentation", "expected an RLE or polygons")
    if gt is not None:
        k = int(gt.image_index([image_id])[0])
        if list(seg["size"]) != [int(gt.heights[k]), int(gt.widths[k])]:
            raise ResultFormatError(
                file, i, "segmentation", f"size {seg['size']} is not the image's (height, width)"
            )
    return seg


def read_json(path: str):
    """A result or ground-truth file's JSON; invalid JSON is a :class:`ResultFormatError`."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        hint = " (NaN and Infinity are not JSON)" if b"NaN" in data or b"Infinity" in data else ""
        what = "empty file" if not data.strip() else f"invalid JSON{hint}: {e}"
        raise ResultFormatError(path, None, "<json>", what) from None
    if b"true" in data or b"false" in data:  # rare in a result file: then look for bools
        _refuse_bools_in_lists(obj, path)
    return obj


def _refuse_bools_in_lists(entries, file: str) -> None:
    """``true`` where a list of numbers is expected: numpy would read it as 1.0."""
    if not isinstance(entries, list):
        return
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            continue
        for fld in ("bbox", "keypoints"):
            v = e.get(fld)
            if isinstance(v, list) and any(isinstance(x, bool) for x in v):
                raise ResultFormatError(file, i, fld, "true/false where a number is expected")


def load_result_files(files: dict[str, list], gt=None) -> dict[str, Detections]:
    """
    task -> detections from official result lists (``{path: entries}``, as :func:`read_json`
    gives them), each file's kind recognised from its fields. A file that carries several fields
    (e.g. Detectron2's combined box + mask results) serves each of them, unless another file is
    dedicated to that task alone.
    """
    by_task: dict[str, list[tuple[int, str, Detections]]] = {}
    for path, entries in files.items():
        dets = Detections.from_results(entries, path, gt)
        fields = [f for f in FIELD_TASKS if entries and f in entries[0]]
        if entries and not fields:
            raise ResultFormatError(path, 0, "<entry>", "no bbox, keypoints or segmentation")
        for t in dets.tasks:
            by_task.setdefault(t, []).append((len(fields), path, dets))
    out = {}
    for task, cands in by_task.items():
        cands.sort(key=lambda c: c[0])
        if len(cands) > 1 and cands[0][0] == cands[1][0]:
            raise ResultFormatError(
                cands[1][1], None, "<file>", f"{task} results given twice (also in {cands[0][1]})"
            )
        out[task] = cands[0][2]
    return out
