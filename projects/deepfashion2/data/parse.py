"""
Parse and validate one DeepFashion2 annotation file.

Everything here is plain Python + numpy so that worker processes stay light. A problem raises
:class:`DeepFashion2FormatError`, which names the file, the item and the field; the caller decides
whether that stops the load (strict) or skips the item and counts it (lenient).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field

import imagesize
import numpy as np
import orjson

from ..errors import DeepFashion2Error
from ..landmarks import ATTRIBUTES, CATEGORY_BY_ID, SOURCES
from ..utils.arrays import plain_number

ITEM_ATTRIBUTES = tuple(ATTRIBUTES)  # scale, occlusion, zoom_in, viewpoint


class DeepFashion2FormatError(DeepFashion2Error, ValueError):
    """A malformed annotation. ``reason`` is a short key used to count skips in lenient mode."""

    hint = "--lenient skips such items, counted (LENIENT=1 for make demo)"

    def __init__(self, file: str, item: str | None, field: str, message: str, reason: str = ""):
        self.file, self.item, self.field, self.message = file, item, field, message
        self.reason = reason or f"{field}: {message}"
        where = f"{file}: {item}: {field}" if item else f"{file}: {field}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep the fields across process boundaries
        return (type(self), (self.file, self.item, self.field, self.message, self.reason))


@dataclass
class ParsedItem:
    item_id: int  # N of "itemN"
    category_id: int  # 0-based contiguous
    style: int
    attributes: tuple[int, int, int, int]  # scale, occlusion, zoom_in, viewpoint (1-based)
    bbox: tuple[float, float, float, float]  # XYXY, absolute pixels
    landmarks: np.ndarray  # (K_c, 3) float64, the category's own landmarks, as in the file
    polygons: list[np.ndarray]  # flat float64 [x0, y0, x1, y1, ...] each


@dataclass
class ParsedImage:
    image_id: int
    height: int
    width: int
    source: int  # index into SOURCES
    pair_id: int
    items: list[ParsedItem] = field(default_factory=list)


# Ids are stored as int32 (item numbers) and written to COCO-style files whose readers use 32-bit
# ids; a larger number in a file name or an item key is refused rather than wrapped.
MAX_ID = 2**31 - 1
# Bounds far above the dataset's own files (a few kB, a handful of garments each; at most 2 in
# the real samples), so that a hostile file is refused at once instead of parsed for minutes.
MAX_ANNOTATION_BYTES = 16 << 20
MAX_ITEMS = 1000


def _ascii_number(text: str) -> int | None:
    """``int(text)`` for plain ASCII digits within ``MAX_ID``; None otherwise ('\u0661' is a
    digit to ``str.isdigit`` but not a number a DeepFashion2 file holds)."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def image_id_from_name(path: str) -> int:
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    value = _ascii_number(stem)
    if value is None:
        raise DeepFashion2FormatError(
            path,
            None,
            "file name",
            f"must be a number of ASCII digits up to {MAX_ID} (e.g. 000001.json), got {stem!r}",
            "file name: not numeric",
        )
    return value


def item_keys(anno_file: str, obj: dict) -> list[str]:
    """
    The ``itemN`` keys of an annotation object in the file's order. Other keys than ``source``
    and ``pair_id`` are ignored (as the official tools ignore them); a key that starts with
    ``item`` but is not ``item`` + a number, or two keys with the same number (``item01`` beside
    ``item1``), are refused: an item is never silently dropped or doubled.
    """
    names, seen = [], {}
    for k in obj:
        if not k.startswith("item"):
            continue
        if len(names) == MAX_ITEMS:
            raise DeepFashion2FormatError(
                anno_file, None, "items", f"more than {MAX_ITEMS} items", "items: too many"
            )
        n = _ascii_number(k[4:])
        if n is None:
            raise DeepFashion2FormatError(
                anno_file,
                k[:40],
                "item key",
                f"expected 'item' + a number of ASCII digits up to {MAX_ID}",
                "item key: invalid",
            )
        if n in seen:
            raise DeepFashion2FormatError(
                anno_file,
                k,
                "item key",
                f"same item number {n} as {seen[n]!r}",
                "item key: duplicate",
            )
        seen[n] = k
        names.append(k)
    return names


def _require_plain_file(anno_file: str, path: str, what: str) -> None:
    """Refuse a FIFO, a device or a folder before opening it (a FIFO blocks the reader)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # the caller reports a missing file in its own words
    except OSError as e:  # a link loop
        raise DeepFashion2FormatError(
            anno_file, None, what, f"unreadable {path}: {e.strerror}", f"{what}: unreadable"
        ) from None
    if not stat.S_ISREG(mode):
        raise DeepFashion2FormatError(
            anno_file, None, what, f"{path} is not a plain file", f"{what}: not a plain file"
        )


def read_image_size(anno_file: str, image_path: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding pixels."""
    _require_plain_file(anno_file, image_path, "image")
    try:
        w, h = imagesize.get(image_path)
    except FileNotFoundError:
        raise DeepFashion2FormatError(
            anno_file, None, "image", f"missing image {image_path}", "image: missing"
        ) from None
    except OSError as e:
        raise DeepFashion2FormatError(
            anno_file, None, "image", f"unreadable image {image_path}: {e}", "image: unreadable"
        ) from None
    if w <= 0 or h <= 0:
        if not os.path.exists(image_path):  # imagesize reports a missing file as -1 x -1
            raise DeepFashion2FormatError(
                anno_file, None, "image", f"missing image {image_path}", "image: missing"
            )
        raise DeepFashion2FormatError(
            anno_file, None, "image", f"unreadable image header {image_path}", "image: unreadable"
        )
    return int(h), int(w)


_NUMBER_TYPES = frozenset({int, float})


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _margin(side: int) -> float:
    """How far beyond the image border a labelled landmark may lie: 5% of the side, >= 8 px."""
    return max(8.0, 0.05 * side)


class _ItemParser:
    """Validates one item; ``fail`` raises with file and item filled in."""

    def __init__(self, file: str, name: str, obj, height: int, width: int):
        self.file, self.name, self.obj, self.h, self.w = file, name, obj, height, width

    def fail(self, fld: str, message: str, reason: str = "") -> None:
        raise DeepFashion2FormatError(self.file, self.name, fld, message, reason)

    def get(self, fld: str):
        if fld not in self.obj:
            self.fail(fld, "missing", f"{fld}: missing")
        return self.obj[fld]

    def int_in(self, fld: str, lo: int, hi: int) -> int:
        v = self.get(fld)
        if not _is_int(v):
            self.fail(fld, f"expected an integer, got {v!r}", f"{fld}: wrong type")
        if not lo <= v <= hi:
            self.fail(fld, f"{v} is outside {lo}..{hi}", f"{fld}: out of range")
        return v

    def numbers(self, fld: str, value, what: str) -> np.ndarray:
        """A list of finite numbers -> float64 array (exact: Python floats are float64)."""
        if not isinstance(value, list):
            self.fail(
                fld, f"expected a list of numbers, got {type(value).__name__}", f"{fld}: wrong type"
            )
        # fast path: type check and conversion in C; the slow loop only finds what is wrong
        if set(map(type, value)) <= _NUMBER_TYPES:
            arr = np.array(value, dtype=np.float64)
            if np.isfinite(arr).all():
                return arr
        for i, v in enumerate(value):
            if not _is_num(v):
                reason = "NaN or infinite" if isinstance(v, float) else "wrong type"
                self.fail(fld, f"{what} value {i} is {v!r}", f"{fld}: {reason}")
        raise AssertionError("unreachable")

    def parse(self) -> ParsedItem:
        if not isinstance(self.obj, dict):
            self.fail(
                "item", f"expected an object, got {type(self.obj).__name__}", "item: wrong type"
            )
        cid = self.int_in("category_id", 1, 13)
        cat = CATEGORY_BY_ID[cid]
        name = self.get("category_name")
        if name != cat.name:
            self.fail(
                "category_name",
                f"{name!r} does not match category_id {cid} ({cat.name!r})",
                "category_name: mismatch",
            )
        style = self.int_in("style", 0, 2**31 - 1)
        attrs = tuple(self.int_in(a, 1, len(ATTRIBUTES[a])) for a in ITEM_ATTRIBUTES)

        raw_box = self.get("bounding_box")
        box = self.numbers("bounding_box", raw_box, "box")
        if len(box) != 4:
            self.fail(
                "bounding_box", f"expected 4 numbers, got {len(box)}", "bounding_box: wrong length"
            )
        x1, y1, x2, y2 = box.tolist()
        if x2 <= x1 or y2 <= y1:
            self.fail(
                "bounding_box",
                f"{raw_box} is empty or inverted (x1<x2, y1<y2 needed)",
                "bounding_box: inverted",
            )
        if x1 < 0 or y1 < 0 or x2 > self.w or y2 > self.h:
            self.fail(
                "bounding_box",
                f"{raw_box} is outside the {self.w}x{self.h} image",
                "bounding_box: outside image",
            )

        lms = self.numbers("landmarks", self.get("landmarks"), "landmark")
        if len(lms) != 3 * cat.num_landmarks:
            self.fail(
                "landmarks",
                f"expected {3 * cat.num_landmarks} values ({cat.num_landmarks} landmarks x 3) for "
                f"category {cid} {cat.name!r}, got {len(lms)}",
                "landmarks: wrong count for category",
            )
        landmarks = lms.reshape(-1, 3)
        vis = landmarks[:, 2]
        if not np.isin(vis, (0, 1, 2)).all():
            bad = int(np.flatnonzero(~np.isin(vis, (0, 1, 2)))[0])
            self.fail(
                "landmarks",
                f"visibility of landmark {bad + 1} is {plain_number(vis[bad])} (0, 1 or 2)",
                "landmarks: bad visibility",
            )
        # labelled landmarks lie in the image; a few pixels beyond its border are tolerated
        # (annotators click on the edge), far beyond is a corrupt coordinate
        mx, my = _margin(self.w), _margin(self.h)
        x, y = landmarks[:, 0], landmarks[:, 1]
        outside = (vis > 0) & ((x < -mx) | (x > self.w + mx) | (y < -my) | (y > self.h + my))
        if outside.any():
            bad = int(np.flatnonzero(outside)[0])
            self.fail(
                "landmarks",
                f"landmark {bad + 1} at ({plain_number(x[bad])}, {plain_number(y[bad])}) is "
                f"outside the {self.w}x{self.h} image",
                "landmarks: outside image",
            )

        segm = self.get("segmentation")
        if not isinstance(segm, list) or not segm:
            self.fail(
                "segmentation", "expected a non-empty list of polygons", "segmentation: wrong type"
            )
        polygons = []
        for k, poly in enumerate(segm):
            coords = self.numbers("segmentation", poly, f"polygon {k}")
            if len(coords) % 2:
                self.fail(
                    "segmentation",
                    f"polygon {k} has an odd number of coordinates ({len(coords)})",
                    "segmentation: odd coordinate count",
                )
            if len(coords) < 6:
                self.fail(
                    "segmentation",
                    f"polygon {k} has {len(coords) // 2} points (3 needed)",
                    "segmentation: fewer than 3 points",
                )
            polygons.append(coords)
        return ParsedItem(
            item_id=int(self.name[4:]),
            category_id=cid - 1,
            style=style,
            attributes=attrs,  # type: ignore[arg-type]
            bbox=(x1, y1, x2, y2),
            landmarks=landmarks,
            polygons=polygons,
        )


def parse_annotation(
    anno_file: str,
    image_path: str,
    image_id: int | None = None,
    lenient: bool = False,
    skips: dict | None = None,
) -> ParsedImage:
    """
    Parse one ``annos/NNNNNN.json`` with its image. In lenient mode a bad item is skipped and
    counted in ``skips`` (reason -> count); file-level problems always raise.
    """
    if image_id is None:
        image_id = image_id_from_name(anno_file)
    try:
        _require_plain_file(anno_file, anno_file, "file")
        with open(anno_file, "rb") as f:
            raw = f.read(MAX_ANNOTATION_BYTES + 1)
        if len(raw) > MAX_ANNOTATION_BYTES:
            raise DeepFashion2FormatError(
                anno_file,
                None,
                "file",
                f"more than {MAX_ANNOTATION_BYTES:,} bytes",
                "file: too large",
            )
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:  # NaN/Infinity literals: not JSON, but Python's json writes them; report the field
            obj = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's
            raise DeepFashion2FormatError(
                anno_file, None, "json", f"invalid JSON: {e}", "json: invalid"
            ) from None
    except OSError as e:
        raise DeepFashion2FormatError(
            anno_file, None, "file", f"unreadable: {e}", "file: unreadable"
        ) from None
    if not isinstance(obj, dict):
        raise DeepFashion2FormatError(
            anno_file, None, "json", "top level is not an object", "json: invalid"
        )
    source = obj.get("source")
    if source not in SOURCES:
        raise DeepFashion2FormatError(
            anno_file,
            None,
            "source",
            f"{source!r} is not 'user' or 'shop'",
            "source: invalid" if "source" in obj else "source: missing",
        )
    pair_id = obj.get("pair_id")
    if not _is_int(pair_id):
        raise DeepFashion2FormatError(
            anno_file,
            None,
            "pair_id",
            f"expected an integer, got {pair_id!r}",
            "pair_id: invalid" if "pair_id" in obj else "pair_id: missing",
        )
    height, width = read_image_size(anno_file, image_path)
    out = ParsedImage(image_id, height, width, SOURCES.index(source), pair_id)
    # Items stay in the file's key order (item2 may come before item1, as in 000001.json of the
    # validation split): the official converter and the official retrieval ground truth list them
    # so, and the retrieval protocol gives a box that overlaps nothing, or several items equally,
    # to the first listed item (evaluation/retrieval.py, rule 1).
    for name in item_keys(anno_file, obj):
        try:
            out.items.append(_ItemParser(anno_file, name, obj[name], height, width).parse())
        except DeepFashion2FormatError as e:
            if not lenient:
                raise
            if skips is not None:
                skips[e.reason] = skips.get(e.reason, 0) + 1
    return out
