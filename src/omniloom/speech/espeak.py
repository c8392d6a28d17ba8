"""espeak-ng as a second synthesiser: speech from a voice no model here was trained on.

Piper's phonemizer already ships libespeak-ng (the ``espeakng-loader`` package); its own
formant synthesiser makes the held-out speech that evaluations and tests transcribe. Calls are
serialised: the library keeps global state, and that state (with the noise source it draws
from) makes each rendering of the same text differ slightly from the last.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: samples come back through the callback
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()
_library: tuple | None = None  # (library, sample rate, callback, collected chunks)


def _load():
    global _library
    if _library is None:
        import espeakng_loader

        library = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        rate = library.espeak_Initialize(_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise RuntimeError("espeak-ng did not initialise")
        chunks: list[np.ndarray] = []

        def collect(samples, count, _events):
            if count > 0:
                chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
            return 0

        callback = _CALLBACK(collect)
        library.espeak_SetSynthCallback(callback)
        _library = (library, rate, callback, chunks)
    return _library


def speak(text: str, voice: str = "en-us", words_per_minute: int = 160) -> tuple[np.ndarray, int]:
    """(float32 samples, sample rate) of ``text`` spoken by espeak-ng."""
    with _lock:
        library, rate, _, chunks = _load()
        chunks.clear()
        library.espeak_SetVoiceByName(voice.encode())
        library.espeak_SetParameter(1, words_per_minute, 0)  # espeakRATE, absolute
        encoded = text.encode()
        library.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, 0, None, None)
        library.espeak_Synchronize()
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return samples.astype(np.float32) / 32768.0, rate
