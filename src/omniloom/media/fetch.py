"""Turn a media URL (an ``image_url``, an audio part's ``url``) into bytes: data URLs inline,
http(s) fetched with SSRF checks.

Remote fetches check the host against the allow/deny lists, resolve it once, refuse any
address that is not globally routable (private, loopback, link-local, multicast, reserved,
cloud metadata) and connect to the checked address, repeating every check on every redirect
hop. Size and time are bounded. ``file://`` URLs are read only from inside the configured
local media directory (symlinks resolved first), and refused when none is configured.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from omniloom.config import Limits
from omniloom.errors import MediaError


@dataclass(frozen=True)
class MediaKind:
    """What is being fetched: the words errors use, the field they name, the byte limit."""

    name: str  # "image"
    plural: str  # "images"
    param: str  # the request field errors point to
    mime_prefix: str  # a data URL must declare this type (or octet-stream, or none)
    limit_field: str  # the ``Limits`` field bounding its bytes

    def limit(self, limits: Limits) -> int:
        return getattr(limits, self.limit_field)


IMAGE = MediaKind("image", "images", "image_url", "image/", "max_image_bytes")
AUDIO = MediaKind("audio", "audio", "input_audio", "audio/", "max_audio_bytes")
VIDEO = MediaKind("video", "videos", "video_url", "video/", "max_video_bytes")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


def decode_data_url(url: str, limits: Limits, kind: MediaKind = IMAGE) -> bytes:
    """The bytes of a base64 data URL. Its declared type must be the kind's (or
    ``application/octet-stream``, or none); which format it is, the bytes decide."""
    match = _DATA_URL.match(url)
    if not match:
        raise MediaError(
            "Invalid data URL: expected 'data:<mime type>;base64,<data>'.", param=kind.param
        )
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith(kind.mime_prefix) and mime != "application/octet-stream":
        raise MediaError(
            f"The data URL declares the type '{mime}', which is not an {kind.name} type "
            f"({kind.mime_prefix}*).",
            param=kind.param,
        )
    return decode_base64(url[match.end() :], limits, kind, "The data URL")


def decode_base64(payload: str, limits: Limits, kind: MediaKind, what: str) -> bytes:
    """Base64 ``payload`` as bytes, refused unread when it would exceed the kind's limit."""
    if len(payload) * 3 // 4 > kind.limit(limits):
        raise MediaError(f"{what} holds more than {kind.limit(limits)} bytes.", param=kind.param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{what} is not valid base64.", param=kind.param) from exc


def check_public_address(host: str, port: int, kind: MediaKind = IMAGE) -> str:
    """Resolve ``host`` and return one address, refusing anything not globally routable."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MediaError(
            f"Could not resolve the {kind.name} host '{host}'.", param=kind.param
        ) from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for addr in addresses:
        mapped = getattr(addr, "ipv4_mapped", None) or addr
        if not mapped.is_global or mapped.is_multicast:
            raise MediaError(
                f"Refusing to fetch '{host}': it resolves to a non-public address.",
                param=kind.param,
            )
    return str(addresses[0])


def _domains(spec: str) -> list[str]:
    return [d.strip().lower().rstrip(".") for d in spec.split(",") if d.strip()]


def _matches(host: str, domains: list[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def check_domain_lists(host: str, limits: Limits, kind: MediaKind = IMAGE) -> None:
    host = host.lower().rstrip(".")
    allowed = _domains(limits.fetch_allow_domains)
    if _matches(host, _domains(limits.fetch_deny_domains)) or (
        allowed and not _matches(host, allowed)
    ):
        raise MediaError(
            f"Fetching {kind.plural} from '{host}' is not allowed here.", param=kind.param
        )


def local_media_path(url: str, limits: Limits, kind: MediaKind = IMAGE) -> Path:
    """The file a ``file://`` URL names, if it lies inside ``local_media_dir``."""
    if not limits.local_media_dir:
        raise MediaError("Local files are not served here.", param=kind.param)
    root = Path(limits.local_media_dir).resolve()
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise MediaError("The file is not in the local media directory.", param=kind.param)
    return path


def read_local_file(url: str, limits: Limits, kind: MediaKind = IMAGE) -> bytes:
    """A ``file://`` URL inside ``local_media_dir``, bounded in size."""
    path = local_media_path(url, limits, kind)
    if path.stat().st_size > kind.limit(limits):
        raise MediaError(f"The file exceeds {kind.limit(limits)} bytes.", param=kind.param)
    return path.read_bytes()


def _fetch_once(
    client: httpx.Client, url: str, limits: Limits, kind: MediaKind
) -> httpx.Response | bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaError(
            f"Only https, http and data URLs are accepted for {kind.plural}.", param=kind.param
        )
    check_domain_lists(parts.hostname, limits, kind)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = check_public_address(parts.hostname, port, kind)
    ext = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    host_header = parts.netloc.rsplit("@", 1)[-1]
    pinned = url.replace(
        parts.netloc, f"[{address}]:{port}" if ":" in address else f"{address}:{port}", 1
    )
    with client.stream("GET", pinned, headers={"Host": host_header}, extensions=ext) as resp:
        if resp.is_redirect:
            return resp
        if resp.status_code != 200:
            raise MediaError(
                f"Fetching the {kind.name} failed with HTTP {resp.status_code}.", param=kind.param
            )
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > kind.limit(limits):
                raise MediaError(
                    f"The {kind.name} at the URL exceeds {kind.limit(limits)} bytes.",
                    param=kind.param,
                )
        return bytes(body)


def fetch_url(url: str, limits: Limits, kind: MediaKind = IMAGE) -> bytes:
    """Fetch remote bytes, following at most ``fetch_max_redirects`` checked redirects."""
    timeout = httpx.Timeout(limits.fetch_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False, verify=True) as client:
        for _ in range(limits.fetch_max_redirects + 1):
            try:
                result = _fetch_once(client, url, limits, kind)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise MediaError(
                    f"Fetching the {kind.name} failed: {exc}.", param=kind.param
                ) from exc
            except ValueError as exc:  # urllib and the idna codec on a malformed URL or host
                raise MediaError(
                    f"The {kind.name} URL is not valid: {exc}.", param=kind.param
                ) from exc
            if isinstance(result, bytes):
                return result
            url = urljoin(url, result.headers.get("location", ""))
    raise MediaError(f"Too many redirects while fetching the {kind.name}.", param=kind.param)


def load_media_bytes(url: str, limits: Limits, kind: MediaKind) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url, limits, kind)
    if url.startswith("file:"):
        return read_local_file(url, limits, kind)
    return fetch_url(url, limits, kind)


def load_video_source(url: str, limits: Limits) -> bytes | Path:
    """A video's bytes, or for a local file its path: it is read as a stream, so a local video
    of any size stays on disk."""
    if url.startswith("file:"):
        return local_media_path(url, limits, VIDEO)
    return load_media_bytes(url, limits, VIDEO)


def load_image_bytes(url: str, limits: Limits) -> bytes:
    return load_media_bytes(url, limits, IMAGE)
