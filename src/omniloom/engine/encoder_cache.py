"""An LRU cache of encoded media embeddings, keyed by modality, content hash and preprocessing.

Preprocessing is deterministic, so the same item prepared the same way always yields the same
embeddings: a hit skips the encoder and projector entirely. Entries are bounded by bytes.
"""

from __future__ import annotations

import torch

from omniloom.lru import LRU


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class EncoderCache(LRU[torch.Tensor]):
    def __init__(self, max_bytes: int):
        super().__init__(max_bytes, weigh=tensor_bytes)

    @property
    def bytes_used(self) -> int:
        return self.weight
