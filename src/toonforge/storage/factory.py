"""The storage a `TOONFORGE_STORAGE_URL` names: file:///folder or s3://bucket/prefix."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from toonforge.settings import Settings
from toonforge.storage.base import Storage
from toonforge.storage.local import LocalStorage


class StorageConfigError(ValueError):
    """A storage URL that cannot be used; the message names the setting."""


def open_storage(settings: Settings) -> Storage:
    url = settings.storage_url.strip()
    if not url:
        return LocalStorage(settings.storage_dir)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise StorageConfigError(
                f"TOONFORGE_STORAGE_URL: expected file:///absolute/folder, got {url!r}"
            )
        return LocalStorage(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StorageConfigError(
                f"TOONFORGE_STORAGE_URL: expected s3://bucket/prefix, got {url!r}"
            )
        from toonforge.storage.s3 import S3Storage

        return S3Storage(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=settings.s3_endpoint_url,
            expiry_seconds=settings.storage_url_expiry_seconds,
            public_url=settings.storage_public_url,
        )
    raise StorageConfigError(
        f"TOONFORGE_STORAGE_URL: unknown scheme {parts.scheme!r} (expected file:// or s3://)"
    )
