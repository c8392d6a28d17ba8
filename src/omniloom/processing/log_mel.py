"""Whisper's log-mel spectrogram, as audio encoders of the Whisper lineage (Qwen2-Audio) read it.

Computed as ``transformers``' ``WhisperFeatureExtractor`` does it with PyTorch: the 16 kHz
samples are zero-padded to a 30-second window, framed by a 400-point Hann STFT every 160
samples (centred, reflect-padded; the last frame dropped), mapped onto Slaney-scale mel filters
up to 8 kHz, and compressed as ``log10``, floored at 8 below the window's peak, then
``(x + 4) / 4``. A window holds 3000 frames; a clip of ``n`` samples fills ``ceil(n / 160)``
of them, which is all the token count needs to know.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_FRAMES = WINDOW_SAMPLES // HOP


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log_region] - 15.0))
    return hz


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """(n_mels, 201) triangular Slaney-normalised filters over 0–8 kHz (computed in float64)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    mel_edges = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([8000.0]))[0], n_mels + 2
    )
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    slopes = hz_edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels])
    return torch.from_numpy(filters.T.astype(np.float32))


def frames(num_samples: int) -> int:
    """Mel frames a clip of ``num_samples`` fills in its window (at most 3000)."""
    return min(-(-num_samples // HOP), WINDOW_FRAMES)


def positions_after_convs(mel_frames: int) -> int:
    """Whisper encoder positions ``mel_frames`` frames cover (its stride-2 convolution)."""
    return (mel_frames - 1) // 2 + 1


def log_mel(samples: np.ndarray, n_mels: int) -> torch.Tensor:
    """(n_mels, 3000) features of one window of at most 30 s of 16 kHz samples."""
    if len(samples) > WINDOW_SAMPLES:
        raise ValueError(f"one window holds at most {WINDOW_SAMPLES} samples, got {len(samples)}")
    waveform = torch.zeros(WINDOW_SAMPLES)
    waveform[: len(samples)] = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    stft = torch.stft(waveform, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()
    spec = torch.clamp(mel_filters(n_mels) @ power, min=1e-10).log10()
    spec = torch.maximum(spec, spec.max() - 8.0)
    return (spec + 4.0) / 4.0
