"""
Shop the look: index a folder of shop images into a :class:`deepfashion2.retrieval.Catalogue`
with a trained model (:mod:`.indexing`), then search it with consumer photos (:mod:`.search`).
"""

from .embed import GarmentEmbedder, UnreadableImageError, model_identity
from .indexing import index_images
from .products import update_products
from .search import search_photos

__all__ = [
    "GarmentEmbedder",
    "UnreadableImageError",
    "index_images",
    "model_identity",
    "search_photos",
    "update_products",
]
