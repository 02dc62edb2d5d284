"""
Search filters: simple comparisons joined by ``and``, over a garment's category and its
product's fields, parsed (never evaluated as code) into a row mask applied *before* the top-k::

    available == true and price <= 50
    category == trousers and brand != "Acme"
    product == D-17

A comparison is ``FIELD OP VALUE`` with OP one of ``== != < <= > >=``; VALUE a number, ``true``
/ ``false``, a "quoted" or 'quoted' text, or a bare word (letters, digits, ``_ - .``). ``category``
takes 1..13 or a category's name (``short_sleeve_top`` or "short sleeve top"); ``product`` the
product's id. Numbers compare with every OP, true/false and text with ``==`` and ``!=``. A
garment whose product lacks the field fails the comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..landmarks import CATEGORIES

MAX_LENGTH = 2000
MAX_CLAUSES = 32
_OPS = ("==", "!=", "<=", ">=", "<", ">")
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<op>==|!=|<=|>=|<|>)
    | "(?P<dq>[^"]*)"
    | '(?P<sq>[^']*)'
    | (?P<word>[A-Za-z0-9_.+-]+)
    )""",
    re.VERBOSE,
)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


class FilterError(ValueError):
    """A filter that is malformed or names a field the catalogue does not have (one line)."""


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: object  # float, bool or str


def parse_filter(expr: str, fields: dict[str, str]) -> list[Clause]:
    """
    ``expr`` as comparisons, checked against ``fields`` (name -> "number" | "bool" | "text", the
    catalogue's product fields; ``category`` and ``product`` are always there). Raises
    :class:`FilterError` naming what is wrong.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise FilterError("an empty filter: give comparisons like 'price <= 50'")
    if len(expr) > MAX_LENGTH:
        raise FilterError(f"a filter of {len(expr)} characters, at most {MAX_LENGTH}")
    tokens = _tokens(expr)
    clauses, i = [], 0
    while True:
        if i + 3 > len(tokens):
            got = " ".join(t[1] for t in tokens[i:]) or "nothing"
            raise FilterError(f"expected FIELD OP VALUE, got {got!r}")
        (k1, name), (k2, op), (k3, raw) = tokens[i : i + 3]
        if k1 != "word" or not _FIELD.match(name):
            raise FilterError(f"{name!r} is not a field name")
        if k2 != "op":
            raise FilterError(f"expected one of {' '.join(_OPS)} after {name!r}, got {op!r}")
        if k3 == "op":
            raise FilterError(f"expected a value after {name} {op}, got {raw!r}")
        clauses.append(_clause(name, op, raw, k3 == "quoted", fields))
        i += 3
        if i == len(tokens):
            break
        if tokens[i] != ("word", "and"):
            raise FilterError(f"expected 'and' after {name} {op} {raw}, got {tokens[i][1]!r}")
        i += 1
        if len(clauses) >= MAX_CLAUSES:
            raise FilterError(f"more than {MAX_CLAUSES} comparisons")
    return clauses


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise FilterError(f"cannot read the filter at {expr[pos:pos + 20].strip()!r}")
        if m.group("op"):
            out.append(("op", m.group("op")))
        elif m.group("dq") is not None or m.group("sq") is not None:
            q = m.group("dq") if m.group("dq") is not None else m.group("sq")
            out.append(("quoted", q))
        else:
            out.append(("word", m.group("word")))
        pos = m.end()
    return out


def _clause(name: str, op: str, raw: str, quoted: bool, fields: dict[str, str]) -> Clause:
    if name == "category":
        if op not in ("==", "!="):
            raise FilterError("category compares with == or !=")
        return Clause(name, op, _category(raw))
    if name == "product":
        if op not in ("==", "!="):
            raise FilterError("product compares with == or !=")
        return Clause(name, op, raw)
    kind = fields.get(name)
    if kind is None:
        known = ", ".join(["category", "product", *sorted(fields)])
        raise FilterError(f"unknown field {name!r}; this catalogue's fields: {known}")
    if kind == "number":
        if quoted or not _NUMBER.match(raw):
            raise FilterError(f"{name} holds numbers: compare it with a number, not {raw!r}")
        return Clause(name, op, float(raw))
    if op not in ("==", "!="):
        held = "true/false" if kind == "bool" else "text"
        raise FilterError(f"{name} holds {held}: compare it with == or !=")
    if kind == "bool":
        if quoted or raw.lower() not in ("true", "false"):
            raise FilterError(f"{name} holds true/false, not {raw!r}")
        return Clause(name, op, raw.lower() == "true")
    return Clause(name, op, raw)


def _category(raw: str) -> int:
    if raw.isdigit() and 1 <= int(raw) <= len(CATEGORIES):
        return int(raw)
    wanted = raw.strip().lower().replace("_", " ")
    for c in CATEGORIES:
        if c.name.lower() == wanted:
            return c.id
    names = ", ".join(c.name.replace(" ", "_") for c in CATEGORIES)
    raise FilterError(f"category {raw!r}: give 1..{len(CATEGORIES)} or a name ({names})")


def _compare(values: np.ndarray, op: str, value) -> np.ndarray:
    if values.dtype == object:  # bool / text: equality only; None (missing) never equal
        eq = np.array([v is not None and type(v) is type(value) and v == value for v in values])
        return eq if op == "==" else np.array([v is not None for v in values]) & ~eq
    with np.errstate(invalid="ignore"):  # NaN (missing) compares False
        return {
            "==": values == value,
            "!=": (values != value) & ~np.isnan(values),
            "<": values < value,
            "<=": values <= value,
            ">": values > value,
            ">=": values >= value,
        }[op]


def row_mask(
    clauses: list[Clause],
    row_categories: np.ndarray,
    row_product: np.ndarray,
    product_ids: list[str],
    columns: dict[str, np.ndarray],
) -> np.ndarray:
    """
    (N,) bool: the rows that satisfy every clause. ``row_product``: (N,) index into
    ``product_ids``; ``columns``: field -> (P,) values per product (:func:`.products.column`).
    """
    mask = np.ones(len(row_categories), bool)
    for c in clauses:
        if c.field == "category":
            hit = row_categories == c.value
            mask &= hit if c.op == "==" else ~hit
            continue
        if c.field == "product":
            per_product = np.array([p == c.value for p in product_ids], bool)
            if c.op == "!=":
                per_product = ~per_product
        else:
            per_product = _compare(columns[c.field], c.op, c.value)
        mask &= per_product[row_product] if len(per_product) else np.zeros(len(mask), bool)
    return mask
