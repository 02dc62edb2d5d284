"""Consumer-to-shop search outside a benchmark: a shop catalogue indexed once, searched often."""

from .catalogue import Catalogue, CatalogueEntries
from .errors import CatalogueError, CatalogueMismatchError

__all__ = ["Catalogue", "CatalogueEntries", "CatalogueError", "CatalogueMismatchError"]
