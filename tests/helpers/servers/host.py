"""A threaded HTTP/1.1 server on 127.0.0.1:0 with routes, Range support, basic auth and cut connections.

Every request is recorded (`seen`) so tests can assert what a fetcher asked for, e.g. the
Range header of a resumed download. Bodies of 200 answers honour `Range: bytes=N-` (206 with
Content-Range, 416 past the end) unless `ignore_range`. A path in `drop_once` has its first
answer cut in the middle: full Content-Length announced, half the bytes sent, socket closed.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


#: A route answers (status, content type, body).
Route = Callable[[Seen], tuple[int, str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        host: FakeHost = self.server.host
        parts = urlsplit(self.path)
        seen = Seen(unquote(parts.path), dict(parse_qsl(parts.query, keep_blank_values=True)), dict(self.headers))
        host.seen.append(seen)
        if (
            host.auth
            and self.headers.get("Authorization") != "Basic " + base64.b64encode(":".join(host.auth).encode()).decode()
        ):
            return self._send(401, "text/plain", b"unauthorized", {"WWW-Authenticate": 'Basic realm="fake"'})
        route = host.routes.get(seen.path)
        if route is None:
            return self._send(404, "text/plain", b"not found")
        status, content_type, body = route(seen)
        if status != 200:
            return self._send(status, content_type, body)
        self._send_ranged(seen, content_type, body)

    def _send_ranged(self, seen: Seen, content_type: str, body: bytes) -> None:
        host: FakeHost = self.server.host
        extra, status = {"Accept-Ranges": "bytes"}, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and not host.ignore_range:
            start = int(match[1])
            if start >= len(body):
                return self._send(416, "text/plain", b"", {"Content-Range": f"bytes */{len(body)}"})
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body, status = body[start:], 206
        if seen.path in host.drop_once:
            host.drop_once.discard(seen.path)
            self._headers(status, content_type, len(body), extra)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, content_type, body, extra)

    def _headers(self, status: int, content_type: str, length: int, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _send(self, status: int, content_type: str, body: bytes, extra: dict | None = None) -> None:
        self._headers(status, content_type, len(body), extra)
        self.wfile.write(body)


class FakeHost:
    """Context manager: `with FakeHost() as host: host.add_file("/a.zip", data); host.url`."""

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.drop_once: set[str] = set()
        self.ignore_range = False
        self.auth = auth
        self.seen: list[Seen] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.host = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_file(self, path: str, content: bytes, content_type: str = "application/octet-stream") -> None:
        self.routes[path] = lambda seen: (200, content_type, content)

    def add_status(self, path: str, status: int) -> None:
        self.routes[path] = lambda seen: (status, "text/plain", b"refused")

    def requests_for(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def __enter__(self) -> FakeHost:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
