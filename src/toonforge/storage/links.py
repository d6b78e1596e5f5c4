"""The URLs clients get for stored files.

A file always has its API URL, /v1/File/{accesskey}/{name}: the access key is the
capability, and the URL does not expire while the file exists (on S3 storage the API answers
it with a redirect to a fresh presigned URL). Task records show outputs at their direct URL
when the storage has one (a presigned URL with its expiry, or the public/CDN base URL), so
clients download from the store without the API in the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from toonforge.storage.base import DirectLink, Storage


def api_file_url(public_url: str, accesskey: str, name: str) -> str:
    return f"{public_url}/v1/File/{accesskey}/{quote(name)}"


@dataclass(frozen=True)
class FileLinks:
    public_url: str
    storage: Storage
    # Outputs are deleted this long after they were added (0: kept).
    retention_seconds: float = 0.0

    def output(self, out: Any) -> DirectLink:
        """Where a client fetches an output (anything with accesskey, name, storage_key)."""
        link = self.storage.direct_link(out.storage_key)
        if link is not None:
            return link
        return DirectLink(api_file_url(self.public_url, out.accesskey, out.name), 0)

    def outputs_expire(self, added_at: float | None) -> int:
        """When outputs added at `added_at` are deleted, in unix seconds (0: never)."""
        if not self.retention_seconds or added_at is None:
            return 0
        return int(added_at + self.retention_seconds)
