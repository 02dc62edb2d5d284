"""Apply a shop's products file and removals to a catalogue (``tools/index_catalogue.py``):
fields updated without embedding anything again, removals atomic (:mod:`...retrieval.products`)."""

from __future__ import annotations

import logging

from ...errors import printable
from ...retrieval import Catalogue
from ...retrieval.milvus import push
from ...retrieval.products import ProductsFileError, read_id_list, read_products_csv

logger = logging.getLogger(__name__)


def update_products(
    catalogue: str | Catalogue,
    products_csv: str | None = None,
    *,
    sync: bool = False,
    remove: str | None = None,
    lenient: bool = False,
) -> dict:
    """
    ``products_csv``: its rows applied (``sync``: images it no longer lists are removed);
    ``remove``: a file of product ids, one per line, removed. One atomic update. With
    ``lenient``, bad rows and unknown ids are skipped and counted instead of refused. What
    changed: ``{"products", "images", "removed", "skipped"}``.
    """
    cat = catalogue if isinstance(catalogue, Catalogue) else Catalogue(catalogue)
    table, skipped = cat.products, []
    indexed = set(cat.entries().images)
    if products_csv:
        new, skipped = read_products_csv(products_csv, indexed, lenient=lenient)
        try:
            table = table.updated(new, sync=sync)
        except ValueError as e:
            raise ProductsFileError(products_csv, str(e)) from None
    if remove:
        ids = read_id_list(remove)
        table, unknown = table.remove(ids, indexed)
        for u in unknown:
            if not lenient:
                raise ProductsFileError(
                    remove,
                    f"product {printable(u)} is not in the catalogue",
                    "--lenient skips unknown ids",
                )
            skipped.append(f"{printable(remove)}: unknown product {printable(u)}")
    before = set(cat.products.removed)
    cat.set_products(table)
    if cat.uses_milvus:  # the removals and fields reach Milvus too
        push(cat)
    for line in skipped:
        logger.warning(f"skipped: {line}")
    return {
        "products": len(table.products),
        "images": len(table.images),
        "removed": len(table.removed),
        "newly_removed": len(table.removed - before),
        "skipped": len(skipped),
    }
