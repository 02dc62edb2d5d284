"""
A catalogue's products: which product each shop image shows, each product's fields (title, url,
price, available, ...), and which images were removed. Search results are products: several
photos of one product give one result (its best garment match).

A shop describes them in a CSV file with a header (:func:`read_products_csv`)::

    image,product,title,price,available
    dresses/0001.jpg,D-17,Summer dress,39.90,true

``image``: the path relative to the image folder; ``product``: the product's id; every other
column is a field of the product. A column holds numbers, true/false or text, as its first
non-empty value says (an empty cell: the product lacks that field); a product's fields are the
same on each of its rows. An image without a row is its own product (its id is its path).

Stored in the catalogue as one checked folder ``products/<name>/`` (never changed once written),
named in ``catalogue.json`` (``"products"``): an update writes a new folder and then swaps the
name atomically, so a catalogue is always before or after an update, never between.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import FileError, printable
from ..utils.checked import CheckedFolderError, parse_json, read_file, read_manifest
from .errors import CatalogueError

KIND = "deepfashion2 catalogue products"  # the checked folders' kind
# the CSV's own columns, the filter language's words, the Milvus collection's fixed fields
RESERVED = ("image", "product", "category", "and", "or", "not", "true", "false", "key",
            "embedding", "digest")  # fmt: skip
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")
MAX_FIELDS = 64
MAX_CELL = 4096  # characters in one cell


class ProductsFileError(FileError, ValueError):
    """A products file, or one of its rows, that cannot be used: path, line and field named."""


@dataclass
class Products:
    """
    ``fields``: name -> "number" | "bool" | "text"; ``products``: id -> {field: value};
    ``images``: image path -> product id (the images a products file listed); ``removed``:
    image paths taken out of search (their garments stay in the shards: listed again, they come
    back without being embedded again).
    """

    fields: dict[str, str] = field(default_factory=dict)
    products: dict[str, dict] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def product_of(self, image: str) -> str:
        return self.images.get(image, image)

    def describe(self, product: str) -> dict:
        """``{"id": ..., fields...}`` as a search result carries it."""
        return {"id": printable(product), **self.products.get(product, {})}

    # -- updates -----------------------------------------------------------------------------

    def updated(self, new: "Products", *, sync: bool = False) -> "Products":
        """
        This table with a products file's rows applied: its images get their (new) product and
        come back if removed, its products their fields. ``sync``: the file is the whole shop:
        images that were listed before and are not now are removed.
        """
        fields = dict(self.fields) if not sync else {}
        for name, kind in new.fields.items():
            if fields.get(name, kind) != kind:
                raise ValueError(
                    f"field {name!r} holds {fields[name]} in the catalogue and {kind} in the "
                    "products file (--sync replaces every field)"
                )
            fields[name] = kind
        images = {} if sync else dict(self.images)
        images.update(new.images)
        removed = set(self.removed) - set(new.images)
        if sync:
            removed |= set(self.images) - set(new.images)
        used = set(images.values())
        products = {p: f for p, f in self.products.items() if p in used and not sync}
        products.update(new.products)
        return Products(fields, products, images, removed)

    def remove(self, ids: list[str], indexed: set[str]) -> tuple["Products", list[str]]:
        """This table with the products ``ids`` removed (their images; an image that is its own
        product by its path), and the ids that name nothing in the catalogue."""
        by_product: dict[str, list[str]] = {}
        for image, product in self.images.items():
            by_product.setdefault(product, []).append(image)
        removed, unknown = set(self.removed), []
        for p in ids:
            if p in by_product:
                removed.update(by_product[p])
            elif p in indexed and p not in self.images:
                removed.add(p)
            else:
                unknown.append(p)
        return Products(dict(self.fields), dict(self.products), dict(self.images), removed), unknown

    # -- storage -----------------------------------------------------------------------------

    def files(self) -> dict[str, bytes]:
        """The checked folder's files (:meth:`read` reads them back)."""
        data = {
            "fields": self.fields,
            "products": self.products,
            "images": self.images,
            "removed": sorted(self.removed),
        }
        return {"products.json": json.dumps(data, allow_nan=False).encode()}

    @classmethod
    def read(cls, folder: str) -> "Products":
        try:
            manifest = read_manifest(folder, KIND)
            where = os.path.join(folder, "products.json")
            data = parse_json(read_file(folder, manifest, "products.json"), where)
        except CheckedFolderError as e:
            raise CatalogueError(e.path, e.reason) from None
        try:
            table = cls(
                dict(data["fields"]),
                {str(k): dict(v) for k, v in data["products"].items()},
                {str(k): str(v) for k, v in data["images"].items()},
                {str(x) for x in data["removed"]},
            )
        except (KeyError, TypeError, AttributeError, ValueError):
            raise CatalogueError(where, "not a products table") from None
        if any(k not in ("number", "bool", "text") for k in table.fields.values()):
            raise CatalogueError(where, "a field of unknown type")
        return table


# -- the shop's CSV file ---------------------------------------------------------------------------


def read_products_csv(
    path: str, known_images: set[str] | None = None, *, lenient: bool = False
) -> tuple[Products, list[str]]:
    """
    The products file at ``path`` (see the module's docstring), and what was skipped
    (``lenient``; one line per row, naming its line and field). ``known_images``: the
    catalogue's images; a row naming another is refused. Every problem is named by file, line
    and field (:class:`ProductsFileError`).
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ProductsFileError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ProductsFileError(path, "empty: the first line names the columns") from None
    except csv.Error as e:
        raise ProductsFileError(path, f"line 1: {e}") from None
    header = [h.strip() for h in header]
    for need in ("image", "product"):
        if need not in header:
            raise ProductsFileError(
                path, f"line 1: no column {need!r}", "the header needs image and product columns"
            )
    names = [h for h in header if h not in ("image", "product")]
    if len(names) > MAX_FIELDS:
        raise ProductsFileError(path, f"line 1: {len(names)} fields, at most {MAX_FIELDS}")
    for h in names:
        if not _NAME.match(h) or h.lower() in RESERVED:
            raise ProductsFileError(
                path,
                f"line 1: column {h!r} cannot name a field",
                "letters, digits and _, not starting with a digit; not " + ", ".join(RESERVED),
            )
    if len(set(header)) != len(header):
        raise ProductsFileError(path, "line 1: a column is named twice")

    table = Products()
    kinds: dict[str, tuple[str, int]] = {}  # field -> (kind, the line that decided it)
    skipped: list[str] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ProductsFileError(path, f"line {reader.line_num}: {e}") from None
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        try:
            image, product, values = _row(row, header, names, kinds, line, known_images, table)
        except _RowError as e:
            if not lenient:
                raise ProductsFileError(path, f"line {line}: {e}", e.hint) from None
            skipped.append(f"{printable(path)}: line {line}: {e}")
            continue
        for name, (value, _) in values.items():
            kinds.setdefault(name, (_kind(value), line))
        table.images[image] = product
        table.products[product] = {k: v for k, (v, _) in values.items()}
    table.fields = {name: kinds[name][0] for name in names if name in kinds}
    return table, skipped


class _RowError(ValueError):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def _row(row, header, names, kinds, line, known_images, table):
    if len(row) != len(header):
        raise _RowError(f"{len(row)} cells, the header has {len(header)}")
    cells = dict(zip(header, row))
    image, product = cells["image"].strip(), cells["product"].strip()
    if not image or os.path.isabs(image) or ".." in image.split("/"):
        raise _RowError(f"field image: {image!r} is not a path relative to the image folder")
    if known_images is not None and image not in known_images:
        raise _RowError(
            f"field image: {printable(image)} is not in the catalogue",
            "index it first (--images), or fix the path (relative to the image folder)",
        )
    if image in table.images:
        raise _RowError(f"field image: {printable(image)} is listed twice")
    if not product:
        raise _RowError("field product: empty")
    values = {}
    for name in names:
        cell = cells[name].strip()
        if len(cell) > MAX_CELL:
            raise _RowError(f"field {name}: longer than {MAX_CELL} characters")
        if not cell:
            continue
        value = _parse(cell)
        if name in kinds and _kind(value) != kinds[name][0]:
            kind, first = kinds[name]
            if kind == "text":
                value = cell  # a text column keeps "12" or "true" as text
            else:
                raise _RowError(
                    f"field {name}: {cell!r} is not {'a number' if kind == 'number' else kind}"
                    f" (the column's first value, line {first}, is)"
                )
        values[name] = (value, line)
    if product in table.products:
        mine = {k: v for k, (v, _) in values.items()}
        if mine != table.products[product]:
            raise _RowError(
                f"field product: {printable(product)} has other fields on an earlier line",
                "give a product the same fields on each of its rows",
            )
    return image, product, values


def _parse(cell: str):
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if _NUMBER.match(cell):
        v = float(cell)
        if not math.isfinite(v):
            return cell
        return int(v) if re.fullmatch(r"[+-]?\d+", cell) and abs(v) < 2**53 else v
    return cell


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def read_id_list(path: str) -> list[str]:
    """Product ids, one per line (blank lines and ``#`` comments ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise ProductsFileError(path, "not UTF-8 text") from None
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def column(values: list, kind: str) -> np.ndarray:
    """One field over products as an array a filter compares (missing: NaN / None)."""
    if kind == "number":
        return np.array([np.nan if v is None else float(v) for v in values], np.float64)
    return np.array(values, dtype=object)
