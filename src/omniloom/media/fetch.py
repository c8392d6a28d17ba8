"""Turn an ``image_url`` into bytes: data URLs inline, http(s) fetched with SSRF checks.

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
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from omniloom.config import Limits
from omniloom.errors import MediaError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*?);base64,", re.I)


def decode_data_url(url: str, limits: Limits) -> bytes:
    """The bytes of a base64 data URL. Its declared type must be an image type (or
    ``application/octet-stream``, or none); which image format it is, the bytes decide."""
    match = _DATA_URL.match(url)
    if not match:
        raise MediaError(
            "Invalid data URL: expected 'data:<mime type>;base64,<data>'.", param="image_url"
        )
    mime = (match.group("mime") or "").lower()
    if mime and not mime.startswith("image/") and mime != "application/octet-stream":
        raise MediaError(
            f"The data URL declares the type '{mime}', which is not an image type (image/*).",
            param="image_url",
        )
    payload = url[match.end() :]
    if len(payload) * 3 // 4 > limits.max_image_bytes:
        raise MediaError(
            f"The data URL holds more than {limits.max_image_bytes} bytes.", param="image_url"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(
            "Invalid data URL: the base64 payload is malformed.", param="image_url"
        ) from exc


def check_public_address(host: str, port: int) -> str:
    """Resolve ``host`` and return one address, refusing anything not globally routable."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MediaError(f"Could not resolve the image host '{host}'.", param="image_url") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for addr in addresses:
        mapped = getattr(addr, "ipv4_mapped", None) or addr
        if not mapped.is_global or mapped.is_multicast:
            raise MediaError(
                f"Refusing to fetch '{host}': it resolves to a non-public address.",
                param="image_url",
            )
    return str(addresses[0])


def _domains(spec: str) -> list[str]:
    return [d.strip().lower().rstrip(".") for d in spec.split(",") if d.strip()]


def _matches(host: str, domains: list[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def check_domain_lists(host: str, limits: Limits) -> None:
    host = host.lower().rstrip(".")
    allowed = _domains(limits.fetch_allow_domains)
    if _matches(host, _domains(limits.fetch_deny_domains)) or (
        allowed and not _matches(host, allowed)
    ):
        raise MediaError(f"Fetching images from '{host}' is not allowed here.", param="image_url")


def read_local_file(url: str, limits: Limits) -> bytes:
    """A ``file://`` URL inside ``local_media_dir``, bounded in size."""
    if not limits.local_media_dir:
        raise MediaError("Local files are not served here.", param="image_url")
    root = Path(limits.local_media_dir).resolve()
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise MediaError("The file is not in the local media directory.", param="image_url")
    if path.stat().st_size > limits.max_image_bytes:
        raise MediaError(f"The file exceeds {limits.max_image_bytes} bytes.", param="image_url")
    return path.read_bytes()


def _fetch_once(client: httpx.Client, url: str, limits: Limits) -> httpx.Response | bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaError(
            "Only https, http and data URLs are accepted for images.", param="image_url"
        )
    check_domain_lists(parts.hostname, limits)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = check_public_address(parts.hostname, port)
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
                f"Fetching the image failed with HTTP {resp.status_code}.", param="image_url"
            )
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > limits.max_image_bytes:
                raise MediaError(
                    f"The image at the URL exceeds {limits.max_image_bytes} bytes.",
                    param="image_url",
                )
        return bytes(body)


def fetch_url(url: str, limits: Limits) -> bytes:
    """Fetch remote image bytes, following at most ``fetch_max_redirects`` checked redirects."""
    timeout = httpx.Timeout(limits.fetch_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False, verify=True) as client:
        for _ in range(limits.fetch_max_redirects + 1):
            try:
                result = _fetch_once(client, url, limits)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise MediaError(f"Fetching the image failed: {exc}.", param="image_url") from exc
            except ValueError as exc:  # urllib and the idna codec on a malformed URL or host
                raise MediaError(f"The image URL is not valid: {exc}.", param="image_url") from exc
            if isinstance(result, bytes):
                return result
            url = urljoin(url, result.headers.get("location", ""))
    raise MediaError("Too many redirects while fetching the image.", param="image_url")


def load_image_bytes(url: str, limits: Limits) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url, limits)
    if url.startswith("file:"):
        return read_local_file(url, limits)
    return fetch_url(url, limits)
