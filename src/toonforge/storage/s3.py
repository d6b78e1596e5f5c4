"""Objects in an S3-compatible bucket (AWS S3, MinIO, R2, ...) through boto3.

Credentials and region come from boto3's usual places (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, ~/.aws/config, instance roles). Clients fetch
objects through presigned URLs, or through a public/CDN base URL when one is set.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from toonforge.storage.base import DEFAULT_CONTENT_TYPE, DirectLink, check_key

# Objects up to this size go up in one PUT; larger ones in parts.
MULTIPART_THRESHOLD = 64 * 1024 * 1024


class _CountingReader:
    """A file object that counts what is read from it (the size of a streamed upload)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.count += len(chunk)
        return chunk


class S3Storage:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str = "",
        expiry_seconds: int = 3600,
        public_url: str = "",
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.expiry_seconds = expiry_seconds
        self.public_url = public_url.rstrip("/")
        # S3-compatible stores on an address of their own want path-style requests.
        style = "path" if endpoint_url else "auto"
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
        )
        session = boto3.session.Session()
        self.client: Any = session.client("s3", endpoint_url=endpoint_url or None, config=config)
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )
        return len(data)

    def put_file(self, key: str, source: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        reader = _CountingReader(source)
        self.client.upload_fileobj(
            reader,
            self.bucket,
            self._key(key),
            ExtraArgs={"ContentType": content_type},
            Config=self.transfer,
        )
        return reader.count

    def download(self, key: str, target: Path) -> bool:
        from botocore.exceptions import ClientError

        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            os.replace(tmp, target)
        except ClientError as exc:
            Path(tmp).unlink(missing_ok=True)
            if _is_missing(exc):
                return False
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def delete_prefix(self, prefix: str) -> None:
        full = self._key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [
                {"Key": obj["Key"]}
                for obj in page.get("Contents", [])
                if obj["Key"] == full or obj["Key"].startswith(full + "/")
            ]
            if keys:  # a page holds at most 1000 keys, DeleteObjects' limit
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                )

    def local_path(self, key: str) -> Path | None:
        return None

    def direct_link(self, key: str) -> DirectLink:
        full = self._key(key)
        if self.public_url:
            return DirectLink(f"{self.public_url}/{quote(full)}", 0)
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": full},
            ExpiresIn=self.expiry_seconds,
        )
        return DirectLink(url, int(time.time()) + self.expiry_seconds)


def _is_missing(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")
