"""The gallery every way of generating shares: files plus rows in one database (SQLite, or PostgreSQL)."""

from lanskap.gallery.store import Entry, Gallery

__all__ = ["Entry", "Gallery"]
