"""Block allocation and the prefix cache over the paged KV pool.

Every block has a reference count. A block that is full gets a hash chained over its tokens
and its parent's hash, so equal hashes mean equal prefixes. Media placeholder tokens hash by
their item's modality, content hash and preprocessing (``MediaSpan.key``) and their offset in
the span — two requests with the same item prepared the same way share KV, a different item
or preprocessing never does. The root of every chain names the adapter the KV was computed
with (a media adapter's LoRA is on only for prompts with media). A block whose count drops to zero stays in the cache
(least recently used first out) until its space is needed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

from omniloom.processing.prompt import Prompt


def token_keys(prompt: Prompt) -> list[int | str]:
    """What each prompt position hashes as: its token id, or media key + offset for media."""
    keys: list[int | str] = list(prompt.token_ids)
    for span in prompt.spans:
        for offset in range(span.length):
            keys[span.start + offset] = f"{span.key}#{offset}"
    return keys


def chain_hash(parent: bytes, keys: list[int | str]) -> bytes:
    payload = parent + ",".join(map(str, keys)).encode()
    return hashlib.blake2b(payload, digest_size=16).digest()


def root_hash(adapter: str) -> bytes:
    return hashlib.blake2b(f"adapter:{adapter}".encode(), digest_size=16).digest()


class BlockAllocator:
    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._refs = [0] * num_blocks
        self._hash_of: dict[int, bytes] = {}
        self._by_hash: dict[bytes, int] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()  # hashed, unreferenced; LRU first
        self.hits = 0
        self.evictions = 0

    def available(self) -> int:
        return len(self._free) + len(self._idle)

    def used(self) -> int:
        return self.num_blocks - self.available()

    def allocate(self) -> int | None:
        """A fresh block, evicting the least recently used cached one if none is free."""
        if self._free:
            block = self._free.popleft()
        elif self._idle:
            block, _ = self._idle.popitem(last=False)
            del self._by_hash[self._hash_of.pop(block)]
            self.evictions += 1
        else:
            return None
        self._refs[block] = 1
        return block

    def release(self, block: int) -> None:
        self._refs[block] -= 1
        if self._refs[block] > 0:
            return
        if block in self._hash_of:
            self._idle[block] = None
        else:
            self._free.append(block)

    def share(self, block: int) -> None:
        self._refs[block] += 1

    def lookup(self, block_hash: bytes) -> int | None:
        """The cached block with this hash, now referenced once more, or None."""
        block = self._by_hash.get(block_hash)
        if block is None:
            return None
        if self._refs[block] == 0:
            del self._idle[block]
        self._refs[block] += 1
        self.hits += 1
        return block

    def register(self, block: int, block_hash: bytes) -> None:
        """Record that ``block`` now holds the full prefix ``block_hash`` (first copy wins)."""
        if block_hash not in self._by_hash and block not in self._hash_of:
            self._by_hash[block_hash] = block
            self._hash_of[block] = block_hash
