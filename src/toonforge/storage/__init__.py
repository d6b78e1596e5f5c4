"""Output files: a local folder (S3-compatible storage can implement the same protocol)."""

from toonforge.storage.local import LocalStorage, Storage

__all__ = ["LocalStorage", "Storage"]
