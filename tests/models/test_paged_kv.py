"""The paged KV pool: packed steps that mix decodes and prefill chunks equal a full forward,
with our kernels and with PyTorch's operators (the fallback where no compiler is found)."""

from __future__ import annotations

import random

import pytest
import torch
from torch.testing import assert_close

from omniloom import kernels
from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.backbones.paged_kv import KVPool, PagedBatch, SequenceChunk

CFG = DecoderConfig(
    vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2
)


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(CFG).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("with_kernels", [True, False])
def test_packed_steps_match_full_forward_with_scattered_blocks(monkeypatch, with_kernels):
    if not with_kernels:
        monkeypatch.setattr(kernels, "_built", [None])
    model, block = _model(), 4
    pool = KVPool(CFG.num_layers, 64, block, CFG.num_kv_heads, CFG.dim_per_head, torch.float32)
    free = list(range(64))
    random.Random(0).shuffle(free)  # blocks are not contiguous, as after churn
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 101, (n,), generator=gen) for n in (23, 9, 17)]
    tables = [[free.pop() for _ in range(-(-len(s) // block))] for s in seqs]
    done = [0, 0, 0]
    got: list[list[torch.Tensor]] = [[], [], []]
    # step sizes per sequence: chunks and single-token decodes interleaved across sequences
    plans = [[(0, 10), (1, 9)], [(0, 7), (1, 0), (2, 5)], [(0, 1), (2, 12)], [(0, 5)]]
    with torch.inference_mode():
        for plan in plans:
            plan = [(i, n) for i, n in plan if n]
            chunks = [SequenceChunk(pool.slots(tables[i], done[i] + n), n) for i, n in plan]
            embeds = torch.cat([model.embed(seqs[i][done[i] : done[i] + n]) for i, n in plan])
            batch = PagedBatch(pool, chunks)
            hidden = model.hidden_states(embeds.unsqueeze(0), batch)[0]
            logits = model.lm_head(hidden)
            for (i, n), (start, end) in zip(plan, batch.spans, strict=True):
                got[i].append(logits[start:end])
                done[i] += n
        for i, ids in enumerate(seqs):
            full = model(model.embed(ids.unsqueeze(0)))[0]
            assert_close(torch.cat(got[i]), full, rtol=1e-4, atol=1e-4)
