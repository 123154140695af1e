"""S3-compatible object storage: the few calls the trainer and the model server need.

Requests are signed with AWS Signature Version 4 and sent with the standard library, so the image
gains no dependency; buckets are addressed by path (``<endpoint>/<bucket>/<key>``), which every
S3-compatible server accepts. The connection comes from the variables every S3 tool reads:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``
(default ``us-east-1``); their names are defined once, in :mod:`torchyard_spec.contract`, which
also makes them the keys of the Secret a TrainingJob's or ModelDeployment's ``spec.storage.secretName``
names. A location is written ``s3://<bucket>/<prefix>``.

S3 has no rename, so a group of objects is published with a marker: an artifact is uploaded file
by file with ``metadata.json`` last (an existing ``metadata.json`` is removed first, so a prefix
being rewritten shows no artifact), and a reader waits for ``metadata.json``. A reader therefore
never starts on half an artifact, and the digest in ``metadata.json`` refuses any mix of uploads.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlsplit

from torchyard_spec import contract

SCHEME = contract.S3_SCHEME
ENDPOINT_ENV, ACCESS_KEY_ENV, SECRET_KEY_ENV, REGION_ENV = (
    contract.S3_ENDPOINT, contract.S3_ACCESS_KEY, contract.S3_SECRET_KEY, contract.S3_REGION)
_UNRESERVED = "-_.~"
_LIST_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class ObjectStoreError(Exception):
    """A request the object store refused or could not be reached for; the message says which."""


class NotFound(ObjectStoreError):
    """The bucket or key does not exist."""


@dataclass(frozen=True)
class Location:
    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"


def is_uri(text: str) -> bool:
    return str(text).startswith(SCHEME)


def parse_uri(uri: str) -> Location:
    """``s3://bucket/some/prefix`` as a Location; the bucket is required."""
    if not is_uri(uri):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return Location(bucket, prefix.strip("/"))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature_headers(method: str, host: str, path: str, query: Mapping[str, str], payload: bytes,
                      access_key: str, secret_key: str, region: str, now: datetime.datetime) -> dict[str, str]:
    """The headers that sign one request with AWS Signature Version 4 (service s3)."""
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, quote(path, safe="/" + _UNRESERVED),
        "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}" for k, v in sorted(query.items())),
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    return headers


class ObjectStore:
    """A client of one S3-compatible endpoint."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = contract.S3_DEFAULT_REGION,
                 timeout: float = 30.0):
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{ENDPOINT_ENV} must be an http(s) URL, got {endpoint!r}")
        self._parts = parts
        self._access_key, self._secret_key, self._region = access_key, secret_key, region
        self._timeout = timeout

    @classmethod
    def from_environ(cls, env: Mapping[str, str] = os.environ) -> "ObjectStore":
        missing = [name for name in contract.S3_REQUIRED_KEYS if not env.get(name)]
        if missing:
            raise ObjectStoreError(f"an s3:// location needs {', '.join(missing)} in the environment")
        return cls(env[ENDPOINT_ENV], env[ACCESS_KEY_ENV], env[SECRET_KEY_ENV],
                   env.get(REGION_ENV) or contract.S3_DEFAULT_REGION)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self._request("PUT", f"/{bucket}/{key}", body=data)

    def get(self, bucket: str, key: str) -> bytes:
        return self._request("GET", f"/{bucket}/{key}")

    def delete(self, bucket: str, key: str) -> None:
        """Remove ``key``; removing a key that does not exist is not an error (as in S3)."""
        try:
            self._request("DELETE", f"/{bucket}/{key}")
        except NotFound:
            pass

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self._request("HEAD", f"/{bucket}/{key}")
        except NotFound:
            return False
        return True

    def create_bucket(self, bucket: str) -> None:
        self._request("PUT", f"/{bucket}")

    def list(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix``, following continuation pages."""
        keys: list[str] = []
        query = {"list-type": "2", "prefix": prefix}
        while True:
            root = ElementTree.fromstring(self._request("GET", f"/{bucket}", query))
            keys += [node.text or "" for node in root.iter(f"{_LIST_NS}Key")]
            token = root.findtext(f"{_LIST_NS}NextContinuationToken")
            if root.findtext(f"{_LIST_NS}IsTruncated") != "true" or not token:
                return keys
            query = {**query, "continuation-token": token}

    def _request(self, method: str, path: str, query: Mapping[str, str] | None = None, body: bytes = b"") -> bytes:
        query = dict(query or {})
        host = self._parts.netloc
        headers = signature_headers(method, host, path, query, body, self._access_key, self._secret_key,
                                    self._region, datetime.datetime.now(datetime.timezone.utc))
        target = quote(path, safe="/" + _UNRESERVED)
        if query:
            target += "?" + "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
                                     for k, v in sorted(query.items()))
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = cls(self._parts.hostname, self._parts.port, timeout=self._timeout)
        try:
            connection.request(method, target, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise ObjectStoreError(f"{method} {self._parts.netloc}{path}: {exc}") from None
        finally:
            connection.close()
        if response.status == 404:
            raise NotFound(f"{SCHEME}{path.lstrip('/')} does not exist")
        if response.status >= 300:
            raise ObjectStoreError(f"{method} {path} answered {response.status}: {data[:300].decode(errors='replace')}")
        return data


def upload_directory(store: ObjectStore, source: Path, location: Location, last: str) -> None:
    """Every file of ``source`` under ``location``, published by the file named ``last``.

    ``last`` (the marker readers wait for) is removed first and uploaded after all the others, so
    while this runs, and after it failed part way, the location shows no complete group of files.
    """
    store.delete(location.bucket, location.key(last))
    files = sorted(p for p in source.iterdir() if p.is_file())
    for path in sorted(files, key=lambda p: p.name == last):
        store.put(location.bucket, location.key(path.name), path.read_bytes())


def download(store: ObjectStore, location: Location, names: list[str], target: Path) -> Path:
    """The named objects of ``location`` as files in ``target`` (created)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        (target / name).write_bytes(store.get(location.bucket, location.key(name)))
    return target
