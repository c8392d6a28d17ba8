"""SSRF against real local HTTP servers: no spelling of a private address is ever connected to,
a redirect to one is refused at that hop, and limits hold while reading."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from omniloom.config import Limits
from omniloom.errors import MediaError
from omniloom.media import fetch
from omniloom.media.image import decode_image
from tests.conftest import png_bytes


class Recorder(ThreadingHTTPServer):
    def __init__(self, reply):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits, self.reply = 0, reply
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits += 1
        status, headers, body = self.server.reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


PNG = png_bytes(__import__("numpy").full((8, 8, 3), 90, dtype="uint8"))


@pytest.fixture
def target():
    server = Recorder((200, {"Content-Type": "image/png"}, PNG))
    yield server
    server.shutdown()


SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0177.0.0.1",  # octal
    "127.1",  # short form
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::1]",
    "0.0.0.0",
    "localhost.",
]


@pytest.mark.parametrize("host", SPELLINGS)
def test_no_spelling_of_loopback_is_fetched(target, host):
    with pytest.raises(MediaError, match=r"non-public|resolve"):
        fetch.load_image_bytes(f"http://{host}:{target.port}/a.png", Limits())
    assert target.hits == 0


def _treat_as_public(monkeypatch, port: int) -> None:
    """Pretend the server on ``port`` is a public host (there is none reachable offline)."""
    original = fetch.check_public_address

    def checker(host: str, p: int, kind: fetch.MediaKind = fetch.IMAGE) -> str:
        return "127.0.0.1" if p == port else original(host, p, kind)

    monkeypatch.setattr(fetch, "check_public_address", checker)


def test_redirect_to_a_private_address_is_refused_at_that_hop(monkeypatch, target):
    hop = Recorder((302, {"Location": f"http://127.0.0.1:{target.port}/a.png"}, b""))
    try:
        _treat_as_public(monkeypatch, hop.port)
        with pytest.raises(MediaError, match="non-public"):
            fetch.load_image_bytes(f"http://public.example:{hop.port}/x", Limits())
        assert (hop.hits, target.hits) == (1, 0)
    finally:
        hop.shutdown()


def test_type_is_judged_from_bytes_and_size_is_bounded(monkeypatch):
    lying = Recorder((200, {"Content-Type": "image/png"}, b"<html>not an image</html>"))
    honest_png_as_text = Recorder((200, {"Content-Type": "text/plain"}, PNG))
    try:
        for server in (lying, honest_png_as_text):
            _treat_as_public(monkeypatch, server.port)
        body = fetch.load_image_bytes(f"http://a.example:{lying.port}/x.png", Limits())
        with pytest.raises(MediaError, match="could not be decoded"):
            decode_image(body, Limits())
        body = fetch.load_image_bytes(f"http://b.example:{honest_png_as_text.port}/x", Limits())
        assert decode_image(body, Limits()).width == 8
        with pytest.raises(MediaError, match="exceeds"):
            fetch.load_image_bytes(
                f"http://b.example:{honest_png_as_text.port}/x", Limits(max_image_bytes=16)
            )
    finally:
        lying.shutdown()
        honest_png_as_text.shutdown()


def test_domain_lists_are_checked_before_connecting(monkeypatch, target):
    _treat_as_public(monkeypatch, target.port)
    url = f"http://img.cdn.example:{target.port}/a.png"
    for limits in (
        Limits(fetch_deny_domains="cdn.example"),
        Limits(fetch_allow_domains="images.example.org, other.example"),
    ):
        with pytest.raises(MediaError, match="not allowed"):
            fetch.load_image_bytes(url, limits)
    assert target.hits == 0
    assert fetch.load_image_bytes(url, Limits(fetch_allow_domains="example")) == PNG
    assert target.hits == 1
