"""The gallery every way of generating shares: files plus rows in one SQLite database."""

from lanskap.gallery.store import Entry, Gallery

__all__ = ["Entry", "Gallery"]
