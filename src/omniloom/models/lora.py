"""Low-rank adapters for the backbone's linear layers, and merging them back for serving.

Training wraps chosen ``nn.Linear`` modules; shipping stores only the A/B matrices; loading
merges ``W += scale · B @ A`` into the plain weights, so serving pays nothing for them.
"""

from __future__ import annotations

import torch
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / rank**0.5 * 0.1)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale


def attach_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Wrap every linear whose attribute name is in ``targets``; return their qualified names."""
    names = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha))
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.lora_a": A, "<module>.lora_b": B, "<module>.scale": s}`` for every adapter."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.lora_a"] = module.lora_a.detach().float().contiguous()
            state[f"{name}.lora_b"] = module.lora_b.detach().float().contiguous()
            state[f"{name}.scale"] = torch.tensor(module.scale)
    return state


def merge_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Add each adapter's ``scale · B @ A`` into the matching plain linear; return how many."""
    modules = dict(model.named_modules())
    merged = 0
    for key in state:
        if not key.endswith(".lora_a"):
            continue
        name = key[: -len(".lora_a")]
        linear = modules[name]
        delta = state[f"{name}.lora_b"] @ state[key] * float(state[f"{name}.scale"])
        with torch.no_grad():
            linear.weight += delta.to(linear.weight.dtype)
        merged += 1
    return merged
