"""The embedded speech models on real speech: Whisper tiny.en on espeak-ng's voice (one no
model here was trained on) and on Piper's, the Piper voice itself, long audio across chunk
boundaries, and no words invented in silence, noise or tones."""

from __future__ import annotations

import numpy as np
import pytest

from omniloom.config import Limits
from omniloom.eval.speech import HELD_OUT_SENTENCES
from omniloom.eval.wer import word_error_rate
from omniloom.media.audio import SAMPLE_RATE, stream_chunks
from omniloom.media.audio_out import OUTPUT_RATE, encode, resample
from omniloom.speech import espeak
from omniloom.speech.asr import Transcriber, TranscriptionOptions
from omniloom.speech.tts import Synthesizer, sentences
from tests.speech.audio_files import tone

SENTENCES = HELD_OUT_SENTENCES[:8]


@pytest.fixture(scope="module")
def asr():
    return Transcriber(threads=2)


@pytest.fixture(scope="module")
def tts():
    return Synthesizer(threads=2)


def _transcribe(asr, samples: np.ndarray, rate: int, chunk_seconds: float = 30.0) -> list:
    data = encode(resample(samples, rate), "wav")
    chunks = stream_chunks(data, Limits(), chunk_seconds=chunk_seconds)
    return list(asr.segments(chunks, TranscriptionOptions()))


def _text(segments) -> str:
    return "".join(s.text for s in segments)


def test_espeak_speech_transcribes_within_15_percent_wer(asr):
    heard = [_text(_transcribe(asr, *espeak.speak(s))) for s in SENTENCES]
    assert word_error_rate(list(SENTENCES), heard) <= 0.15


def test_our_voice_transcribes_back_within_10_percent_wer(asr, tts):
    spoken = [np.concatenate(list(tts.speak(s))) for s in SENTENCES]
    heard = [_text(_transcribe(asr, audio, OUTPUT_RATE)) for audio in spoken]
    assert word_error_rate(list(SENTENCES), heard) <= 0.10


def test_long_audio_is_transcribed_across_chunk_boundaries(asr, tts):
    pause = np.zeros(OUTPUT_RATE // 2, np.float32)
    audio = np.concatenate([part for s in SENTENCES for part in (*tts.speak(s), pause)])
    segments = _transcribe(asr, audio, OUTPUT_RATE, chunk_seconds=8.0)  # about 4 chunks
    assert word_error_rate([" ".join(SENTENCES)], [_text(segments)]) <= 0.10
    starts = [s.start for s in segments]
    assert starts == sorted(starts) and segments[-1].end <= len(audio) / OUTPUT_RATE + 0.5
    assert segments[-1].end > 0.8 * len(audio) / OUTPUT_RATE  # timestamps on the file's timeline


@pytest.mark.parametrize("kind", ["silence", "noise", "tone"])
def test_no_words_are_invented_without_speech(asr, kind):
    rng = np.random.default_rng(0)
    audio = {
        "silence": np.zeros(3 * SAMPLE_RATE, np.float32),
        "noise": (0.01 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32),
        "tone": tone(3.0),
    }[kind]
    assert _transcribe(asr, audio, SAMPLE_RATE) == []


def test_text_is_spoken_sentence_by_sentence(tts):
    text = "First sentence here. Second one!\nThird: " + "word " * 120
    assert sentences(text)[:3] == ["First sentence here.", "Second one!", "Third:"]
    assert all(len(p) <= 400 for p in sentences(text))
    clips = list(tts.speak("Hello there. How are you today?"))
    assert len(clips) == 2 and all(
        c.dtype == np.float32 and len(c) > OUTPUT_RATE // 4 for c in clips
    )
    fast = np.concatenate(list(tts.speak("How are you today?", speed=2.0)))
    slow = np.concatenate(list(tts.speak("How are you today?", speed=0.5)))
    assert len(slow) > 2 * len(fast)  # four times the phoneme durations, less the fixed pause
