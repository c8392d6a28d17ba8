"""The paged key/value cache: one preallocated pool of fixed-size blocks shared by all sequences.

``KVPool`` holds every layer's keys and values as ``(blocks · block_size)`` slots. Which block
belongs to which sequence is the engine's business (its block tables and prefix cache); the
decoder only sees a ``PagedBatch``: the tokens of one engine step packed into a single row,
where each token's key/value goes (its slot), and for each sequence the slots of its whole
context. Sequences that add one token (decodes) attend together as one padded batch; each
sequence that adds a chunk (prefill) attends on its own with a causal mask, so a long prompt
and many decodes share one forward pass through the weights. With our CPU kernels every token
instead attends on its own over its context's slots, read in place from the pool.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from omniloom import kernels
from omniloom.models.backbones.kv_cache import causal_mask


class KVPool:
    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        self.num_blocks, self.block_size = num_blocks, block_size
        shape = (num_layers, num_blocks * block_size, num_kv_heads, head_dim)
        self.keys = torch.empty(shape, dtype=dtype, device=device)  # pages touched on first use
        self.values = torch.empty(shape, dtype=dtype, device=device)

    @staticmethod
    def bytes_per_block(
        num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * itemsize

    def slots(self, block_table: list[int], length: int) -> torch.Tensor:
        """Slot index of each of the first ``length`` tokens of a sequence."""
        bs = self.block_size
        blocks = torch.tensor(block_table, dtype=torch.long)
        return (blocks[:, None] * bs + torch.arange(bs)).flatten()[:length]

    def copy_block(self, src: int, dst: int) -> None:
        bs = self.block_size
        self.keys[:, dst * bs : (dst + 1) * bs] = self.keys[:, src * bs : (src + 1) * bs]
        self.values[:, dst * bs : (dst + 1) * bs] = self.values[:, src * bs : (src + 1) * bs]


@dataclass
class SequenceChunk:
    """One sequence's part of a step: ``num_new`` tokens appended to a context of ``length``."""

    context_slots: torch.Tensor  # (length,) slots of the whole context, new tokens included
    num_new: int
    positions: torch.Tensor | None = None  # rotary positions of the new tokens: (n,) or (axes, n)

    def new_positions(self) -> torch.Tensor:
        """The given positions, else the new tokens' indices in the context."""
        if self.positions is not None:
            return self.positions
        return torch.arange(len(self.context_slots) - self.num_new, len(self.context_slots))


class PagedBatch:
    """A step's packed tokens (in chunk order) as a ``KVCache`` over a ``KVPool``."""

    def __init__(self, pool: KVPool, chunks: list[SequenceChunk]):
        self.pool = pool
        self.chunks = chunks
        self._positions = torch.cat([c.new_positions() for c in chunks], dim=-1)
        self._write_slots = torch.cat([c.context_slots[-c.num_new :] for c in chunks])
        starts = torch.tensor([0, *[c.num_new for c in chunks]]).cumsum(0).tolist()
        self.spans = list(itertools.pairwise(starts))
        self._decode_rows = [i for i, c in enumerate(chunks) if c.num_new == 1]
        self._prefill_rows = [i for i, c in enumerate(chunks) if c.num_new > 1]
        self._token_contexts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._windowed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_tokens(self) -> int:
        return self.spans[-1][1]

    def last_token_rows(self) -> torch.Tensor:
        """Packed index of each chunk's last token (where its next-token logits come from)."""
        return torch.tensor([end - 1 for _, end in self.spans])

    def positions(self, num_tokens: int) -> torch.Tensor:
        return self._positions

    def advance(self, num_tokens: int) -> None:
        """The engine tracks each sequence's length; nothing to do here."""

    def token_contexts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every packed token's context as (tokens, longest) slots and (tokens,) lengths.

        Prefill tokens see their sequence up to themselves, so with the kernels each token's
        attention is computed on its own, the same way however the prompt was chunked or batched.
        Built once per step, on first use.
        """
        if self._token_contexts is None:
            longest = max(len(c.context_slots) for c in self.chunks)
            slots = torch.zeros(self.num_tokens, longest, dtype=torch.long)
            lengths = torch.empty(self.num_tokens, dtype=torch.long)
            for chunk, (start, end) in zip(self.chunks, self.spans, strict=True):
                length = len(chunk.context_slots)
                slots[start:end, :length] = chunk.context_slots
                lengths[start:end] = torch.arange(length - chunk.num_new + 1, length + 1)
            self._token_contexts = slots, lengths
        return self._token_contexts

    def stack_inputs(self) -> tuple[torch.Tensor, ...]:
        """What the fused layer stack needs: the pools, new slots, contexts and their lengths."""
        return (self.pool.keys, self.pool.values, self._write_slots, *self.token_contexts())

    @cached_property
    def _decode_padding(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PyTorch path only: decode rows' packed index, padded context slots and mask."""
        index = torch.tensor([self.spans[i][0] for i in self._decode_rows])
        contexts = [self.chunks[i].context_slots for i in self._decode_rows]
        longest = max((len(c) for c in contexts), default=0)
        slots = torch.zeros(len(contexts), longest, dtype=torch.long)
        mask = torch.zeros(len(contexts), longest, dtype=torch.bool)
        for row, context in enumerate(contexts):
            slots[row, : len(context)] = context
            mask[row, : len(context)] = True
        return index, slots, mask[:, None, None, :]

    def windowed_contexts(self, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``token_contexts`` cut to each token's last ``window`` slots (itself included), as
        a sliding-window layer sees them."""
        if window not in self._windowed:
            slots, lengths = self.token_contexts()
            start = (lengths - window).clamp(min=0)
            width = min(window, slots.shape[1])
            index = (start[:, None] + torch.arange(width)[None, :]).clamp(max=slots.shape[1] - 1)
            self._windowed[window] = slots.gather(1, index), lengths - start
        return self._windowed[window]

    def attend(self, layer: int, q, k, v, window: int | None = None) -> torch.Tensor:
        """q (1, heads, N, d), k/v (1, kv_heads, N, d) for the packed tokens → (1, heads, N, d);
        with ``window``, each token sees only its last ``window`` positions."""
        keys, values = self.pool.keys[layer], self.pool.values[layer]
        keys.index_copy_(0, self._write_slots, k[0].transpose(0, 1))
        values.index_copy_(0, self._write_slots, v[0].transpose(0, 1))
        if kernels.usable(q) and keys.dtype == q.dtype:  # every token on its own, pool in place
            slots, lengths = self.windowed_contexts(window) if window else self.token_contexts()
            scale = q.shape[-1] ** -0.5
            out = kernels.paged_attention(q[0].transpose(0, 1), keys, values, slots, lengths, scale)
            return out.transpose(0, 1).unsqueeze(0)
        out = torch.empty_like(q)
        if self._decode_rows:
            out[0, :, self._decode_padding[0]] = self._attend_decodes(q, keys, values, window)
        for row in self._prefill_rows:
            start, end = self.spans[row]
            context = self.chunks[row].context_slots
            k_ctx = keys[context].transpose(0, 1).unsqueeze(0)
            v_ctx = values[context].transpose(0, 1).unsqueeze(0)
            mask = causal_mask(end - start, len(context), q.device, window)
            out[:, :, start:end] = F.scaled_dot_product_attention(
                q[:, :, start:end], k_ctx, v_ctx, attn_mask=mask, enable_gqa=True
            )
        return out

    def _attend_decodes(self, q, keys, values, window: int | None) -> torch.Tensor:
        index, slots, mask = self._decode_padding
        if window:  # each row's own length is its mask's count; keep the last ``window``
            lengths = mask.sum(-1, keepdim=True)
            mask = mask & (torch.arange(mask.shape[-1]) >= lengths - window)
        q_dec = q[0, :, index].transpose(0, 1).unsqueeze(2)  # (D, heads, 1, d)
        k_dec = keys[slots].permute(0, 2, 1, 3)  # (D, kv_heads, L, d)
        v_dec = values[slots].permute(0, 2, 1, 3)
        out = F.scaled_dot_product_attention(q_dec, k_dec, v_dec, attn_mask=mask, enable_gqa=True)
        return out.squeeze(2).transpose(0, 1)  # (heads, D, d)
