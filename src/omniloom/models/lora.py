"""Low-rank adapters on the backbone's linear layers, switchable per request.

Training wraps chosen ``nn.Linear`` modules; shipping stores only the A/B matrices. Serving
keeps them unmerged and switches them on only for prompts that carry media, so the vision
adapter can never change how the model answers plain text (text-only output stays identical
to the base checkpoint's).
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom import kernels
from omniloom.models.quantize import linear_dtype


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.active: bool | torch.Tensor = True  # or a (…, tokens, 1) 0/1 mask per token
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / rank**0.5 * 0.1)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.active is False:
            return out
        if kernels.usable(x, self.lora_a):  # row by row, like the base layer: batch invariant
            low_rank = kernels.skinny_linear(x, self.lora_a)
            delta = kernels.skinny_linear(low_rank, self.lora_b) * self.scale
        else:
            delta = (x @ self.lora_a.T.to(x.dtype) @ self.lora_b.T.to(x.dtype)) * self.scale
        if isinstance(self.active, torch.Tensor):
            delta = delta * self.active.to(x.dtype)
        return out + delta


def attach_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Wrap every linear whose attribute name is in ``targets``; return their qualified names."""
    names = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha))
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    layers_replaced(model)
    return names


def layers_replaced(model: nn.Module) -> None:
    """Tell any decoder inside ``model`` that its layers changed (its fused stack is stale)."""
    for module in model.modules():
        forget = getattr(module, "forget_layer_stack", None)
        if forget is not None:
            forget()


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.lora_a": A, "<module>.lora_b": B, "<module>.scale": s}`` for every adapter."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.lora_a"] = module.lora_a.detach().float().contiguous()
            state[f"{name}.lora_b"] = module.lora_b.detach().float().contiguous()
            state[f"{name}.scale"] = torch.tensor(module.scale)
    return state


def load_lora(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Wrap each linear named in ``state`` with an adapter holding its A/B; return how many."""
    modules = dict(model.named_modules())
    loaded = 0
    for key in state:
        if not key.endswith(".lora_a"):
            continue
        name = key[: -len(".lora_a")]
        parent_name, _, child_name = name.rpartition(".")
        linear = modules[name]
        a, b = state[key], state[f"{name}.lora_b"]
        adapter = LoRALinear(linear, a.shape[0], float(state[f"{name}.scale"]) * a.shape[0])
        adapter.lora_a.data = a.to(linear_dtype(linear))
        adapter.lora_b.data = b.to(linear_dtype(linear))
        adapter.requires_grad_(False)
        setattr(modules[parent_name] if parent_name else model, child_name, adapter)
        loaded += 1
    layers_replaced(model)
    return loaded


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def set_lora_active(model: nn.Module | list[LoRALinear], active: bool | torch.Tensor) -> None:
    """On, off, or per token: a 0/1 mask shaped like the input's token dims plus one.
    A hot loop passes ``lora_layers(model)`` once collected instead of the model."""
    for layer in model if isinstance(model, list) else lora_layers(model):
        layer.active = active
