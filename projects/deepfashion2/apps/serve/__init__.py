"""The catalogue search as an HTTP service with a page (``tools/serve.py``)."""

from .app import SearchService, app_from_environment, create_app

__all__ = ["SearchService", "app_from_environment", "create_app"]
