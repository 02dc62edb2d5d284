"""What a catalogue refuses: damage, links out of it, another model's or another folder's work."""

from __future__ import annotations

from ..errors import FileError


class CatalogueError(FileError, ValueError):
    """A catalogue file that is damaged, or not what a catalogue may hold: ``path``, ``reason``."""


class CatalogueMismatchError(CatalogueError):
    """The catalogue was built by another model (or from another folder) than the one asked."""
