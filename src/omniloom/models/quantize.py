"""Weight-only int8 for the backbone: per-output-channel symmetric scales, bf16 activations.

Every linear layer of the decoder (and the output head, as an untied copy; the embedding table
stays bf16) keeps its weight as int8 plus one bf16 scale per output row, and multiplies with
PyTorch's ``_weight_int8pack_mm`` kernel: half the bytes of bf16 to stream per decode step,
which is what bounds decode speed on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("qweight", torch.round(weight / scales[:, None]).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.qweight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_int8(backbone: nn.Module) -> int:
    """Replace the decoder's linear layers (and ``lm_head``) with ``Int8Linear``; return how many."""
    count = 0
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
                count += 1
    return count


def linear_dtype(linear: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in (its weight's, or bf16 for int8 weights)."""
    return linear.dtype if isinstance(linear, Int8Linear) else linear.weight.dtype
