"""API keys and per-key limits.

Keys are stored only as SHA-256 hashes, in a JSON file that ``omniloom keys add`` writes (the
key itself is printed once and never stored). Each key has a requests-per-minute and a
tokens-per-minute budget, kept as token buckets that refill continuously: a request is refused
with 429 and ``Retry-After`` while either bucket is empty; tokens are charged when the usage
is known (prompt plus completion), so one large request can take a bucket below zero and the
key waits until it refills. With no key file configured the server is open (local use).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omniloom.errors import AuthenticationFailed, RateLimited

KEY_PREFIX = "sk-omni-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    name: str
    sha256: str
    requests_per_minute: int = 60
    tokens_per_minute: int = 100_000


def add_key(path: Path, name: str, rpm: int, tpm: int) -> str:
    """Create a key, store its hash in ``path`` and return the key (shown once)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    records = json.loads(path.read_text())["keys"] if path.exists() else []
    if any(r["name"] == name for r in records):
        raise ValueError(f"a key named {name!r} already exists in {path}")
    records.append(asdict(KeyRecord(name, hash_key(key), rpm, tpm)))
    path.write_text(json.dumps({"keys": records}, indent=2))
    path.chmod(0o600)
    return key


class Bucket:
    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.stamp = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 if it is now)."""
        self.refill()
        return max(0.0, (amount - self.level) / self.rate) if self.rate else float("inf")


class KeyStore:
    def __init__(self, records: list[KeyRecord]):
        self._by_hash = {r.sha256: r for r in records}
        self._requests = {r.name: Bucket(r.requests_per_minute) for r in records}
        self._tokens = {r.name: Bucket(r.tokens_per_minute) for r in records}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str) -> KeyStore | None:
        if not path:
            return None
        rows = json.loads(Path(path).read_text())["keys"]
        return cls([KeyRecord(**row) for row in rows])

    def authenticate(self, authorization: str | None) -> KeyRecord:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("No API key provided. Send 'Authorization: Bearer <key>'.")
        record = self._by_hash.get(hash_key(key.strip()))
        if record is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return record

    def admit(self, record: KeyRecord) -> None:
        """Take one request from the key's budget, or raise 429 saying when to retry."""
        with self._lock:
            requests, tokens = self._requests[record.name], self._tokens[record.name]
            wait = max(requests.wait_for(1), tokens.wait_for(0))
            if wait > 0:
                raise RateLimited(
                    f"Rate limit reached for key '{record.name}' "
                    f"({record.requests_per_minute} requests, "
                    f"{record.tokens_per_minute} tokens per minute).",
                    retry_after=wait,
                )
            requests.level -= 1

    def charge_tokens(self, record: KeyRecord, tokens: int) -> None:
        with self._lock:
            bucket = self._tokens[record.name]
            bucket.refill()
            bucket.level -= tokens
