"""Weight formats for inference: fp32, bf16, fp16 or int8 weights, always fp32 activations.

Decode on a CPU is bound by streaming the weights once per step, so fewer bytes per weight is
speed. ``Linear`` (the backbone's layer type) is an ``nn.Linear`` that, at inference, runs our
skinny-matrix kernel instead of PyTorch's GEMM; ``PackedLinear`` keeps its weight as bf16, fp16
or int8 (one fp32 scale per output row, symmetric) and is inference only. Both compute every
output row from its own input row alone, in the same order whatever the batch, so greedy
output does not depend on what else is in the batch. Without the compiled kernels they fall
back to PyTorch (packed weights are then widened on every call: correct, slow).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omniloom import kernels
from omniloom.config import WEIGHT_FORMATS

__all__ = [
    "WEIGHT_FORMATS",
    "Linear",
    "PackedLinear",
    "linear_dtype",
    "pack_weights",
    "settle_dtypes",
    "weight_format_of",
]
_STORAGE = {"bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.int8}


class Linear(nn.Linear):
    """``nn.Linear``; inference on fp32 CPU tensors runs the skinny kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.usable(x, self.weight):
            return kernels.skinny_linear(x, self.weight, None, self.bias)
        return F.linear(x, self.weight, self.bias)


class PackedLinear(nn.Module):
    """An inference-only linear layer whose weight is stored as bf16, fp16 or int8."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, weight_format: str):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight_format = weight_format
        weight = weight.detach()  # kept as it is when it is already in the format's dtype
        scales = None
        if weight.is_meta:  # a shell for loaded tensors: no arithmetic (it imports torch._dynamo)
            int8 = weight_format == "int8"
            scales = torch.empty(self.out_features, device="meta") if int8 else None
            weight = torch.empty(weight.shape, dtype=_STORAGE[weight_format], device="meta")
        elif weight_format == "int8":
            weight = weight.float()
            scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            weight = torch.round(weight / scales[:, None])
        self.register_buffer("weight", weight.to(_STORAGE[weight_format]))
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    @property
    def dtype(self) -> torch.dtype:
        """The activation dtype it takes and returns."""
        return torch.float32

    def nbytes(self) -> int:
        return self.weight.nbytes + (self.scales.nbytes if self.scales is not None else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if kernels.usable(x) and self.weight.device.type == "cpu":
            return kernels.skinny_linear(x, self.weight, self.scales, self.bias)
        weight = self.weight.float()
        if self.scales is not None:
            weight = weight * self.scales[:, None]
        return F.linear(x, weight, self.bias)


def pack_weights(backbone: nn.Module, weight_format: str) -> int:
    """Store every linear layer's weight (the tied output head included) in ``weight_format``.

    The embedding table follows for the 16-bit formats, shared with the head as before; for int8
    the head gets its own int8 copy and the table is kept as bf16. Returns the layers packed.
    """
    if weight_format == "float32":
        return 0
    table = backbone.model.embed_tokens
    tied = backbone.lm_head.weight is table.weight
    count = 0
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, PackedLinear(child.weight, child.bias, weight_format))
                count += 1
    table_dtype = torch.bfloat16 if weight_format == "int8" else _STORAGE[weight_format]
    table.weight = nn.Parameter(table.weight.detach().to(table_dtype), requires_grad=False)
    if tied and weight_format != "int8":
        backbone.lm_head.weight = table.weight.detach()  # one copy, as in the checkpoint
    backbone.forget_layer_stack()
    return count


def settle_dtypes(backbone: nn.Module, weight_format: str) -> None:
    """Put a freshly loaded decoder into ``weight_format``: linear layers are packed straight
    from the checkpoint's own dtype (a bf16 checkpoint served in bf16 is never widened), and
    every other parameter (norms) computes in fp32."""
    if weight_format == "float32":
        backbone.float()
        return
    pack_weights(backbone, weight_format)
    for module in backbone.modules():
        if isinstance(module, (PackedLinear, nn.Embedding)):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_floating_point() and param.dtype != torch.float32:
                setattr(module, name, nn.Parameter(param.float(), requires_grad=False))


def weight_format_of(backbone: nn.Module) -> str:
    """The format a decoder's linear weights are stored in."""
    packed = next((m for m in backbone.modules() if isinstance(m, PackedLinear)), None)
    return packed.weight_format if packed else "float32"


def linear_dtype(linear: nn.Module) -> torch.dtype:
    """The dtype a linear layer computes in (fp32 for packed weights)."""
    return linear.dtype if isinstance(linear, PackedLinear) else linear.weight.dtype
