"""The adapter file: what training adds to the default's frozen parts, and how it is read back.

One safetensors file holds the projector (``projector.*``), the media-token embeddings
(``media_embed.weight``), the LoRA adapters on the backbone (``lora.*``) and the familiarity
bank; its metadata holds the recipe and validation losses. The trainer writes it with
``write_adapter``; the server and the trainer's resume read it with ``read_adapter`` and
``apply_adapter_state``, so both sides agree on one format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from omniloom.models.default_layout import ADAPTER
from omniloom.models.familiarity import BANK_KEY
from omniloom.models.lora import LoRALinear, load_lora, lora_state
from omniloom.models.vlm import VisionLanguageModel


@dataclass(frozen=True)
class Adapter:
    metadata: dict[str, str]  # its recipe and validation losses
    familiarity_bank: torch.Tensor | None


def adapter_state(vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
    """The trainable weights, in fp32, under the file's names."""
    state = {
        f"projector.{k}": v.detach().float().contiguous()
        for k, v in vlm.projector.state_dict().items()
    }
    state["media_embed.weight"] = vlm.media_embed.weight.detach().float().contiguous()
    state.update({f"lora.{k}": v for k, v in lora_state(vlm.backbone).items()})
    return state


def apply_adapter_state(vlm: VisionLanguageModel, state: dict[str, torch.Tensor]) -> None:
    """Load projector, media embeddings and LoRA weights; LoRA layers are attached where the
    backbone has none yet (serving) and refilled where it has (resuming training)."""
    vlm.projector.load_state_dict(
        {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
    )
    vlm.media_embed.weight.data.copy_(state["media_embed.weight"])
    lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
    if not any(isinstance(m, LoRALinear) for m in vlm.backbone.modules()):
        load_lora(vlm.backbone, lora)
        return
    params = dict(vlm.backbone.named_parameters())
    for key, value in lora.items():
        if not key.endswith(".scale"):
            params[key].data.copy_(value)


def write_adapter(
    path: Path, vlm: VisionLanguageModel, metadata: dict[str, str], bank: torch.Tensor
) -> None:
    save_file(adapter_state(vlm) | {BANK_KEY: bank}, str(path), metadata=metadata)


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        return state, f.metadata() or {}


def load_adapter(vlm: VisionLanguageModel, path: Path = ADAPTER) -> Adapter | None:
    """Load the adapter at ``path`` into ``vlm`` if there is one; its metadata and bank.

    LoRA adapters stay unmerged: the engine switches them on only for prompts about media.
    """
    if not path.exists():
        return None
    state, metadata = read_adapter(path)
    apply_adapter_state(vlm, state)
    return Adapter(metadata, state.get(BANK_KEY))
