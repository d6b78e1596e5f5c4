"""Where toonforge keeps files (outputs, File/Upload uploads, private models): a local
folder or an S3-compatible bucket, behind one protocol."""

from toonforge.storage.base import DEFAULT_CONTENT_TYPE, DirectLink, Storage
from toonforge.storage.factory import StorageConfigError, open_storage
from toonforge.storage.local import LocalStorage

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "DirectLink",
    "LocalStorage",
    "Storage",
    "StorageConfigError",
    "open_storage",
]
