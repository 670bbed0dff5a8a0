"""The errors every data set source raises; a module of their own so the sources and the catalogue can share them."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set spec or file that cannot be used; the message says where and how to fix it."""


class DatasetUnavailable(DatasetError):
    """A known data set that this machine cannot load (offline, package missing)."""


__all__ = ["DatasetError", "DatasetUnavailable"]
