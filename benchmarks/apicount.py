"""A counting front for the API server: which requests one client makes, by verb and resource.

The API server's own metrics do not say who asked, and a benchmark wants one operator's requests
apart from the scheduler's, kwok's and its own. So the operator under test gets a kubeconfig that
points here, plain HTTP on 127.0.0.1; each request line is read, counted and passed on over TLS
with the real kubeconfig's client certificate, and the answers (watch streams included) are
relayed unchanged. `GET /__counts` is answered here with the counts so far, as JSON; `GET /__stats`
with the answers by status code ("create pods 409") and each request's latency in milliseconds, by
verb and resource: from the request's head reaching the proxy to the answer's head coming back, so
the API server's own time plus one local hop (watches are left out: their answer never ends).

    python benchmarks/apicount.py --kubeconfig K --port P

Only heads are parsed; bodies are passed on by their Content-Length, or chunk by chunk. A chunked
request body (no client here sends one) ends the counting on that connection, never the relaying.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import ssl
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def classify(method: str, target: str) -> str:
    """'verb resource' of one request, in the API server's own verb names."""
    path, _, query = target.partition("?")
    parts = [p for p in path.split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = "/".join([rest[0]] + rest[2:3]) if rest else path
    if method in WRITES:
        return f"{WRITES[method]} {resource}"
    if "watch=true" in query or "watch=1" in query:
        return f"watch {resource}"
    return f"{'get' if len(rest) >= 2 else 'list'} {resource}"


def upstream_tls(kubeconfig: str) -> tuple[str, int, ssl.SSLContext]:
    """Host, port and a TLS context holding the kubeconfig's CA and client certificate."""
    conf = yaml.safe_load(Path(kubeconfig).read_text())
    cluster, user = conf["clusters"][0]["cluster"], conf["users"][0]["user"]
    url = urlsplit(cluster["server"])
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    # ssl loads a client certificate only from files: they live as long as the loading does.
    with tempfile.TemporaryDirectory(prefix="apicount-") as tmp:
        folder = Path(tmp)
        (folder / "crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (folder / "key").write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(folder / "crt", folder / "key")
    return url.hostname, url.port or 443, ctx


class Counter:
    def __init__(self, host: str, port: int, ctx: ssl.SSLContext):
        self.host, self.port, self.ctx = host, port, ctx
        self.counts: collections.Counter[str] = collections.Counter()
        self.codes: collections.Counter[str] = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        if head.startswith((b"GET /__counts ", b"GET /__stats ")):
            stats = {"codes": self.codes, "latency": self.latency}
            body = json.dumps(self.counts if head.startswith(b"GET /__counts ") else stats).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port, ssl=self.ctx,
                                                             server_hostname=self.host)
        asked: collections.deque[tuple[str, float]] = collections.deque()
        back = asyncio.ensure_future(self.answers(up_reader, writer, asked))
        try:
            await self.forward(head, reader, up_writer, asked)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            await back
            up_writer.close()

    async def forward(self, head: bytes, reader: asyncio.StreamReader, up: asyncio.StreamWriter,
                      asked: collections.deque) -> None:
        """Pass requests on one by one, counting each, until the client closes."""
        while True:
            line, *headers = head.split(b"\r\n")
            method, target = line.decode("latin-1").split(" ")[:2]
            label = classify(method, target)
            self.counts[label] += 1
            fields = _fields(headers)
            asked.append((label, time.monotonic()))
            up.write(head)
            if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
                await relay(reader, up)
                return
            length = int(fields.get(b"content-length", b"0"))
            if length:
                up.write(await reader.readexactly(length))
            await up.drain()
            head = await reader.readuntil(b"\r\n\r\n")

    async def answers(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, asked: collections.deque) -> None:
        """Relay the answers, each matched to its request in order: its status code counted, its
        latency kept. Bytes the parsing cannot follow are relayed as they come."""
        try:
            while True:
                head = await up.readuntil(b"\r\n\r\n")
                writer.write(head)
                line, *headers = head.split(b"\r\n")
                code = int(line.split(b" ")[1])
                if code >= 200 and asked:  # an interim 1xx answer is followed by the real one
                    label, sent = asked.popleft()
                    self.codes[f"{label} {code}"] += 1
                    if not label.startswith("watch "):
                        self.latency[label].append(round((time.monotonic() - sent) * 1000, 2))
                await _body(up, writer, _fields(headers), code)
                await writer.drain()
        except asyncio.IncompleteReadError as exc:
            writer.write(exc.partial)
            await relay(up, writer)
        except (asyncio.LimitOverrunError, ValueError, IndexError):
            await relay(up, writer)
        except (ConnectionError, ssl.SSLError):
            writer.close()


def _fields(headers: list[bytes]) -> dict[bytes, bytes]:
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in headers if h)}


async def _body(up: asyncio.StreamReader, writer: asyncio.StreamWriter, fields: dict, code: int) -> None:
    """Relay one answer's body: by its length, chunk by chunk, or (neither) until the server closes."""
    if code < 200 or code in (204, 304):
        return
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        while True:
            size_line = await up.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:  # the last chunk, then trailers up to an empty line
                while (trailer := await up.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(trailer)
                writer.write(b"\r\n")
                return
            writer.write(await up.readexactly(size + 2))
            await writer.drain()
    elif b"content-length" in fields:
        remaining = int(fields[b"content-length"])
        while remaining:
            data = await up.read(min(remaining, 65536))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            writer.write(data)
            remaining -= len(data)
    else:
        await relay(up, writer)
        raise ConnectionError("answer without a length ended with its connection")


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def kubeconfig_for(port: int) -> str:
    """A kubeconfig that sends a client through the counter on `port`."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "counted",
        "clusters": [{"name": "counted", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "counted", "user": {}}],
        "contexts": [{"name": "counted", "context": {"cluster": "counted", "user": "counted"}}]})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    counter = Counter(*upstream_tls(args.kubeconfig))
    server = await asyncio.start_server(counter.serve, "127.0.0.1", args.port, limit=1 << 22)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
